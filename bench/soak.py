"""Resident memory of `engagement worker` over a long stream (10,000,000 events by
default): once the dedup horizon is full and windows close as fast as they open, RSS
should stay flat. Counts are checked exact at the end. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from compare import committed_to_end, stop
from harness import (
    BASE_MS,
    CHANNELS,
    KINDS,
    BenchError,
    Msg,
    Procs,
    event_msg,
    producer,
    run_and_report,
    worker_environment,
)
from latency import ms_of
from prometheus_client.parser import text_string_to_metric_families
from throughput import watch_health

from pipeline.cli.topics import ensure_topics
from pipeline.config.settings import Settings
from pipeline.model.topics import ALL as ALL_TOPICS
from pipeline.model.topics import DEADLETTER, WINDOWS
from pipeline.responses.settings import ResponseSettings

CHUNK = 20_000  # events generated and sent at a time
DUPLICATE_SHARE = 0.005  # resent events (dedup must drop them: totals unchanged)


def stream(
    n: int, accounts: int, prefix: str, per_s: int, totals: Counter[tuple[str, str]], seed: int
) -> Iterator[list[Msg]]:
    """N events in event-time order, `per_s` per second of event time, in chunks, with
    a few events of the same chunk sent twice; `totals` counts the distinct ones."""
    rng = random.Random(seed)
    names = [f"acct-{i:03d}" for i in range(accounts)]
    kinds, weights = list(KINDS), [share for _, share in KINDS.values()]
    for start in range(0, n, CHUNK):
        chunk: list[Msg] = []
        for i in range(start, min(n, start + CHUNK)):
            kind, account, channel = (
                rng.choices(kinds, weights)[0],
                rng.choice(names),
                rng.choice(CHANNELS),
            )
            ts = BASE_MS + i * 1000 // per_s
            chunk.append(event_msg(rng, prefix, f"soak-{i:010d}", kind, account, channel, ts))
            totals[(account, kind)] += 1
        chunk += rng.sample(chunk, int(len(chunk) * DUPLICATE_SHARE))
        yield chunk


def closing(accounts: int, prefix: str, ts: int) -> list[Msg]:
    """One event per account and topic past every window's close: each partition's
    watermark moves on and the last windows become final."""
    return [
        (
            prefix + topic,
            f"acct-{a:03d}".encode(),
            orjson.dumps(
                {
                    "event_id": f"soak-close-{a}-{kind}",
                    "kind": kind,
                    "channel": CHANNELS[0],
                    "account_id": f"acct-{a:03d}",
                    "ts": ts,
                    "post_id": f"acct-{a:03d}-close",
                }
            ),
        )
        for a in range(accounts)
        for kind, (topic, _) in KINDS.items()
    ]


def rss_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def gauges(port: int) -> dict[str, float]:
    """The worker's state gauges (dedup ids, open windows, open inbound) from /metrics."""
    wanted = {"engagement_dedup_ids", "engagement_open_windows", "engagement_open_inbound"}
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2) as r:
            text = r.read().decode()
    except OSError:
        return {}
    out: dict[str, float] = {}
    for fam in text_string_to_metric_families(text):
        if fam.name in wanted:
            out[fam.name] = sum(s.value for s in fam.samples)
    return out


class Windows:
    """Counts of final 1-minute windows on the windows topic (a redelivered window
    replaces its copy) and dead letters. Windows from `until_ms` on hold only the
    closing events (idle advance may close them too) and are left out."""

    def __init__(self, bootstrap: str, prefix: str, partitions: int, until_ms: int) -> None:
        self.topics = [prefix + WINDOWS, prefix + DEADLETTER]
        self.partitions, self.until_ms = partitions, until_ms
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        self.seen: dict[tuple[str, str, str], dict[str, int]] = {}
        self.got: Counter[tuple[str, str]] = Counter()
        self.dead = 0

    async def run(self) -> None:
        await self.consumer.start()
        try:
            tps = [TopicPartition(t, p) for t in self.topics for p in range(self.partitions)]
            self.consumer.assign(tps)
            while True:
                for tp, recs in (await self.consumer.getmany(timeout_ms=200)).items():
                    for r in recs:
                        w = orjson.loads(r.value)
                        if tp.topic == self.topics[1]:
                            self.dead += 1
                        elif w["size_seconds"] == 60 and ms_of(w["window_start"]) < self.until_ms:
                            key = (w["account_id"], w["channel"], w["window_start"])
                            old = self.seen.get(key, {})
                            self.got.update(
                                {(key[0], k): v - old.get(k, 0) for k, v in w["counts"].items()}
                            )
                            self.seen[key] = w["counts"]
        finally:
            await self.consumer.stop()


async def soak(args: argparse.Namespace, bootstrap: str, tmp: Path, procs: Procs) -> dict[str, Any]:
    prefix = f"soak{uuid.uuid4().hex[:6]}."
    await asyncio.to_thread(
        ensure_topics, bootstrap, [prefix + t for t in ALL_TOPICS], args.partitions
    )
    group = f"soak-{uuid.uuid4().hex[:8]}"
    env, port = worker_environment(bootstrap, group, prefix, args.partitions, tmp / "d")
    cap = args.max_tracked or ResponseSettings().max_tracked_per_partition
    if args.max_tracked:
        (tmp / "soak.toml").write_text(f"[responses]\nmax_tracked_per_partition = {cap}\n")
        env["ENGAGEMENT_CONFIG"] = str(tmp / "soak.toml")
    cmd = [str(Path(sys.executable).with_name("engagement")), "worker", "--loglevel", "warning"]
    with open(tmp / "worker.log", "wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    procs.append(proc)
    await watch_health(port, proc)
    last_ts = BASE_MS + args.events * 1000 // args.per_second
    windows = Windows(bootstrap, prefix, args.partitions, last_ts + 1)
    reader = asyncio.create_task(windows.run())
    totals: Counter[tuple[str, str]] = Counter()
    samples: list[dict[str, float]] = []
    ends: dict[tuple[str, int], int] = {}
    t0 = time.perf_counter()
    next_sample = 0.0

    def sample() -> None:
        samples.append(
            {
                "s": time.perf_counter() - t0,
                "counted": windows.got.total(),
                "rss": rss_bytes(proc.pid),
                **gauges(port),
            }
        )

    def check() -> None:
        if proc.poll() is not None:
            raise BenchError(f"worker exited with code {proc.returncode}")
        if reader.done():
            raise BenchError(f"windows reader stopped: {reader.exception()!r}")

    async def tick() -> None:
        nonlocal next_sample
        check()
        if time.perf_counter() - t0 >= next_sample:
            await asyncio.to_thread(sample)
            next_sample += args.sample_s

    p = producer(bootstrap)
    await p.start()
    try:
        sent = 0
        for chunk in stream(args.events, args.accounts, prefix, args.per_second, totals, 11):
            # Open loop would only grow the broker's backlog: keep at most --backlog
            # events ahead of what the worker has put in final windows.
            while sent - windows.got.total() > args.backlog:
                await tick()
                await asyncio.sleep(0.2)
            futures = [await p.send(t, v, key=k) for t, k, v in chunk]
            for md in await asyncio.gather(*futures):
                ends[(md.topic, md.partition)] = max(
                    ends.get((md.topic, md.partition), 0), md.offset + 1
                )
            sent += len(chunk)
            await tick()
        futures = [
            await p.send(t, v, key=k)
            for t, k, v in closing(args.accounts, prefix, last_ts + 3_600_000)
        ]
        for md in await asyncio.gather(*futures):
            ends[(md.topic, md.partition)] = max(
                ends.get((md.topic, md.partition), 0), md.offset + 1
            )
    finally:
        await p.stop()
    idle_since, last = time.perf_counter(), -1
    while windows.got.total() < totals.total():
        await tick()
        if windows.got.total() != last:
            idle_since, last = time.perf_counter(), windows.got.total()
        elif time.perf_counter() - idle_since > args.idle:
            break
        await asyncio.sleep(0.2)
    await asyncio.to_thread(sample)
    seconds = time.perf_counter() - t0
    committed = await committed_to_end(bootstrap, group, ends)
    reader.cancel()
    stop(proc)
    errors = [
        ln
        for ln in (tmp / "worker.log").read_text(errors="replace").splitlines()
        if "ERROR" in ln or "Traceback" in ln
    ]
    diff = {
        f"{a}/{k}": windows.got[(a, k)] - totals[(a, k)]
        for a, k in totals | windows.got
        if windows.got[(a, k)] != totals[(a, k)]
    }
    m = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}
    return {
        "machine": m,
        "events": args.events,
        "per_second": args.per_second,
        "horizon_s": Settings().dedup_horizon_s,
        "tracked_cap": cap * args.partitions,
        "partitions": args.partitions,
        "accounts": args.accounts,
        "seconds": seconds,
        "samples": samples,
        "dead_letters": windows.dead,
        "worker_log_errors": errors[:20],
        "committed_to_end": committed,
        "exact": not diff,
        "mismatches": dict(list(diff.items())[:20]),
    }


def slope_mb_per_million(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of RSS (MB) against events counted (millions)."""
    n = len(points)
    mx, my = sum(x for x, _ in points) / n, sum(y for _, y in points) / n
    var = sum((x - mx) ** 2 for x, _ in points)
    return sum((x - mx) * (y - my) for x, y in points) / var if var else 0.0


def summary(res: dict[str, Any]) -> tuple[str, bool]:
    m, samples, n = res["machine"], res["samples"], res["events"]
    lines = [
        f"machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}",
        f"{n:,} events ({DUPLICATE_SHARE:.1%} sent twice), {res['per_second']:,} per second "
        f"of event time, {res['partitions']} partitions, {res['accounts']} accounts, "
        f"{res['seconds']:.0f} s",
        f"{'events in windows':>18}{'RSS':>10}{'dedup ids':>12}{'open windows':>14}"
        f"{'open inbound':>14}",
    ]
    step, mark = max(n // 10, 1), 0
    for s in samples:
        if s["counted"] >= mark or s is samples[-1]:
            lines.append(
                f"{s['counted']:>18,}{s['rss'] / 2**20:>7.0f} MB"
                f"{s.get('engagement_dedup_ids', 0):>12,.0f}"
                f"{s.get('engagement_open_windows', 0):>14,.0f}"
                f"{s.get('engagement_open_inbound', 0):>14,.0f}"
            )
            mark = (s["counted"] // step + 1) * step
    # The horizon is full once the windows hold its span of event time (and more):
    # from then on ids are forgotten, and windows dropped, as fast as they are added.
    horizon = res["per_second"] * res["horizon_s"]
    after = [s for s in samples[:-1] if s["counted"] >= horizon]  # the last: after closing
    ok = res["exact"] and res["committed_to_end"]
    if len(after) >= 2:
        rss = [s["rss"] / 2**20 for s in after]
        ids = [s.get("engagement_dedup_ids", 0) for s in after]
        slope = slope_mb_per_million([(s["counted"] / 1e6, s["rss"] / 2**20) for s in after])
        lines.append(
            f"dedup horizon ({res['horizon_s']} s, {horizon:,} events) full from "
            f"{after[0]['counted']:,} to {after[-1]['counted']:,} events in windows: "
            f"RSS {min(rss):.0f}-{max(rss):.0f} MB, slope {slope:+.1f} MB per million "
            f"events; dedup ids {min(ids):,.0f}-{max(ids):,.0f}"
        )
    else:
        lines.append(
            f"the dedup horizon ({horizon:,} events) was not full for two samples: "
            "run more events to see RSS once it is"
        )
    # Every bound full: the dedup horizon, and response tracking at its cap (the soak
    # answers nothing, so every inbound message stays open until evicted).
    full = [s for s in after if s.get("engagement_open_inbound", 0) >= res["tracked_cap"]]
    if len(full) >= 2:
        rss = [s["rss"] / 2**20 for s in full]
        slope = slope_mb_per_million([(s["counted"] / 1e6, s["rss"] / 2**20) for s in full])
        lines.append(
            f"every bound full (response tracking at its cap of {res['tracked_cap']:,}) from "
            f"{full[0]['counted']:,} to {full[-1]['counted']:,} events in windows: "
            f"RSS {min(rss):.0f}-{max(rss):.0f} MB, slope {slope:+.1f} MB per million events"
        )
    else:
        lines.append(
            f"response tracking did not reach its cap ({res['tracked_cap']:,} inbound) for "
            "two samples: run more events, or a lower --max-tracked, to see RSS once it has"
        )
    lines.append(
        f"totals exact: {res['exact']}; committed offsets at the end of every input "
        f"partition: {res['committed_to_end']}; dead letters: {res['dead_letters']}"
    )
    if res["worker_log_errors"]:
        lines.append("worker log errors:\n  " + "\n  ".join(res["worker_log_errors"]))
    return "\n".join(lines), ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=10_000_000)
    ap.add_argument(
        "--per-second",
        type=int,
        default=3_334,
        help="events per second of event time (3,334: the 600 s dedup horizon holds 2M ids)",
    )
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--backlog", type=int, default=400_000, help="most events sent ahead")
    ap.add_argument("--sample-s", type=float, default=2.0, help="seconds between RSS samples")
    ap.add_argument("--idle", type=float, default=120.0, help="give up after this long quiet")
    ap.add_argument(
        "--max-tracked",
        type=int,
        help="the worker's responses.max_tracked_per_partition (default: its default)",
    )
    ap.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args()
    # A 1-minute window is counted once final, 75 s of event time after it began: the
    # producer must be allowed further ahead than that, or it waits for ever.
    if args.backlog < args.per_second * 90 + CHUNK:
        ap.error(
            f"--backlog must be at least {args.per_second * 90 + CHUNK:,} at this --per-second"
        )
    return run_and_report(args, "engagement-soak-", soak, summary)


if __name__ == "__main__":
    sys.exit(main())

"""Throughput of `engagement worker` on N pre-produced events against a raw aiokafka
consumer, with a check of the per-(account, kind) totals. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, TopicPartition
from harness import (
    BASE_MS,
    CHANNELS,
    KINDS,
    BenchError,
    Msg,
    Procs,
    broker_and_processes,
    event_msg,
    producer,
    worker_environment,
)
from kafka import KafkaAdminClient

from pipeline.cli import broker
from pipeline.cli.topics import ensure_topics
from pipeline.model.topics import ALL as ALL_TOPICS
from pipeline.model.topics import DEADLETTER, WINDOWS

SPAN_MS = 3_600_000  # the data covers one hour of event time


def make_events(
    n: int,
    accounts: int,
    prefix: str,
    close_after_ms: int,
    seed: int = 7,
    only: tuple[str, ...] = tuple(KINDS),
) -> tuple[list[Msg], list[Msg], Counter[tuple[str, str]]]:
    """N events in event-time order, closing events, per-(account, kind) totals;
    `only`: the kinds to draw from (in their usual proportions)."""
    rng = random.Random(seed)
    names = [f"acct-{i:03d}" for i in range(accounts)]
    kinds = rng.choices(list(only), weights=[KINDS[k][1] for k in only], k=n)
    data: list[Msg] = []
    totals: Counter[tuple[str, str]] = Counter()
    for i, kind in enumerate(kinds):
        account, channel = rng.choice(names), rng.choice(CHANNELS)
        ts = BASE_MS + i * SPAN_MS // n
        data.append(event_msg(rng, prefix, f"bench-{i:09d}", kind, account, channel, ts))
        totals[(account, kind)] += 1
    # The watermark is the minimum over input partitions: every partition that holds
    # data gets a closing event (keyed like the data, one per account and topic).
    closing = [
        (
            prefix + topic,
            a.encode(),
            orjson.dumps(
                {
                    "event_id": f"bench-close-{a}-{kind}",
                    "kind": kind,
                    "channel": CHANNELS[0],
                    "account_id": a,
                    "ts": BASE_MS + SPAN_MS + close_after_ms,
                    "post_id": f"{a}-close",
                }
            ),
        )
        for a in names
        for kind, (topic, _) in KINDS.items()
        if kind in only
    ]
    return data, closing, totals


async def produce(bootstrap: str, msgs: list[Msg]) -> dict[tuple[str, int], int]:
    """Produce in order; return the end offset of every partition written to."""
    p = producer(bootstrap)
    await p.start()
    try:
        sent = await asyncio.gather(*[await p.send(t, v, key=k) for t, k, v in msgs])
    finally:
        await p.stop()
    return {(md.topic, md.partition): md.offset + 1 for md in sent}


async def raw_baseline(bootstrap: str, topics: list[str], n: int) -> dict[str, float]:
    """Fresh consumer group: getmany + orjson.loads + dict count until N messages."""
    c = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"raw-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    await c.start()
    try:
        counts: dict[tuple[str, str], int] = {}
        seen, t_first = 0, 0.0
        while seen < n:
            for recs in (await c.getmany(timeout_ms=1000)).values():
                t_first = t_first or time.perf_counter()
                for r in recs:
                    e = orjson.loads(r.value)
                    k = (e["account_id"], e["kind"])
                    counts[k] = counts.get(k, 0) + 1
                seen += len(recs)
        t_end = time.perf_counter()
    finally:
        await c.stop()
    return {"events_per_s": seen / (t_end - t_first), "seconds": t_end - t_first}


def healthz(port: int) -> dict[str, Any] | None:
    try:  # a 503 raises HTTPError, an OSError
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as r:
            return dict(json.load(r))
    except (OSError, ValueError):
        return None


async def watch_health(port: int, proc: subprocess.Popen[bytes]) -> tuple[float, float]:
    """When /healthz first answered 200, and when it first listed partitions (the worker
    has its assignment: start-up is over)."""
    t_ok = 0.0
    while proc.poll() is None:
        if (h := await asyncio.to_thread(healthz, port)) is not None:
            t_ok = t_ok or time.perf_counter()
            if h.get("partitions"):
                return t_ok, time.perf_counter()
        await asyncio.sleep(0.05)
    raise BenchError(f"worker exited with code {proc.returncode} before it was healthy")


async def close_when_drained(
    bootstrap: str, group: str, ends: dict[tuple[str, int], int], closing: list[Msg]
) -> None:
    """Produce the closing events once the worker committed every data message."""
    admin = await asyncio.to_thread(KafkaAdminClient, bootstrap_servers=bootstrap)
    done: dict[tuple[str, int], int] = {}
    try:
        while not all(done.get(tp, -1) >= end for tp, end in ends.items()):
            await asyncio.sleep(0.2)
            offsets = await asyncio.to_thread(admin.list_group_offsets, {group: None})
            done = {(tp.topic, tp.partition): om.offset for tp, om in offsets[group].items()}
    finally:
        admin.close()
    await produce(bootstrap, closing)


async def run_worker(
    bootstrap: str,
    prefix: str,
    args: argparse.Namespace,
    tmp: Path,
    procs: Procs,
    closing: list[Msg],
    ends: dict[tuple[str, int], int],
) -> tuple[dict[str, Any], Counter[Any]]:
    """Start a fresh worker; consume the windows and dead-letter topics until every event
    is in a 60 s window or dead-lettered (or nothing new came for --idle seconds)."""
    n, topics = args.events, [prefix + WINDOWS, prefix + DEADLETTER]
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    tasks: list[asyncio.Task[Any]] = []
    await c.start()
    try:
        c.assign([TopicPartition(t, p) for t in topics for p in range(args.partitions)])
        group = f"bench-{uuid.uuid4().hex[:8]}"
        env, port = worker_environment(bootstrap, group, prefix, args.partitions, tmp / "d")
        if args.lateness is not None:  # the dedup horizon must cover lateness + largest window
            (tmp / "bench.toml").write_text(
                f"[windows]\nallowed_lateness_s = {args.lateness}\n"
                f"[dedup]\nhorizon_s = {args.lateness + 600}\n"
            )
            env["ENGAGEMENT_CONFIG"] = str(tmp / "bench.toml")
        cmd = [str(Path(sys.executable).with_name("engagement")), "worker", "--loglevel", "warning"]
        with open(tmp / "worker.log", "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        tasks.append(asyncio.create_task(watch_health(port, proc)))
        if args.close_after_drain:
            tasks.append(asyncio.create_task(close_when_drained(bootstrap, group, ends, closing)))
        windows: dict[tuple[str, str, str], dict[str, int]] = {}
        dead: Counter[str] = Counter()
        got: Counter[tuple[str, str]] = Counter()
        t_last = 0.0
        while got.total() + dead.total() < n:
            if proc.poll() is not None:
                raise BenchError(f"worker exited with code {proc.returncode}")
            if err := next((t.exception() for t in tasks if t.done() and t.exception()), None):
                raise BenchError(repr(err))
            if t_last and time.perf_counter() - t_last > args.idle:
                break  # the worker went quiet without accounting for every event
            for tp, recs in (await c.getmany(timeout_ms=200)).items():
                t_last = time.perf_counter()
                for r in recs:
                    w = orjson.loads(r.value)
                    if tp.topic == topics[1]:
                        dead[w["reason"]] += 1
                    elif w["size_seconds"] == 60:
                        key = (w["account_id"], w["channel"], w["window_start"])
                        old = windows.get(key, {})  # a redelivered window replaces its copy
                        got.update({(key[0], k): v - old.get(k, 0) for k, v in w["counts"].items()})
                        windows[key] = w["counts"]
        t_ok, t_ready = await tasks[0]
    finally:
        for t in tasks:
            t.cancel()
        await c.stop()
    return {
        "seconds_incl_startup": t_last - t0,
        "events_per_s_incl_startup": n / (t_last - t0),
        "events_per_s_excl_startup": n / (t_last - t_ok),
        "healthz_200_s": t_ok - t0,
        "events_per_s_after_assignment": n / (t_last - t_ready),
        "assigned_s": t_ready - t0,
        "counted_60s": got.total(),
        "deadlettered": dict(dead),
        "clock": {"start": t0, "ready": t_ready, "last": t_last},  # perf_counter
        "pid": proc.pid,
        "group": group,
    }, got


async def bench(
    args: argparse.Namespace, bootstrap: str, tmp: Path, procs: Procs
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    names = ALL_TOPICS
    await asyncio.to_thread(ensure_topics, bootstrap, [prefix + t for t in names], args.partitions)
    close_after_ms = ((args.lateness or 0) + 15 * 60) * 1000
    data, closing, totals = make_events(args.events, args.accounts, prefix, close_after_ms)
    t = time.perf_counter()
    ends = await produce(bootstrap, data)
    if not args.close_after_drain:
        await produce(bootstrap, closing)  # after the data is acknowledged: last everywhere
    print(f"produced {len(data):,} events in {time.perf_counter() - t:.1f} s (not timed)")
    r = await raw_baseline(bootstrap, [prefix + t for t, _ in KINDS.values()], args.events)
    print(f"raw baseline: {r['events_per_s']:,.0f} events/s; starting the worker", flush=True)
    log = tmp / "worker.log"
    try:
        w, got = await run_worker(bootstrap, prefix, args, tmp, procs, closing, ends)
    except BaseException:
        print(f"--- worker log ---\n{log.read_text(errors='replace')}", file=sys.stderr)
        raise
    errors = [
        ln
        for ln in log.read_text(errors="replace").splitlines()
        if "ERROR" in ln or "Traceback" in ln
    ]
    diff = {
        f"{a}/{k}": got[(a, k)] - totals[(a, k)]
        for a, k in totals | got
        if got[(a, k)] != totals[(a, k)]
    }
    m = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}
    return {
        "machine": m,
        "events": args.events,
        "partitions": args.partitions,
        "accounts": args.accounts,
        "lateness_s": args.lateness,
        "raw": r,
        "worker": w,
        "close_after_drain": args.close_after_drain,
        "worker_log_errors": errors[:20],
        "ratio_incl_startup": w["events_per_s_incl_startup"] / r["events_per_s"],
        "ratio_excl_startup": w["events_per_s_excl_startup"] / r["events_per_s"],
        "correct": not diff,
        "mismatches": diff,
    }


def table(res: dict[str, Any]) -> str:
    m, r, w, late = res["machine"], res["raw"]["events_per_s"], res["worker"], res["lateness_s"]

    def rate(v: float) -> str:
        return f"{v:>11,.0f} events/s   worker/raw {v / r:.4f}"

    rows = [
        ("machine", f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}"),
        (
            "N / partitions / accounts",
            f"{res['events']:,} / {res['partitions']} / "
            f"{res['accounts']}   lateness: {'default' if late is None else f'{late} s'}, "
            f"closing events {'after drain' if res['close_after_drain'] else 'up front'}",
        ),
        ("raw aiokafka getmany+orjson+count", f"{r:>11,.0f} events/s"),
        (
            "worker incl. start-up",
            rate(w["events_per_s_incl_startup"]) + f"   ({w['seconds_incl_startup']:.1f} s)",
        ),
        (
            f"worker excl. start-up (/healthz +{w['healthz_200_s']:.1f} s)",
            rate(w["events_per_s_excl_startup"]),
        ),
        (
            f"worker after assignment (+{w['assigned_s']:.1f} s)",
            rate(w["events_per_s_after_assignment"]),
        ),
        ("events in 60 s windows / dead-letter", f"{w['counted_60s']:,} / {w['deadlettered']}"),
        (
            "correctness (60 s windows)",
            "OK"
            if res["correct"]
            else f"MISMATCH in {len(res['mismatches'])} (account, kind) totals",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--timeout", type=float, default=900.0, help="total seconds (default 900)")
    ap.add_argument("--idle", type=float, default=60.0, help="give up after s without output")
    ap.add_argument("--lateness", type=int, help="worker's allowed lateness in s (temp config)")
    ap.add_argument(
        "--close-after-drain",
        action="store_true",
        help="closing events only once the worker committed all data",
    )
    args = ap.parse_args()
    try:
        with broker_and_processes(args, "engagement-bench-") as (bootstrap, tmp, procs):
            coro = bench(args, bootstrap, tmp, procs)
            res = asyncio.run(asyncio.wait_for(coro, args.timeout))
    except (TimeoutError, BenchError, broker.BrokerError) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(table(res))
    for line in res["worker_log_errors"]:
        print(f"worker log: {line}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    if not res["correct"]:
        worst = sorted(res["mismatches"].items(), key=lambda kv: kv[1])[:8]
        print("MISMATCH (windows - produced): " + ", ".join(f"{k} {v:+d}" for k, v in worst))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

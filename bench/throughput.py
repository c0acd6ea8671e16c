"""End-to-end throughput of `engagement worker` against a raw aiokafka consumer.

One run: start the embedded broker (unless --broker), pre-produce N events plus one
closing event per account, time a raw aiokafka consumer over them, then time a fresh
worker until the 60 s windows it publishes account for all N events, and check that
the per-(account, kind) totals match what was produced. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from agents.app import RAW_TOPICS, WINDOWS_TOPIC
from pipeline import broker
from pipeline.topics import ensure_topics
from pipeline.windows import rfc3339

KINDS = (
    ("like", "social.likes", 60),
    ("comment", "social.comments", 20),
    ("share", "social.shares", 10),
    ("mention", "social.mentions", 10),
)
CHANNELS = ("instagram", "x", "facebook", "tiktok")
BASE_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
SPAN_MS = 3_600_000  # event time covered by the data
CLOSE_AFTER_MS = 15 * 60_000
Msg = tuple[str, bytes, bytes]  # topic, key, value


class BenchError(RuntimeError):
    pass


def make_events(
    n: int, accounts: int, prefix: str, seed: int = 7
) -> tuple[list[Msg], list[Msg], Counter[tuple[str, str]], dict[tuple[str, str], str]]:
    """N events in event-time order, the closing events, per-(account, kind) totals and
    the last 60 s window start of every (account, channel)."""
    rng = random.Random(seed)
    names = [f"acct-{i:03d}" for i in range(accounts)]
    kinds = rng.choices(range(len(KINDS)), weights=[k[2] for k in KINDS], k=n)
    data: list[Msg] = []
    totals: Counter[tuple[str, str]] = Counter()
    last: dict[tuple[str, str], str] = {}
    for i in range(n):
        account, channel = rng.choice(names), rng.choice(CHANNELS)
        kind, topic, _ = KINDS[kinds[i]]
        ts = BASE_MS + i * SPAN_MS // n
        ev = {
            "event_id": f"bench-{i:09d}",
            "kind": kind,
            "channel": channel,
            "account_id": account,
            "ts": ts,
            "actor_id": f"user-{rng.randrange(100_000)}",
        }
        if kind != "mention":
            ev["post_id"] = f"{account}-post-{rng.randrange(40)}"
        data.append((prefix + topic, account.encode(), orjson.dumps(ev)))
        totals[(account, kind)] += 1
        last[(account, channel)] = rfc3339(ts - ts % 60_000)
    close_ts = BASE_MS + SPAN_MS + CLOSE_AFTER_MS
    closing = [
        (
            prefix + "social.likes",
            a.encode(),
            orjson.dumps(
                {
                    "event_id": f"bench-close-{a}",
                    "kind": "like",
                    "channel": CHANNELS[0],
                    "account_id": a,
                    "ts": close_ts,
                    "post_id": f"{a}-close",
                }
            ),
        )
        for a in names
    ]
    return data, closing, totals, last


async def produce(bootstrap: str, msgs: list[Msg]) -> None:
    p = AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        acks=1,
        max_batch_size=256 * 1024,
        max_request_size=4 * 1024 * 1024,
    )
    await p.start()
    try:
        pending: list[asyncio.Future[Any]] = []
        for topic, key, value in msgs:
            pending.append(await p.send(topic, value, key=key))
            if len(pending) >= 20_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await p.stop()


async def raw_baseline(bootstrap: str, topics: list[str], n: int) -> dict[str, float]:
    """Fresh consumer group: getmany + orjson.loads + dict count until N messages."""
    c = AIOKafkaConsumer(
        *topics,
        bootstrap_servers=bootstrap,
        group_id=f"bench-raw-{uuid.uuid4()}",
        auto_offset_reset="earliest",
        enable_auto_commit=False,
    )
    t0 = time.perf_counter()
    await c.start()
    try:
        counts: dict[tuple[str, str], int] = {}
        seen, t_first = 0, 0.0
        while seen < n:
            batch = await c.getmany(timeout_ms=1000)
            for recs in batch.values():
                t_first = t_first or time.perf_counter()
                for r in recs:
                    e = orjson.loads(r.value)
                    k = (e["account_id"], e["kind"])
                    counts[k] = counts.get(k, 0) + 1
                seen += len(recs)
        t_end = time.perf_counter()
    finally:
        await c.stop()
    return {
        "events_per_s": seen / (t_end - t_first),
        "incl_join_events_per_s": seen / (t_end - t0),
        "seconds": t_end - t_first,
        "join_seconds": t_first - t0,
    }


def healthz_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=0.5) as r:
            return int(r.status) == 200
    except OSError:
        return False


async def wait_healthy(port: int, proc: subprocess.Popen[bytes]) -> float:
    while proc.poll() is None:
        if await asyncio.to_thread(healthz_ok, port):
            return time.perf_counter()
        await asyncio.sleep(0.05)
    raise BenchError(f"worker exited with code {proc.returncode} before /healthz answered")


async def run_worker(
    bootstrap: str,
    prefix: str,
    partitions: int,
    n: int,
    last: dict[tuple[str, str], str],
    log: Path,
    datadir: str,
    procs: list[subprocess.Popen[bytes]],
) -> tuple[dict[str, float], Counter[Any]]:
    """Start a fresh worker; consume the windows topic until the 60 s windows sum to N
    (or every (account, channel) got its last window, then 3 s more)."""
    topic = prefix + WINDOWS_TOPIC
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    ready: asyncio.Task[float] | None = None
    await c.start()
    try:
        c.assign([TopicPartition(topic, p) for p in range(partitions)])
        web_port = broker.free_port()
        env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEMENT_")}
        env.update(
            ENGAGEMENT_BROKER=f"kafka://{bootstrap}",
            ENGAGEMENT_WEB_PORT=str(web_port),
            ENGAGEMENT_APP_ID=f"bench-{uuid.uuid4().hex[:8]}",
            ENGAGEMENT_TOPIC_PREFIX=prefix,
            ENGAGEMENT_PARTITIONS=str(partitions),
            ENGAGEMENT_DATA_DIR=datadir,
        )
        exe = Path(sys.executable).with_name("engagement")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
        with open(log, "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen(
                [*cmd, "worker", "--loglevel", "warning"],
                env=env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        procs.append(proc)
        ready = asyncio.create_task(wait_healthy(web_port, proc))
        windows: dict[tuple[str, str, str], dict[str, int]] = {}
        total = sum300 = 0
        pending_last = set(last.items())
        t_first_window = settle_until = 0.0
        while total != n:
            if proc.poll() is not None:
                raise BenchError(f"worker exited with code {proc.returncode}")
            if ready.done() and not ready.cancelled() and ready.exception():
                raise BenchError(str(ready.exception()))
            batch = await c.getmany(timeout_ms=200)
            for recs in batch.values():
                t_first_window = t_first_window or time.perf_counter()
                for r in recs:
                    w = orjson.loads(r.value)
                    if w["size_seconds"] != 60:
                        sum300 += sum(w["counts"].values())  # info only (may double count)
                        continue
                    key = (w["account_id"], w["channel"], w["window_start"])
                    old = windows.get(key)
                    total += sum(w["counts"].values()) - (sum(old.values()) if old else 0)
                    windows[key] = w["counts"]
                    pending_last.discard((key[:2], key[2]))
            if not pending_last and total != n:  # events lost: collect stragglers, stop
                settle_until = settle_until or time.perf_counter() + 3.0
                if time.perf_counter() > settle_until:
                    break
        t_end = time.perf_counter()
        t_ready = await ready
    finally:
        if ready is not None:
            ready.cancel()
        await c.stop()
    got: Counter[Any] = Counter()
    for (account, _, _), counts in windows.items():
        for kind, k in counts.items():
            if k:
                got[(account, kind)] += k
    return {
        "events_per_s_incl_startup": n / (t_end - t0),
        "events_per_s_excl_startup": n / (t_end - t_ready),
        "seconds_incl_startup": t_end - t0,
        "startup_seconds": t_ready - t0,
        "first_window_seconds": t_first_window - t0,
        "windows_60s": len(windows),
        "counted_60s": total,
        "counted_300s": sum300,
    }, got


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def bench(
    args: argparse.Namespace, bootstrap: str, tmp: str, procs: list[subprocess.Popen[bytes]]
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    raw = [prefix + t for _, t, _ in KINDS]
    names = [
        *RAW_TOPICS,
        "engagement.events",
        WINDOWS_TOPIC,
        "engagement.alerts",
        "engagement.deadletter",
    ]
    await asyncio.to_thread(ensure_topics, bootstrap, [prefix + t for t in names], args.partitions)
    data, closing, totals, last = make_events(args.events, args.accounts, prefix)
    t = time.perf_counter()
    await produce(bootstrap, data)
    await produce(bootstrap, closing)  # after the data is acknowledged: last in every partition
    print(
        f"produced {len(data)} events + {len(closing)} closing events "
        f"in {time.perf_counter() - t:.1f} s (not timed)",
        flush=True,
    )
    r = await raw_baseline(bootstrap, raw, args.events)
    print(f"raw baseline: {r['events_per_s']:,.0f} events/s", flush=True)
    log = Path(tmp) / "worker.log"
    try:
        w, got = await run_worker(
            bootstrap,
            prefix,
            args.partitions,
            args.events,
            last,
            log,
            str(Path(tmp) / "data"),
            procs,
        )
    except BaseException:
        print(f"--- worker log ({log}) ---\n{log.read_text(errors='replace')}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            stop_proc(p)
    wlog = log.read_text(errors="replace")
    diff = {f"{a}/{k}": got[(a, k)] - v for (a, k), v in totals.items() if got[(a, k)] != v}
    diff.update({f"{a}/{k}": v for (a, k), v in got.items() if (a, k) not in totals})
    return {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": platform.python_version(),
        },
        "events": args.events,
        "partitions": args.partitions,
        "accounts": args.accounts,
        "raw": r,
        "worker": w,
        "ratio_incl_startup": w["events_per_s_incl_startup"] / r["events_per_s"],
        "ratio_excl_startup": w["events_per_s_excl_startup"] / r["events_per_s"],
        "correct": not diff,
        "mismatches": diff,
        "worker_log_errors": [ln for ln in wlog.splitlines() if "ERROR" in ln or "Traceback" in ln][
            :20
        ],
    }


def table(res: dict[str, Any]) -> str:
    m, r, w = res["machine"], res["raw"], res["worker"]
    rows = [
        ("machine", f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}"),
        (
            "events (N) / partitions / accounts",
            f"{res['events']:,} / {res['partitions']} / {res['accounts']}",
        ),
        (
            "raw aiokafka getmany+orjson+count",
            f"{r['events_per_s']:>10,.0f} events/s"
            f"  ({r['seconds']:.2f} s; incl. group join {r['incl_join_events_per_s']:,.0f}/s)",
        ),
        (
            "worker, incl. start-up",
            f"{w['events_per_s_incl_startup']:>10,.0f} events/s"
            f"  ({w['seconds_incl_startup']:.1f} s)   worker/raw {res['ratio_incl_startup']:.4f}",
        ),
        (
            "worker, excl. start-up (healthz)",
            f"{w['events_per_s_excl_startup']:>10,.0f} events/s"
            f"  ({w['seconds_incl_startup'] - w['startup_seconds']:.1f} s)"
            f"   worker/raw {res['ratio_excl_startup']:.4f}",
        ),
        (
            "worker start-up to healthz / 1st window",
            f"{w['startup_seconds']:.1f} s / {w['first_window_seconds']:.1f} s",
        ),
        (
            "correctness (60 s windows vs produced)",
            "OK"
            if res["correct"]
            else f"MISMATCH in {len(res['mismatches'])} (account, kind) totals; "
            f"counted {w['counted_60s']:,} of {res['events']:,}",
        ),
    ]
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}} : {v}" for k, v in rows)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    ap.add_argument("--json", type=Path, help="also write the results here")
    ap.add_argument("--timeout", type=float, default=900.0, help="total seconds")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    procs: list[subprocess.Popen[bytes]] = []
    broker_proc = None
    try:
        with tempfile.TemporaryDirectory(prefix="engagement-bench-") as tmp:
            try:
                if args.broker:
                    bootstrap = args.broker.removeprefix("kafka://")
                else:
                    port = broker.free_port()
                    broker_proc = broker.start(port, log_path=Path(tmp) / "broker.log")
                    bootstrap = f"127.0.0.1:{port}"
                res = asyncio.run(
                    asyncio.wait_for(bench(args, bootstrap, tmp, procs), args.timeout)
                )
            finally:
                for p in procs:
                    stop_proc(p)
                if broker_proc is not None:
                    broker.stop(broker_proc)
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
        print(
            "MISMATCH (from windows - produced, first 10): "
            + ", ".join(f"{k}: {v:+d}" for k, v in list(res["mismatches"].items())[:10])
        )
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

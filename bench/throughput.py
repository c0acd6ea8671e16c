"""Throughput of `engagement worker` on N pre-produced events against a raw aiokafka
consumer, with a check of the per-(account, kind) totals. See bench/README.md."""

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

from agents.app import ALERTS_TOPIC, DEADLETTER_TOPIC, EVENTS_TOPIC, RAW_TOPICS, WINDOWS_TOPIC
from pipeline import broker
from pipeline.topics import ensure_topics

KINDS = {"like": ("social.likes", 60), "comment": ("social.comments", 20),
         "share": ("social.shares", 10), "mention": ("social.mentions", 10)}
CHANNELS = ("instagram", "x", "facebook", "tiktok")
BASE_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
SPAN_MS = 3_600_000  # the data covers one hour of event time
Msg = tuple[str, bytes, bytes]  # topic, key, value
Procs = list[subprocess.Popen[bytes]]


class BenchError(RuntimeError):
    pass


def make_events(n: int, accounts: int, prefix: str, close_after_ms: int,
                seed: int = 7) -> tuple[list[Msg], list[Msg], Counter[tuple[str, str]]]:
    """N events in event-time order, one closing like per account, per-(account, kind) totals."""
    rng = random.Random(seed)
    names = [f"acct-{i:03d}" for i in range(accounts)]
    kinds = rng.choices(list(KINDS), weights=[w for _, w in KINDS.values()], k=n)
    data: list[Msg] = []
    totals: Counter[tuple[str, str]] = Counter()
    for i, kind in enumerate(kinds):
        account, channel = rng.choice(names), rng.choice(CHANNELS)
        ev = {"event_id": f"bench-{i:09d}", "kind": kind, "channel": channel,
              "account_id": account, "ts": BASE_MS + i * SPAN_MS // n,
              "actor_id": f"user-{rng.randrange(100_000)}", "priority": "normal"}
        if kind != "mention":
            ev["post_id"] = f"{account}-post-{rng.randrange(40)}"
        data.append((prefix + KINDS[kind][0], account.encode(), orjson.dumps(ev)))
        totals[(account, kind)] += 1
    close_ts = BASE_MS + SPAN_MS + close_after_ms
    closing = [(prefix + "social.likes", a.encode(), orjson.dumps(
        {"event_id": f"bench-close-{a}", "kind": "like", "channel": CHANNELS[0],
         "account_id": a, "ts": close_ts, "post_id": f"{a}-close"})) for a in names]
    return data, closing, totals


async def produce(bootstrap: str, msgs: list[Msg]) -> None:
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=20, acks=1,
                         max_batch_size=256 * 1024, max_request_size=4 << 20)
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
    c = AIOKafkaConsumer(*topics, bootstrap_servers=bootstrap, group_id=f"raw-{uuid.uuid4()}",
                         auto_offset_reset="earliest", enable_auto_commit=False)
    t0 = time.perf_counter()
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
    return {"events_per_s": seen / (t_end - t_first), "seconds": t_end - t_first,
            "incl_join_events_per_s": seen / (t_end - t0)}


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


def worker_env(bootstrap: str, prefix: str, args: argparse.Namespace, tmp: Path) -> dict[str, str]:
    web_port = broker.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEMENT_")}
    env.update(ENGAGEMENT_BROKER=f"kafka://{bootstrap}", ENGAGEMENT_WEB_PORT=str(web_port),
               ENGAGEMENT_APP_ID=f"bench-{uuid.uuid4().hex[:8]}", ENGAGEMENT_TOPIC_PREFIX=prefix,
               ENGAGEMENT_PARTITIONS=str(args.partitions),
               ENGAGEMENT_DATA_DIR=str(tmp / "data"))
    if args.lateness is not None:  # the dedup horizon must cover lateness + largest window
        conf = tmp / "bench.toml"
        conf.write_text(f"[windows]\nallowed_lateness_s = {args.lateness}\n"
                        f"[dedup]\nhorizon_s = {args.lateness + 600}\n")
        env["ENGAGEMENT_CONFIG"] = str(conf)
    return env


async def run_worker(bootstrap: str, prefix: str, args: argparse.Namespace, tmp: Path,
                     procs: Procs) -> tuple[dict[str, Any], Counter[tuple[str, str]]]:
    """Start a fresh worker; consume the windows and dead-letter topics until every event
    is in a 60 s window or dead-lettered (or nothing new came for --idle seconds)."""
    n, topics = args.events, [prefix + WINDOWS_TOPIC, prefix + DEADLETTER_TOPIC]
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest")
    ready: asyncio.Task[float] | None = None
    await c.start()
    try:
        c.assign([TopicPartition(t, p) for t in topics for p in range(args.partitions)])
        env = worker_env(bootstrap, prefix, args, tmp)
        exe = Path(sys.executable).with_name("engagement")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "pipeline.cli"]
        with open(tmp / "worker.log", "wb") as out:
            t0 = time.perf_counter()
            proc = subprocess.Popen([*cmd, "worker", "--loglevel", "warning"], env=env,
                                    stdout=out, stderr=subprocess.STDOUT)
        procs.append(proc)
        ready = asyncio.create_task(wait_healthy(int(env["ENGAGEMENT_WEB_PORT"]), proc))
        windows: dict[tuple[str, str, str], dict[str, int]] = {}
        total = sum300 = 0
        dead: Counter[str] = Counter()
        t_first_window = t_last = 0.0
        while total + dead.total() < n:
            if proc.poll() is not None:
                raise BenchError(f"worker exited with code {proc.returncode}")
            if ready.done() and not ready.cancelled() and ready.exception():
                raise BenchError(str(ready.exception()))
            if t_last and time.perf_counter() - t_last > args.idle:
                break  # the worker went quiet without accounting for every event
            for tp, recs in (await c.getmany(timeout_ms=200)).items():
                t_last = time.perf_counter()
                for r in recs:
                    w = orjson.loads(r.value)
                    if tp.topic == topics[1]:
                        dead[w["reason"]] += 1
                        continue
                    t_first_window = t_first_window or t_last
                    if w["size_seconds"] != 60:
                        sum300 += sum(w["counts"].values())  # info only
                        continue
                    key = (w["account_id"], w["channel"], w["window_start"])
                    old = windows.get(key)  # a redelivered window replaces its first copy
                    total += sum(w["counts"].values()) - (sum(old.values()) if old else 0)
                    windows[key] = w["counts"]
        t_end, t_ready = t_last, await ready
    finally:
        if ready is not None:
            ready.cancel()
        await c.stop()
    got: Counter[tuple[str, str]] = Counter()
    for (account, _, _), counts in windows.items():
        for kind, k in counts.items():
            got[(account, kind)] += k
    return {"events_per_s_incl_startup": n / (t_end - t0), "seconds_incl_startup": t_end - t0,
            "events_per_s_excl_startup": n / (t_end - t_ready), "startup_seconds": t_ready - t0,
            "first_window_seconds": t_first_window - t0, "windows_60s": len(windows),
            "counted_60s": total, "counted_300s": sum300, "deadlettered": dict(dead)}, got


def stop_proc(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def bench(args: argparse.Namespace, bootstrap: str, tmp: Path,
                procs: Procs) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    names = [*RAW_TOPICS, EVENTS_TOPIC, WINDOWS_TOPIC, ALERTS_TOPIC, DEADLETTER_TOPIC]
    await asyncio.to_thread(ensure_topics, bootstrap, [prefix + t for t in names], args.partitions)
    close_after_ms = ((args.lateness or 0) + 15 * 60) * 1000
    data, closing, totals = make_events(args.events, args.accounts, prefix, close_after_ms)
    t = time.perf_counter()
    await produce(bootstrap, data)
    await produce(bootstrap, closing)  # after the data is acknowledged: last in every partition
    print(f"produced {len(data)} events + {len(closing)} closing events "
          f"in {time.perf_counter() - t:.1f} s (not timed)", flush=True)
    r = await raw_baseline(bootstrap, [prefix + t for t, _ in KINDS.values()], args.events)
    print(f"raw baseline: {r['events_per_s']:,.0f} events/s; starting the worker", flush=True)
    log = tmp / "worker.log"
    try:
        w, got = await run_worker(bootstrap, prefix, args, tmp, procs)
    except BaseException:
        print(f"--- worker log ---\n{log.read_text(errors='replace')}", file=sys.stderr)
        raise
    finally:
        for p in procs:
            stop_proc(p)
    errors = [ln for ln in log.read_text(errors="replace").splitlines()
              if "ERROR" in ln or "Traceback" in ln]
    diff = {f"{a}/{k}": got[(a, k)] - v for (a, k), v in (totals | got).items()
            if got[(a, k)] != totals[(a, k)]}
    m = {"cpus": os.cpu_count(), "platform": platform.platform(),
         "python": platform.python_version()}
    return {"machine": m, "events": args.events, "partitions": args.partitions,
            "accounts": args.accounts, "allowed_lateness_s": args.lateness, "raw": r, "worker": w,
            "ratio_incl_startup": w["events_per_s_incl_startup"] / r["events_per_s"],
            "ratio_excl_startup": w["events_per_s_excl_startup"] / r["events_per_s"],
            "correct": not diff, "mismatches": diff, "worker_log_errors": errors[:20]}


def table(res: dict[str, Any]) -> str:
    m, r, w = res["machine"], res["raw"], res["worker"]
    late = res["allowed_lateness_s"]
    rows = [
        ("machine", f"{m['cpus']} CPUs, {m['platform']}, Python {m['python']}"),
        ("events N / partitions / accounts",
         f"{res['events']:,} / {res['partitions']} / {res['accounts']}"
         f"   (allowed lateness: {'default' if late is None else f'{late} s'})"),
        ("raw aiokafka getmany+orjson+count", f"{r['events_per_s']:>9,.0f} events/s  "
         f"({r['seconds']:.2f} s; with group join {r['incl_join_events_per_s']:,.0f}/s)"),
        ("worker, incl. start-up", f"{w['events_per_s_incl_startup']:>9,.0f} events/s  "
         f"({w['seconds_incl_startup']:.1f} s)  worker/raw = {res['ratio_incl_startup']:.4f}"),
        ("worker, excl. start-up (/healthz)", f"{w['events_per_s_excl_startup']:>9,.0f} events/s  "
         f"({w['seconds_incl_startup'] - w['startup_seconds']:.1f} s)  "
         f"worker/raw = {res['ratio_excl_startup']:.4f}"),
        ("worker start: /healthz, 1st window", f"{w['startup_seconds']:.1f} s, "
         f"{w['first_window_seconds']:.1f} s"),
        ("events in 60 s windows / dead-letter", f"{w['counted_60s']:,} / {w['deadlettered']}"),
        ("correctness (60 s windows)", "OK" if res["correct"] else
         f"MISMATCH in {len(res['mismatches'])} (account, kind) totals"),
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
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--timeout", type=float, default=900.0, help="total seconds (default 900)")
    ap.add_argument("--idle", type=float, default=60.0, help="stop when the worker's output "
                    "is quiet this long before all events are accounted for")
    ap.add_argument("--lateness", type=int, help="run the worker with this allowed lateness "
                    "(s) via a temporary config file (default: the worker's default)")
    args = ap.parse_args()
    signal.signal(signal.SIGTERM, _interrupt)
    procs: Procs = []
    try:
        with tempfile.TemporaryDirectory(prefix="engagement-bench-") as tmp:
            broker_proc = None
            try:
                if args.broker:
                    bootstrap = args.broker.removeprefix("kafka://")
                else:
                    port = broker.free_port()
                    broker_proc = broker.start(port, log_path=Path(tmp) / "broker.log")
                    bootstrap = f"127.0.0.1:{port}"
                coro = bench(args, bootstrap, Path(tmp), procs)
                res = asyncio.run(asyncio.wait_for(coro, args.timeout))
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
        worst = sorted(res["mismatches"].items(), key=lambda kv: kv[1])[:8]
        print("MISMATCH (windows - produced): " + ", ".join(f"{k} {v:+d}" for k, v in worst))
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

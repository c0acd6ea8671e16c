"""Open-loop latency of the worker: events produced at fixed rates with the wall
clock as event time; how long after becoming final each window is published, and
how long after the event that crossed a threshold its alert is. See bench/README.md."""

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
import uuid
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from harness import CHANNELS, BenchError, Procs, broker_and_processes, worker_environment
from throughput import watch_health

from pipeline.cli import broker
from pipeline.cli.topics import ensure_topics
from pipeline.model.topics import ALERTS, INTERACTIONS, WINDOWS
from pipeline.model.topics import ALL as ALL_TOPICS

LATENESS_S, GRACE_S = 10, 5  # the worker's defaults: a window is final this long after its end
ACCOUNTS = [f"acct-{i:03d}" for i in range(50)]
RULE = "latency-probe"


def ms_of(rfc3339: str) -> int:
    return int(datetime.fromisoformat(rfc3339.replace("Z", "+00:00")).timestamp() * 1000)


def quantiles(values: list[float]) -> dict[str, float | int]:
    if not values:
        return {"n": 0}
    v = sorted(values)
    return {
        "n": len(v),
        "p50_ms": v[len(v) // 2],
        "p99_ms": v[min(len(v) - 1, int(len(v) * 0.99))],
        "max_ms": v[-1],
    }


class Phase:
    """One rate: what was sent, when each window became final and each crossing."""

    def __init__(self, rate: int, threshold: int, name: str = "run") -> None:
        self.rate, self.threshold, self.name = rate, threshold, name
        self.start_ms = self.end_ms = 0
        self.sent = 0
        self.counts: dict[tuple[str, str, int], int] = {}
        self.crossed: dict[tuple[str, str, int], float] = {}  # window -> send time (ms)

    def record(self, account: str, channel: str, ts_ms: int) -> None:
        key = (account, channel, ts_ms - ts_ms % 60_000)
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        if n == self.threshold + 1:  # "above": this event makes the count exceed it
            self.crossed[key] = ts_ms

    def owns(self, window_start_ms: int) -> bool:
        """A whole window of this phase (not one that began in the phase before)."""
        return self.start_ms <= window_start_ms and window_start_ms + 60_000 <= self.end_ms


async def produce_at(
    p: AIOKafkaProducer, topic: str, phase: Phase, seconds: float, rng: random.Random
) -> None:
    """Open loop: event i is sent at start + i / rate, whatever the worker does."""
    t0 = time.time()
    phase.start_ms = int(t0 * 1000)
    i = 0
    pending: list[asyncio.Future[Any]] = []
    while (now := time.time()) < t0 + seconds:
        due = t0 + i / phase.rate
        if due > now:
            await asyncio.sleep(due - now)
        while i < phase.rate * seconds and t0 + i / phase.rate <= time.time():
            account, channel = rng.choice(ACCOUNTS), rng.choice(CHANNELS)
            ts = int(time.time() * 1000)
            ev = {
                "event_id": f"lat-{phase.name}-{phase.rate}-{i}",
                "kind": "like",
                "channel": channel,
                "account_id": account,
                "ts": ts,
                "post_id": f"{account}-p{rng.randrange(20)}",
                "actor_id": f"u{rng.randrange(10**6)}",
            }
            pending.append(await p.send(topic, orjson.dumps(ev), key=account.encode()))
            phase.record(account, channel, ts)
            i += 1
        phase.sent = i
        if len(pending) > 5000:  # surface a failed send; these are acknowledged by now
            await asyncio.gather(*pending)
            pending.clear()
    await asyncio.gather(*pending)
    phase.end_ms = int(time.time() * 1000)


async def collect(
    bootstrap: str, prefix: str, partitions: int, out: list[tuple[float, str, dict[str, Any]]]
) -> None:
    topics = [prefix + WINDOWS, prefix + ALERTS]
    # A fetch that finds nothing waits fetch_max_wait_ms on the embedded broker even
    # when records arrive meanwhile: short, so the probe does not add to what it measures.
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
    )
    await c.start()
    try:
        c.assign([TopicPartition(t, p) for t in topics for p in range(partitions)])
        while True:
            for tp, recs in (await c.getmany(timeout_ms=50)).items():
                now = time.time() * 1000
                kind = "window" if tp.topic == topics[0] else "alert"
                out += [(now, kind, orjson.loads(r.value)) for r in recs]
    finally:
        await c.stop()


def measure(
    phases: list[Phase], got: list[tuple[float, str, dict[str, Any]]]
) -> list[dict[str, Any]]:
    results = []
    for ph in phases:
        windows, alerts = [], []
        for recv, kind, rec in got:
            start = ms_of(rec["window_start"])
            if not ph.owns(start) or (kind == "window" and rec["size_seconds"] != 60):
                continue
            if kind == "window":
                final_at = start + 60_000 + (LATENESS_S + GRACE_S) * 1000
                windows.append(recv - final_at)
            elif rec["type"] == "threshold_above":
                key = (rec["account_id"], rec["channel"], start)
                if key in ph.crossed:
                    alerts.append(recv - ph.crossed[key])
        expected = sum(1 for k in ph.crossed if ph.owns(k[2]))
        results.append(
            {
                "rate": ph.rate,
                "sent": ph.sent,
                "achieved_per_s": ph.sent / max(1e-9, (ph.end_ms - ph.start_ms) / 1000),
                "threshold": ph.threshold,
                "window": quantiles(windows),
                "alert": quantiles(alerts),
                "alerts_expected": expected,
            }
        )
    return results


async def phase_run(
    args: argparse.Namespace, bootstrap: str, tmp: Path, procs: Procs, ph: Phase, rng: random.Random
) -> list[tuple[float, str, dict[str, Any]]]:
    """A fresh worker with a threshold rule for this rate, fed at the rate for
    --seconds, then for the lateness and grace more so that the last window closes."""
    prefix = f"lat{uuid.uuid4().hex[:6]}."
    await asyncio.to_thread(
        ensure_topics, bootstrap, [prefix + t for t in ALL_TOPICS], args.partitions
    )
    (tmp / f"{ph.rate}.toml").write_text(
        f'[[alerts.thresholds]]\nname = "{RULE}"\nmetric = "volume"\nop = "above"\n'
        f'value = {ph.threshold}\nwindow_s = 60\ncooldown_s = 0\nseverity = "info"\n'
    )
    env, port = worker_environment(
        bootstrap, f"lat-{uuid.uuid4().hex[:8]}", prefix, args.partitions, tmp / f"d{ph.rate}"
    )
    env["ENGAGEMENT_CONFIG"] = str(tmp / f"{ph.rate}.toml")
    cmd = [str(Path(sys.executable).with_name("engagement")), "worker", "--loglevel", "warning"]
    with open(tmp / f"worker-{ph.rate}.log", "wb") as log:
        proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT)
    procs.append(proc)
    got: list[tuple[float, str, dict[str, Any]]] = []
    p = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=5, acks=1)
    collector = None
    try:
        await watch_health(port, proc)
        collector = asyncio.create_task(collect(bootstrap, prefix, args.partitions, got))
        await p.start()
        topic = prefix + INTERACTIONS["like"]
        await produce_at(p, topic, ph, args.seconds, rng)
        tail = Phase(ph.rate, ph.threshold, "tail")  # keeps the watermark moving, not measured
        await produce_at(p, topic, tail, LATENESS_S + GRACE_S + 5, rng)
        await asyncio.sleep(2)
        if proc.poll() is not None:
            raise BenchError(f"worker exited with code {proc.returncode}")
    finally:
        await p.stop()
        if collector:
            collector.cancel()
        proc.terminate()
        await asyncio.to_thread(proc.wait, 15)
    return got


async def bench(
    args: argparse.Namespace, bootstrap: str, tmp: Path, procs: Procs
) -> dict[str, Any]:
    series = len(ACCOUNTS) * len(CHANNELS)
    # a threshold crossed about a third of the way into each 1-minute window
    phases = [Phase(int(r), max(1, int(r) * 60 // series // 3)) for r in args.rates.split(",")]
    rng = random.Random(11)
    results = []
    for ph in phases:
        got = await phase_run(args, bootstrap, tmp, procs, ph, rng)
        results += measure([ph], got)
        print(line(results[-1]), flush=True)
    m = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}
    return {"machine": m, "partitions": args.partitions, "seconds": args.seconds, "rates": results}


def line(r: dict[str, Any]) -> str:
    def q(d: dict[str, Any]) -> str:
        if not d["n"]:
            return "none"
        return f"p50 {d['p50_ms'] / 1000:6.2f} s  p99 {d['p99_ms'] / 1000:6.2f} s  (n {d['n']})"

    return (
        f"{r['rate']:>6,}/s (sent {r['achieved_per_s']:,.0f}/s): "
        f"window after final {q(r['window'])}; alert after the crossing event "
        f"{q(r['alert'])}, {r['alert']['n']} of {r['alerts_expected']} expected"
    )


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--rates", default="1000,5000,10000", help="events/s, comma-separated")
    ap.add_argument(
        "--seconds", type=float, default=120.0, help="per rate (at least 120: one whole window)"
    )
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    args = ap.parse_args()
    try:
        with broker_and_processes(args, "engagement-latency-") as (bootstrap, tmp, procs):
            res = asyncio.run(bench(args, bootstrap, tmp, procs))
    except (TimeoutError, BenchError, broker.BrokerError) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(f"machine: {res['machine']}")
    if args.json:
        args.json.write_text(json.dumps(res, indent=2) + "\n")
    complete = all(r["alert"]["n"] == r["alerts_expected"] for r in res["rates"])
    if not complete:
        print("MISSING alerts: a crossing without its alert")
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())

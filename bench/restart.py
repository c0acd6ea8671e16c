"""Restart time of `engagement worker` after a kill -9 with N events of window and dedup
state, against a clean start, with a check that the restored state counts exactly.
See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import shutil
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
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
    producer,
    worker_environment,
)
from kafka import KafkaAdminClient
from prometheus_client.parser import text_string_to_metric_families

from agents.faust_fixes import log_end_offsets
from pipeline.cli import broker
from pipeline.cli.topics import ensure_topics
from pipeline.model import wire
from pipeline.model.topics import ALL as ALL_TOPICS
from pipeline.model.topics import DEADLETTER, EVENTS, INPUTS, WINDOWS
from pipeline.model.topics import family as input_family

LATENESS_S = 3600  # watermark = newest event - 1 h: nothing in the data's minutes closes
PROBE = 1_000  # new events sent at each start, into the same open windows
# Worker log lines that mark the phases of a start (the first one of each; the last
# "restored partition" line: the aggregator has rebuilt every partition's state)
MARKS = {
    "assigned": "Setting newly assigned partitions",
    "recovered": "[^---Recovery]: Recovery complete",
    "replayed": "restored partition",
}


class Traffic:
    """Events keyed by account, in event-time order over `span_s`, unique ids, and the
    per-(account, kind) totals a correct run must count."""

    def __init__(self, prefix: str, accounts: int, span_s: int, seed: int = 7) -> None:
        self.prefix, self.span_ms = prefix, span_s * 1000
        self.rng = random.Random(seed)
        self.names = [f"acct-{i:04d}" for i in range(accounts)]
        self.totals: Counter[tuple[str, str]] = Counter()

    def events(self, n: int, id_prefix: str) -> Iterator[Msg]:
        rng, kinds = self.rng, list(KINDS)
        weights = [w for _, w in KINDS.values()]
        for i in range(n):
            kind = rng.choices(kinds, weights)[0]
            account = rng.choice(self.names)
            ev = {
                "event_id": f"{id_prefix}-{i:09d}",
                "kind": kind,
                "channel": rng.choice(CHANNELS),
                "account_id": account,
                "ts": BASE_MS + i * self.span_ms // n,
                "actor_id": f"user-{rng.randrange(100_000)}",
            }
            if kind != "mention":
                ev["post_id"] = f"{account}-post-{rng.randrange(40)}"
            self.totals[(account, kind)] += 1
            yield self.prefix + KINDS[kind][0], account.encode(), orjson.dumps(ev)

    def closing(self, partitions: int) -> list[Msg]:
        """One event per partition of every input topic, far past the data: the watermark
        (the minimum over input partitions) passes every window of it."""
        ts = BASE_MS + self.span_ms + (LATENESS_S + 900) * 1000
        out = []
        for topic, family in ((t, input_family(t)) for t in INPUTS):
            for p in range(partitions):
                ev: dict[str, Any] = {"account_id": "closer", "channel": "closer", "ts": ts}
                if family == "exposure":
                    ev.update(followers=1, post_id=f"closer-{p}")
                else:
                    ev.update(event_id=f"closer-{topic}-{p}", kind="like", post_id="closer")
                out.append((self.prefix + topic, f"closer-{p}".encode(), orjson.dumps(ev)))
        return out


async def produce(
    bootstrap: str, msgs: Iterator[Msg] | list[Msg], partition_of: Callable[[Msg], int | None]
) -> int:
    """Produce in order, in chunks (bounded memory); return how many were produced."""
    p = producer(bootstrap)
    await p.start()
    n = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for msg in msgs:
            topic, key, value = msg
            pending.append(await p.send(topic, value, key=key, partition=partition_of(msg)))
            if len(pending) >= 50_000:
                await asyncio.gather(*pending)
                n, pending = n + len(pending), []
        await asyncio.gather(*pending)
        n += len(pending)
    finally:
        await p.stop()
    return n


class Worker:
    """An `engagement worker` subprocess (`python -m pipeline.cli worker`)."""

    def __init__(self, env: dict[str, str], port: int, log: Path) -> None:
        self.env, self.port, self.log = env, port, log
        self.proc: subprocess.Popen[bytes] | None = None
        self.t0 = self.t0_wall = 0.0

    def start(self, procs: Procs) -> None:
        cmd = [sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "info"]
        with open(self.log, "ab") as out:
            self.t0, self.t0_wall = time.perf_counter(), time.time()
            self.proc = subprocess.Popen(cmd, env=self.env, stdout=out, stderr=subprocess.STDOUT)
        procs.append(self.proc)

    def alive(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise BenchError(f"worker exited with code {self.proc.returncode} (log: {self.log})")

    def get(self, path: str) -> bytes | None:
        try:  # a 503 raises HTTPError, an OSError
            url = f"http://127.0.0.1:{self.port}{path}"
            with urllib.request.urlopen(url, timeout=2) as r:
                return bytes(r.read())
        except OSError:
            return None

    def healthz(self) -> dict[str, Any] | None:
        body = self.get("/healthz")
        return None if body is None else dict(json.loads(body))

    def metric(self, name: str) -> float:
        """Sum over the labels of one series (0 if the worker does not answer)."""
        body = self.get("/metrics")
        if body is None:
            return 0.0
        return sum(
            s.value
            for family in text_string_to_metric_families(body.decode())
            for s in family.samples
            if s.name == name
        )

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def marks(self) -> dict[str, float]:
        """Seconds from the process start to each of MARKS in the log (faust's format:
        "[YYYY-mm-dd HH:MM:SS,mmm] [pid] [LEVEL] message", local time)."""
        out: dict[str, float] = {}
        for line in self.log.read_text(errors="replace").splitlines():
            try:
                at = datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f").timestamp()
            except ValueError:
                continue
            for name, mark in MARKS.items():
                if mark in line and (name == "replayed" or name not in out):
                    out[name] = at - self.t0_wall
        return out

    def rss_mb(self) -> float:
        assert self.proc is not None
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return 0.0


async def until(
    cond: Callable[[], Any], worker: Worker, timeout_s: float, what: str, every_s: float = 0.1
) -> float:
    """Poll `cond` (run in a thread) until it is true; return when, as perf_counter."""
    deadline = time.perf_counter() + timeout_s
    while time.perf_counter() < deadline:
        worker.alive()
        if await asyncio.to_thread(cond):
            return time.perf_counter()
        await asyncio.sleep(every_s)
    raise BenchError(f"timed out after {timeout_s:.0f} s waiting for {what}")


def committed(bootstrap: str, group: str) -> dict[tuple[str, int], int]:
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        offsets = admin.list_group_offsets({group: None}).get(group, {})
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in offsets.items()}


async def end_offsets(bootstrap: str, topic: str, partitions: int) -> dict[tuple[str, int], int]:
    """The log end of each partition (the embedded broker's ListOffsets alone may
    under-report it: agents/faust_fixes.py)."""
    c = AIOKafkaConsumer(bootstrap_servers=bootstrap, group_id=None)
    await c.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await log_end_offsets(c, tps)
    finally:
        await c.stop()
    return {(tp.topic, tp.partition): o for tp, o in ends.items()}


async def read_topic(bootstrap: str, topic: str, partitions: int) -> list[Any]:
    """Every record of a whole topic, as a raw consumer reads it from the start."""
    ends = await end_offsets(bootstrap, topic, partitions)
    c = AIOKafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=None,
        auto_offset_reset="earliest",
        max_partition_fetch_bytes=8 << 20,
        fetch_max_bytes=32 << 20,
    )
    await c.start()
    out: list[Any] = []
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        c.assign(tps)
        await c.seek_to_beginning(*tps)
        left = {tp for tp in tps if ends[(topic, tp.partition)] > 0}
        while left:
            for tp, recs in (await c.getmany(timeout_ms=1000)).items():
                out += recs
                if recs and recs[-1].offset + 1 >= ends[(topic, tp.partition)]:
                    left.discard(tp)
    finally:
        await c.stop()
    return out


async def read_all(bootstrap: str, topic: str, partitions: int) -> tuple[int, int, float]:
    """(records, bytes of keys and values, seconds) of a whole topic: what a restore
    has to read back."""
    t = time.perf_counter()
    recs = await read_topic(bootstrap, topic, partitions)
    size = sum(len(r.key or b"") + len(r.value or b"") for r in recs)
    return len(recs), size, time.perf_counter() - t


async def dead_letter_reasons(bootstrap: str, topic: str, partitions: int) -> Counter[str]:
    """Dead letters by reason: after a mismatch, whether events were judged too late."""
    return Counter(
        orjson.loads(r.value)["reason"] for r in await read_topic(bootstrap, topic, partitions)
    )


async def audit_changelog(bootstrap: str, topic: str, partitions: int) -> dict[str, Any]:
    """What the changelog holds after the kill, before any restart reads it: delta
    sequence numbers missing per partition and the events the deltas carry (a loss
    here is the write path's, not the restore's)."""
    latest = {r.key: r.value for r in await read_topic(bootstrap, topic, partitions)}
    seqs: dict[int, set[int]] = {}
    events = 0
    for key, value in latest.items():  # compacted view: the last value per key
        if value is None or not key.startswith(b"d:"):
            continue
        delta = orjson.loads(value)
        seqs.setdefault(int(key.split(b":")[1]), set()).add(delta["s"])
        events += sum(
            1 for r in delta["r"] if r[0] == wire.INTERACTION and r[wire.I_ACCOUNT] != "closer"
        )
    gaps = {p: sorted(set(range(1, max(s) + 1)) - s)[:10] for p, s in seqs.items() if s}
    return {"events": events, "seq_gaps": {p: g for p, g in gaps.items() if g}}


async def diagnose(
    bootstrap: str, prefix: str, changelog: str, partitions: int, mismatches: dict[str, int]
) -> list[str]:
    """After a mismatch: for each short 60 s window of a mismatched account and kind,
    the internal-topic messages its events came in, whether a changelog delta holds
    them, and every copy of the window published (ids and offsets only)."""
    wanted = {tuple(k.split("/")) for k in mismatches}
    # event id -> (partition, offset, channel, ts)
    events: dict[str, tuple[int, int, str, int]] = {}
    by_key: dict[tuple[str, str], set[str]] = {}
    for r in await read_topic(bootstrap, prefix + EVENTS, partitions):
        rows, _ = wire.decode_message(r.value)
        for row in rows:
            if row[0] == wire.INTERACTION and (row[wire.I_ACCOUNT], row[wire.I_KIND]) in wanted:
                events.setdefault(
                    row[wire.I_ID], (r.partition, r.offset, row[wire.I_CHANNEL], row[wire.I_TS])
                )
                by_key.setdefault((row[wire.I_ACCOUNT], row[wire.I_KIND]), set()).add(
                    row[wire.I_ID]
                )
    in_delta: dict[str, tuple[int, int]] = {}  # event id -> (delta seq, source offset)
    for r in await read_topic(bootstrap, changelog, partitions):
        if r.value and r.key.startswith(b"d:"):
            d = orjson.loads(r.value)
            for row in d["r"]:
                if row[0] == wire.INTERACTION and row[wire.I_ID] in events:
                    in_delta[row[wire.I_ID]] = (d["s"], d["o"])
    copies: dict[tuple[str, str, str, int], list[tuple[int, int, int]]] = {}
    for r in await read_topic(bootstrap, prefix + WINDOWS, partitions):
        w = orjson.loads(r.value)
        if w["size_seconds"] != 60:
            continue
        start = int(datetime.fromisoformat(w["window_start"].replace("Z", "+00:00")).timestamp())
        for account, kind in wanted:
            if w["account_id"] == account:
                copies.setdefault((account, kind, w["channel"], start * 1000), []).append(
                    (r.partition, r.offset, w["counts"].get(kind, 0))
                )
    out = []
    for (account, kind), ids in sorted(by_key.items()):
        per_window: dict[tuple[str, int], list[str]] = {}
        for i in ids:
            _, _, channel, ts = events[i]
            per_window.setdefault((channel, ts // 60_000 * 60_000), []).append(i)
        for (channel, start), wids in sorted(per_window.items()):
            got = copies.get((account, kind, channel, start), [])
            published = sum(c for _, _, c in got[-1:]) if got else 0
            if published == len(wids):
                continue
            where = sorted({events[i][:2] for i in wids})
            out.append(
                f"{account}/{channel}/{kind} window {start}: {len(wids)} events, published "
                f"{[c for _, _, c in got]} at {[(p, o) for p, o, _ in got]}; events at "
                f"(partition, offset) {where}; not in a delta: "
                f"{sorted(events[i][:2] for i in wids if i not in in_delta)[:20]}; "
                f"ids not in a delta: {sorted(i for i in wids if i not in in_delta)[:5]}"
            )
    return out


class Windows:
    """Reads engagement.windows; adds up the 60 s windows' counts per (account, kind)."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap, group_id=None, auto_offset_reset="earliest"
        )
        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.counts: dict[tuple[str, str, str], dict[str, int]] = {}
        self.got: Counter[tuple[str, str]] = Counter()
        self.t_first = self.t_last = 0.0

    async def __aenter__(self) -> Windows:
        await self.consumer.start()
        self.consumer.assign(self.tps)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.consumer.stop()

    async def poll(self, timeout_ms: int = 100) -> None:
        for recs in (await self.consumer.getmany(timeout_ms=timeout_ms)).values():
            self.t_last = time.perf_counter()
            self.t_first = self.t_first or self.t_last
            for r in recs:
                w = orjson.loads(r.value)
                if w["size_seconds"] != 60 or w["channel"] == "closer":
                    continue
                key = (w["account_id"], w["channel"], w["window_start"])
                old = self.counts.get(key, {})  # a republished window replaces its copy
                self.got.update({(key[0], k): v - old.get(k, 0) for k, v in w["counts"].items()})
                self.counts[key] = w["counts"]


async def start_and_measure(
    worker: Worker, procs: Procs, args: argparse.Namespace, windows: Windows, expect: int
) -> dict[str, float]:
    """Start the worker with the probe and closing events already waiting in the input;
    time the start-up until every window holding `expect` events is published."""
    n_closers = (len(INPUTS) - 1) * args.partitions  # closing likes are counted too
    worker.start(procs)
    t = {"healthz": 0.0, "restored": 0.0, "applied": 0.0}
    deadline = time.perf_counter() + args.timeout
    while windows.got.total() < expect:
        worker.alive()
        if time.perf_counter() > deadline:
            raise BenchError(f"timed out: {windows.got.total():,} of {expect:,} events published")
        if not t["applied"]:
            h = await asyncio.to_thread(worker.healthz)
            now = time.perf_counter()
            if h is not None:
                t["healthz"] = t["healthz"] or now
                if len(h["partitions"]) == args.partitions:
                    t["restored"] = t["restored"] or now
            if t["restored"]:
                applied = await asyncio.to_thread(worker.metric, "engagement_events_total")
                if applied >= PROBE + n_closers:
                    t["applied"] = time.perf_counter()
        await windows.poll(timeout_ms=50 if not t["applied"] else 500)
        if windows.t_last and time.perf_counter() - windows.t_last > args.idle:
            break  # quiet for --idle seconds without accounting for every event
    out = {k: v - worker.t0 for k, v in t.items()}
    out["first_output"] = windows.t_first - worker.t0
    out["all_output"] = windows.t_last - worker.t0
    out["applied_after_start"] = await asyncio.to_thread(worker.metric, "engagement_events_total")
    out["rss_mb"] = worker.rss_mb()
    return {**out, **worker.marks()}


def worker_env(
    bootstrap: str, prefix: str, app_id: str, args: argparse.Namespace, tmp: Path
) -> tuple[dict[str, str], int]:
    config = tmp / "restart.toml"
    horizon = 300 + LATENESS_S + 100  # covers the largest window plus lateness
    config.write_text(
        f"[windows]\nsizes_s = [60, 300]\nallowed_lateness_s = {LATENESS_S}\ngrace_s = 0\n"
        "idle_after_s = 86400\n\n"
        f"[dedup]\nhorizon_s = {horizon}\n"
        f"max_ids_per_partition = {max(2_000_000, args.events + PROBE)}\n"
    )
    env, port = worker_environment(
        bootstrap, app_id, prefix, args.partitions, tmp / f"data-{app_id}"
    )
    env["ENGAGEMENT_CONFIG"] = str(config)
    return env, port


async def topics(bootstrap: str, args: argparse.Namespace) -> str:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    names = ALL_TOPICS
    await asyncio.to_thread(ensure_topics, bootstrap, [prefix + t for t in names], args.partitions)
    return prefix


def no_partition(msg: Msg) -> int | None:
    return None


def closer_partition(msg: Msg) -> int | None:
    return int(msg[1].rsplit(b"-", 1)[1])


async def run_start(
    name: str,
    bootstrap: str,
    prefix: str,
    app_id: str,
    traffic: Traffic,
    args: argparse.Namespace,
    tmp: Path,
    procs: Procs,
) -> dict[str, Any]:
    """One measured start: probe and closing events into the input, then the worker."""
    await produce(bootstrap, traffic.events(PROBE, f"probe-{name}"), no_partition)
    await produce(bootstrap, traffic.closing(args.partitions), closer_partition)
    env, port = worker_env(bootstrap, prefix, app_id, args, tmp)
    worker = Worker(env, port, tmp / f"worker-{name}.log")
    expect = traffic.totals.total()
    async with Windows(bootstrap, prefix + WINDOWS, args.partitions) as windows:
        times = await start_and_measure(worker, procs, args, windows, expect)
    diff = {
        f"{a}/{k}": windows.got[(a, k)] - traffic.totals[(a, k)]
        for a, k in traffic.totals | windows.got
        if windows.got[(a, k)] != traffic.totals[(a, k)]
    }
    dead = await dead_letter_reasons(bootstrap, prefix + DEADLETTER, args.partitions)
    return {
        **times,
        "expected": expect,
        "counted": windows.got.total(),
        "mismatches": diff,
        "dead_letters": dict(dead),
    }


async def bench(
    args: argparse.Namespace, bootstrap: str, tmp: Path, procs: Procs
) -> dict[str, Any]:
    res: dict[str, Any] = {
        "machine": {
            "cpus": os.cpu_count(),
            "platform": platform.platform(),
            "python": sys.version.split()[0],
        },
        "events": args.events,
        "partitions": args.partitions,
        "accounts": args.accounts,
    }
    # 1. A clean start: empty topics, a new consumer group, nothing to restore.
    prefix = await topics(bootstrap, args)
    traffic = Traffic(prefix, args.accounts, args.span)
    res["clean"] = await run_start(
        "clean", bootstrap, prefix, f"clean-{uuid.uuid4().hex[:6]}", traffic, args, tmp, procs
    )
    res["clean"]["changelog"] = (0, 0, 0.0)
    broker.stop(procs.pop(), timeout_s=15)  # the clean worker
    print(f"clean start measured; producing {args.events:,} events", flush=True)

    # 2. N events of state: produced, consumed by a worker, committed, then kill -9.
    prefix = await topics(bootstrap, args)
    traffic = Traffic(prefix, args.accounts, args.span)
    app_id = f"restart-{uuid.uuid4().hex[:6]}"
    t = time.perf_counter()
    await produce(bootstrap, traffic.events(args.events, "ev"), no_partition)
    print(f"produced {args.events:,} events in {time.perf_counter() - t:.1f} s", flush=True)
    env, port = worker_env(bootstrap, prefix, app_id, args, tmp)
    first = Worker(env, port, tmp / "worker-ingest.log")
    first.start(procs)
    t_done = await until(
        lambda: first.metric("engagement_events_total") >= args.events,
        first,
        args.timeout,
        "the worker to count every event",
        every_s=1.0,
    )
    # Kill only once the offsets past every forwarded batch are committed: committing
    # comes after the changelog records are flushed, so the state is all durable.
    events_topic = prefix + EVENTS
    ends = await end_offsets(bootstrap, events_topic, args.partitions)
    raw = {prefix + t for t in INPUTS}

    def durable() -> bool:
        done = committed(bootstrap, app_id)
        return sum(o for (t, _), o in done.items() if t in raw) >= args.events and all(
            done.get(tp, -1) >= end for tp, end in ends.items()
        )

    await until(durable, first, 60, "committed offsets", every_s=0.5)
    await asyncio.sleep(1.5)  # let a status tick publish the gauges
    res["ingest"] = {
        "events_topic_ends": {str(p): end for (_, p), end in sorted(ends.items())},
        "seconds": t_done - first.t0,
        "dedup_ids": first.metric("engagement_dedup_ids"),
        "open_windows": first.metric("engagement_open_windows"),
        "rss_mb": first.rss_mb(),
    }
    first.kill()
    print(
        f"worker counted {args.events:,} events in {res['ingest']['seconds']:.1f} s "
        f"({res['ingest']['dedup_ids']:,.0f} ids, {res['ingest']['open_windows']:,.0f} open "
        "windows); killed with SIGKILL",
        flush=True,
    )
    changelog = f"{app_id}-window-state-changelog"
    audit = await audit_changelog(bootstrap, changelog, args.partitions)
    print(
        f"changelog after the kill: {audit['events']:,} events in its deltas; "
        f"missing delta sequence numbers: {audit['seq_gaps'] or 'none'}",
        flush=True,
    )
    # 3. Restart on the same state.
    res["restart"] = await run_start(
        "restart", bootstrap, prefix, app_id, traffic, args, tmp, procs
    )
    res["restart"]["changelog"] = await read_all(bootstrap, changelog, args.partitions)
    if res["restart"]["mismatches"]:
        res["restart"]["diagnosis"] = await diagnose(
            bootstrap, prefix, changelog, args.partitions, res["restart"]["mismatches"]
        )
    res["correct"] = not res["clean"]["mismatches"] and not res["restart"]["mismatches"]
    # state came back from the changelog: the restarted worker applied only new input
    res["restart"]["reprocessed"] = res["restart"]["applied_after_start"] - (
        PROBE + (len(INPUTS) - 1) * args.partitions
    )
    return res


def table(res: dict[str, Any]) -> str:
    m, c, r = res["machine"], res["clean"], res["restart"]

    def s(v: float | None) -> str:
        return "-" if v is None else f"{v:8.1f} s"

    rows = [
        ("", "clean start", "restart after kill -9"),
        ("events of state", "0", f"{res['events']:,}"),
        (
            "changelog read back",
            "-",
            f"{r['changelog'][0]:,} records, {r['changelog'][1] / 1e6:,.1f} MB",
        ),
        ("/healthz 200", s(c["healthz"]), s(r["healthz"])),
        ("group joined (partitions assigned)", s(c["assigned"]), s(r["assigned"])),
        ("changelog read (faust recovery complete)", s(c["recovered"]), s(r["recovered"])),
        ("state rebuilt (deltas replayed)", s(c.get("replayed")), s(r.get("replayed"))),
        ("restored and serving (all partitions in /healthz)", s(c["restored"]), s(r["restored"])),
        (f"new input applied ({PROBE} events + closing)", s(c["applied"]), s(r["applied"])),
        ("first output (a final window published)", s(c["first_output"]), s(r["first_output"])),
        ("every window published", s(c["all_output"]), s(r["all_output"])),
        ("worker RSS at the end", f"{c['rss_mb']:,.0f} MB", f"{r['rss_mb']:,.0f} MB"),
        (
            "events counted in 60 s windows",
            f"{c['counted']:,} of {c['expected']:,}",
            f"{r['counted']:,} of {r['expected']:,}",
        ),
    ]
    w0 = max(len(a) for a, _, _ in rows)
    w1 = max(len(b) for _, b, _ in rows)
    lines = [
        f"machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}",
        f"{res['events']:,} events, {res['partitions']} partitions, {res['accounts']} accounts "
        f"x {len(CHANNELS)} channels; first ingest {res['ingest']['seconds']:.1f} s, "
        f"{res['ingest']['dedup_ids']:,.0f} dedup ids, "
        f"{res['ingest']['open_windows']:,.0f} open windows, RSS {res['ingest']['rss_mb']:,.0f} MB",
        f"changelog read by a raw consumer in {r['changelog'][2]:.1f} s; times are from the "
        "worker's process start",
        "",
    ]
    lines += [f"{a:<{w0}}   {b:>{w1}}   {c_}" for a, b, c_ in rows]
    lines.append("")
    lines.append(
        "correctness: "
        + ("OK" if res["correct"] else "MISMATCH")
        + f"; input re-applied after the restart: {r['reprocessed']:,.0f} events"
    )
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=1_000_000)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--accounts", type=int, default=1000)
    ap.add_argument("--span", type=int, default=240, help="event time the data covers, s")
    ap.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--timeout", type=float, default=1800.0, help="per phase, s (default 1800)")
    ap.add_argument("--idle", type=float, default=60.0, help="give up after s without output")
    ap.add_argument("--keep-logs", type=Path, help="copy the worker and broker logs here")
    args = ap.parse_args()
    try:
        with broker_and_processes(args, "engagement-restart-") as (bootstrap, tmp, procs):
            try:
                res = asyncio.run(bench(args, bootstrap, tmp, procs))
            except (TimeoutError, BenchError, broker.BrokerError):
                for log in sorted(tmp.glob("worker-*.log")):
                    tail = log.read_text(errors="replace")[-3000:]
                    print(f"--- {log.name} (tail) ---\n{tail}", file=sys.stderr)
                raise
            finally:
                if args.keep_logs:
                    args.keep_logs.mkdir(parents=True, exist_ok=True)
                    for log in tmp.glob("*.log"):
                        shutil.copy(log, args.keep_logs / log.name)
    except (TimeoutError, BenchError, broker.BrokerError) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    print(table(res))
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=list) + "\n")
    if not res["correct"]:
        for phase in ("clean", "restart"):
            worst = sorted(res[phase]["mismatches"].items(), key=lambda kv: kv[1])[:8]
            if worst:
                print(
                    f"MISMATCH {phase} (windows - produced): "
                    + ", ".join(f"{k} {v:+d}" for k, v in worst)
                    + f"; dead letters by reason: {res[phase]['dead_letters']}"
                )
            if res[phase].get("diagnosis"):
                print(f"  internal topic ends at the kill: {res['ingest']['events_topic_ends']}")
            for line in res[phase].get("diagnosis", []):
                print(f"  {line}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())

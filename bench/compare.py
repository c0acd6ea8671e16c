"""`make bench`: a raw aiokafka loop, Quix Streams, a bare faust agent and the
pipeline on one pre-produced backlog, in interleaved rounds. See bench/README.md."""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer
from harness import KINDS, BenchError, Procs, run_and_report
from kafka import KafkaAdminClient
from restart import read_all
from throughput import make_events, produce, raw_baseline, run_worker

from pipeline.cli import broker
from pipeline.cli.topics import ensure_topics
from pipeline.model.topics import ALL as ALL_TOPICS

HERE = Path(__file__).resolve().parent
QUIX = "quixstreams==3.28.1"
TICK = os.sysconf("SC_CLK_TCK")


def cache_dir() -> Path:
    return Path(
        os.environ.get("ENGAGEMENT_BENCH_CACHE", Path.home() / ".cache" / "engagement-pipeline")
    )


def quix_python() -> Path:
    """A virtualenv with Quix Streams, made once (it is not a dependency of the pipeline)."""
    venv = cache_dir() / "bench-quix"
    python = venv / "bin" / "python"
    stamp = venv / f".{QUIX}"
    if not stamp.exists():
        print(f"installing {QUIX} into {venv} (once)", flush=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(python), "-m", "pip", "install", "-q", QUIX], check=True)
        stamp.touch()
    return python


class Usage:
    """CPU seconds of a process sampled over time, and its peak RSS."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.samples: list[tuple[float, float]] = []  # (perf_counter, cpu seconds)
        self.peak_rss = 0

    def sample(self) -> None:
        try:
            fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
            status = Path(f"/proc/{self.pid}/status").read_text()
        except OSError:
            return  # exited
        self.samples.append((time.perf_counter(), (int(fields[11]) + int(fields[12])) / TICK))
        for line in status.splitlines():
            if line.startswith("VmHWM:"):
                self.peak_rss = int(line.split()[1]) * 1024

    def cpu_between(self, t0: float, t1: float) -> float:
        def at(t: float) -> float:
            before = [c for ts, c in self.samples if ts <= t]
            return before[-1] if before else 0.0

        return at(t1) - at(t0)

    async def watch(self) -> None:
        while True:
            await asyncio.to_thread(self.sample)
            await asyncio.sleep(0.1)


async def lines_of(proc: subprocess.Popen[bytes], seen: dict[str, float]) -> None:
    """`FIRST t` / `DONE t` lines of a contestant (wall-clock seconds)."""
    assert proc.stdout is not None
    while True:
        line = await asyncio.to_thread(proc.stdout.readline)
        if not line:
            return
        word, _, value = line.decode(errors="replace").strip().partition(" ")
        if word in ("FIRST", "DONE"):
            seen.setdefault(word, float(value))


def perf_from_wall(t: float) -> float:
    return t - time.time() + time.perf_counter()


async def topic_bytes(bootstrap: str, names: list[str], partitions: int) -> int:
    """Key + value bytes of whole topics."""
    return sum([(await read_all(bootstrap, name, partitions))[1] for name in names])


async def committed_to_end(bootstrap: str, group: str, ends: dict[tuple[str, int], int]) -> bool:
    """Whether the group's committed offsets reach every input partition's end (waits
    up to 20 s for the last commit)."""
    admin = await asyncio.to_thread(KafkaAdminClient, bootstrap_servers=bootstrap)
    try:
        deadline = time.monotonic() + 20
        while True:
            offsets = await asyncio.to_thread(admin.list_group_offsets, {group: None})
            done = {(tp.topic, tp.partition): om.offset for tp, om in offsets[group].items()}
            if all(done.get(tp, -1) >= end for tp, end in ends.items()):
                return True
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.5)
    finally:
        admin.close()


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def run_contestant(
    name: str,
    cmd: list[str],
    done: Callable[[dict[str, float]], asyncio.Future[float] | Any],
    tmp: Path,
    procs: Procs,
    n: int,
    timeout: float,
) -> dict[str, Any]:
    """Start a contestant; its rate is N / (done - its first record)."""
    with open(tmp / f"{name}.log", "wb") as log:  # the child keeps its own descriptor
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log)
    procs.append(proc)
    usage, seen = Usage(proc.pid), {}
    tasks = [asyncio.create_task(usage.watch()), asyncio.create_task(lines_of(proc, seen))]
    try:
        t_end = await asyncio.wait_for(done(seen), timeout)
        usage.sample()
        if "FIRST" not in seen:
            raise BenchError(f"{name}: no FIRST line")
        t_first = perf_from_wall(seen["FIRST"])
        return {
            "events_per_s": n / (t_end - t_first),
            "startup_s": t_first - t0,
            "cpu_us_per_event": usage.cpu_between(t_first, t_end) / n * 1e6,
            "peak_rss_mb": usage.peak_rss / 2**20,
        }
    finally:
        for t in tasks:
            t.cancel()
        stop(proc)


async def quix_round(
    bootstrap: str,
    topics: list[str],
    tmp: Path,
    procs: Procs,
    n: int,
    timeout: float,
    partitions: int,
) -> dict[str, Any]:
    group = f"quix-{uuid.uuid4().hex[:8]}"
    out = f"{group}-windows"
    await asyncio.to_thread(ensure_topics, bootstrap, [out], partitions)
    cmd = [
        str(quix_python()),
        str(HERE / "contestants" / "quix_count.py"),
        "--broker",
        bootstrap,
        "--group",
        group,
        "--state-dir",
        str(tmp / group),
        "--out",
        out,
        *topics,
    ]
    per_account: Counter[str] = Counter()

    async def done(seen: dict[str, float]) -> float:
        c = AIOKafkaConsumer(out, bootstrap_servers=bootstrap, auto_offset_reset="earliest")
        await c.start()
        try:
            last = time.perf_counter()
            while per_account.total() < n:
                if time.perf_counter() - last > 60:
                    raise BenchError(f"quix: {per_account.total():,} of {n:,} counted, then quiet")
                for recs in (await c.getmany(timeout_ms=200)).values():
                    last = time.perf_counter()
                    for r in recs:
                        per_account[(r.key or b"").decode()] += orjson.loads(r.value)["value"]
            return time.perf_counter()
        finally:
            await c.stop()

    res = await run_contestant("quix", cmd, done, tmp, procs, n, timeout)
    size = await topic_bytes(bootstrap, await changelog_topics(bootstrap, group), partitions)
    res["changelog_bytes_per_event"] = size / n
    res["per_account"] = per_account
    return res


async def changelog_topics(bootstrap: str, marker: str) -> list[str]:
    admin = await asyncio.to_thread(KafkaAdminClient, bootstrap_servers=bootstrap)
    try:
        names = await asyncio.to_thread(admin.list_topics)
    finally:
        admin.close()
    return sorted(t for t in names if marker in t and "changelog" in t)


async def faust_round(
    bootstrap: str, topics: list[str], tmp: Path, procs: Procs, n: int, timeout: float
) -> dict[str, Any]:
    group = f"faust-{uuid.uuid4().hex[:8]}"
    cmd = [
        sys.executable,
        str(HERE / "contestants" / "faust_count.py"),
        "--broker",
        bootstrap,
        "--group",
        group,
        "--data-dir",
        str(tmp / group),
        "--web-port",
        str(broker.free_port()),
        "--events",
        str(n),
        *topics,
    ]

    async def done(seen: dict[str, float]) -> float:
        while "DONE" not in seen:
            await asyncio.sleep(0.05)
        return perf_from_wall(seen["DONE"])

    res = await run_contestant("faust", cmd, done, tmp, procs, n, timeout)
    res["changelog_bytes_per_event"] = 0.0
    return res


async def pipeline_round(
    bootstrap: str,
    prefix: str,
    args: argparse.Namespace,
    tmp: Path,
    procs: Procs,
    closing: Any,
    ends: dict[tuple[str, int], int],
    totals: Counter[tuple[str, str]],
) -> dict[str, Any]:
    first = len(procs)
    sampler: list[Usage] = []

    async def watch() -> None:
        while len(procs) == first:
            await asyncio.sleep(0.01)
        sampler.append(Usage(procs[first].pid))
        await sampler[0].watch()

    task = asyncio.create_task(watch())
    try:
        w, got = await run_worker(bootstrap, prefix, args, tmp, procs, closing, ends)
        sampler[0].sample()
    finally:
        task.cancel()
    clock, usage = w["clock"], sampler[0]
    committed = await committed_to_end(bootstrap, w["group"], ends)
    stop(procs[first])
    changelogs = await changelog_topics(bootstrap, w["group"])
    size = await topic_bytes(bootstrap, changelogs, args.partitions)
    return {
        "events_per_s": w["events_per_s_after_assignment"],
        "startup_s": w["assigned_s"],
        "cpu_us_per_event": usage.cpu_between(clock["ready"], clock["last"]) / args.events * 1e6,
        "peak_rss_mb": usage.peak_rss / 2**20,
        "changelog_bytes_per_event": size / args.events,
        "committed_to_end": committed,
        "exact": got == totals,
    }


async def bench(
    args: argparse.Namespace, bootstrap: str, tmp: Path, procs: Procs
) -> dict[str, Any]:
    prefix = f"bench{uuid.uuid4().hex[:6]}."
    await asyncio.to_thread(
        ensure_topics, bootstrap, [prefix + t for t in ALL_TOPICS], args.partitions
    )
    only = tuple(args.kinds.split(","))
    data, closing, totals = make_events(
        args.events, args.accounts, prefix, 15 * 60 * 1000, only=only
    )
    ends = await produce(bootstrap, data)
    for tp, end in (await produce(bootstrap, closing)).items():
        ends[tp] = max(ends.get(tp, 0), end)
    n, topics = args.events, sorted({prefix + KINDS[k][0] for k in only})
    by_account: Counter[str] = Counter()
    for (account, _), v in totals.items():
        by_account[account] += v
    print(f"produced {n:,} events (+{len(closing)} closing) on {len(topics)} topics", flush=True)
    rounds: list[dict[str, Any]] = []
    for i in range(args.rounds):
        r: dict[str, Any] = {}
        r["raw"] = await raw_baseline(bootstrap, topics, n)
        if not args.no_quix:
            q = await quix_round(bootstrap, topics, tmp, procs, n, args.timeout, args.partitions)
            q["exact"] = q.pop("per_account") == by_account
            r["quix"] = q
        r["faust"] = await faust_round(bootstrap, topics, tmp, procs, n, args.timeout)
        # The pipeline's internal and output topics are named by its topic prefix:
        # each round reads the same backlog, produced again (not timed) under its own.
        own = f"{prefix}r{i}."
        await asyncio.to_thread(
            ensure_topics, bootstrap, [own + t for t in ALL_TOPICS], args.partitions
        )
        copy, copy_closing, _ = make_events(
            args.events, args.accounts, own, 15 * 60 * 1000, only=only
        )
        copy_ends = await produce(bootstrap, copy)
        for tp, end in (await produce(bootstrap, copy_closing)).items():
            copy_ends[tp] = max(copy_ends.get(tp, 0), end)
        r["pipeline"] = await pipeline_round(
            bootstrap, own, args, tmp, procs, copy_closing, copy_ends, totals
        )
        rounds.append(r)
        print(
            f"round {i + 1}: " + ", ".join(f"{k} {v['events_per_s']:,.0f}" for k, v in r.items()),
            flush=True,
        )
    m = {"cpus": os.cpu_count(), "platform": platform.platform(), "python": sys.version.split()[0]}
    return {
        "machine": m,
        "events": n,
        "kinds": "/".join(only),
        "partitions": args.partitions,
        "accounts": args.accounts,
        "rounds": rounds,
    }


COLUMNS = (  # (result key, heading, format of the median)
    ("cpu_us_per_event", "CPU us/ev", "{:.1f}"),
    ("peak_rss_mb", "peak RSS", "{:.0f} MB"),
    ("changelog_bytes_per_event", "changelog B/ev", "{:.1f}"),
    ("startup_s", "start-up", "{:.1f} s"),
)


def median_of(rounds: list[dict[str, Any]], name: str, key: str, fmt: str) -> str:
    if key not in rounds[0][name]:
        return "-"
    return fmt.format(statistics.median(r[name][key] for r in rounds))


def ratio(rounds: list[dict[str, Any]], name: str, to: str) -> str:
    if to not in rounds[0]:
        return "-"
    return (
        f"{statistics.median(r[name]['events_per_s'] / r[to]['events_per_s'] for r in rounds):.3f}"
    )


def summary(res: dict[str, Any]) -> tuple[str, bool]:
    rounds, m = res["rounds"], res["machine"]
    heads = ["events/s median", "range", "/raw", "/quix", *(h for _, h, _ in COLUMNS)]
    lines = [
        f"machine: {m['cpus']} CPUs, {m['platform']}, Python {m['python']}",
        f"{res['events']:,} {res['kinds']} events, {res['partitions']} partitions, "
        f"{res['accounts']} accounts, {len(rounds)} rounds "
        "(ratios within each round, then their median)",
        f"{'':<9}" + "".join(f"{h:>16}" for h in heads),
    ]
    for name in rounds[0]:
        rate = [r[name]["events_per_s"] for r in rounds]
        cells = [
            f"{statistics.median(rate):,.0f}",
            f"{min(rate):,.0f}-{max(rate):,.0f}",
            ratio(rounds, name, "raw"),
            ratio(rounds, name, "quix"),
            *(median_of(rounds, name, k, f) for k, _, f in COLUMNS),
        ]
        lines.append(f"{name:<9}" + "".join(f"{c:>16}" for c in cells))
    ok = True
    for name in ("quix", "pipeline"):
        if name not in rounds[0]:
            continue
        exact = all(r[name]["exact"] for r in rounds)
        line = f"{name}: totals exact in every round: {exact}"
        ok &= exact
        if name == "pipeline":
            committed = all(r[name]["committed_to_end"] for r in rounds)
            ok &= committed
            line += f"; committed offsets at the end of every input partition: {committed}"
        lines.append(line)
    return "\n".join(lines), ok


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--events", type=int, default=200_000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--partitions", type=int, default=4)
    ap.add_argument("--accounts", type=int, default=50)
    ap.add_argument("--broker", help="kafka://host:port (default: start the embedded broker)")
    ap.add_argument("--no-quix", action="store_true", help="leave Quix Streams out")
    ap.add_argument(
        "--kinds",
        default="like,comment,share,mention",
        help="kinds of the events (each on its own topic), comma-separated",
    )
    ap.add_argument("--json", type=Path, help="also write the results to this file")
    ap.add_argument("--timeout", type=float, default=600.0, help="seconds per contestant")
    args = ap.parse_args()
    # what run_worker reads
    args.lateness, args.close_after_drain, args.idle = None, False, 60.0
    return run_and_report(args, "engagement-bench-", bench, summary)


if __name__ == "__main__":
    sys.exit(main())

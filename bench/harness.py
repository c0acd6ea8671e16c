"""What the benchmarks share: the synthetic data's shape, a fast producer, and the
broker and processes they start and always stop."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.cli import broker
from pipeline.model.topics import INTERACTIONS

# kind -> (its input topic, its share of the events in %)
KINDS = {
    kind: (INTERACTIONS[kind], share)
    for kind, share in (("like", 60), ("comment", 20), ("share", 10), ("mention", 10))
}
CHANNELS = ("instagram", "x", "facebook", "tiktok")
BASE_MS = 1_714_521_600_000  # 2024-05-01T00:00:00Z
Msg = tuple[str, bytes, bytes]  # topic, key, value
Procs = list[subprocess.Popen[bytes]]


def event_msg(
    rng: random.Random, prefix: str, event_id: str, kind: str, account: str, channel: str, ts: int
) -> Msg:
    """One synthetic event of the benchmarks' data, to its input topic, keyed by
    account: a random actor, and a post of the account unless a mention."""
    ev = {
        "event_id": event_id,
        "kind": kind,
        "channel": channel,
        "account_id": account,
        "ts": ts,
        "actor_id": f"user-{rng.randrange(100_000)}",
        "priority": "normal",
    }
    if kind != "mention":
        ev["post_id"] = f"{account}-post-{rng.randrange(40)}"
    return (prefix + KINDS[kind][0], account.encode(), orjson.dumps(ev))


class BenchError(RuntimeError):
    pass


def producer(bootstrap: str) -> AIOKafkaProducer:
    """Large batches and leader-only acks: producing is setup, not what is measured."""
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        linger_ms=20,
        acks=1,
        max_batch_size=256 * 1024,
        max_request_size=4 << 20,
    )


def worker_environment(
    bootstrap: str, app_id: str, prefix: str, partitions: int, data_dir: Path
) -> tuple[dict[str, str], int]:
    """The environment of a worker subprocess (none of the caller's ENGAGEMENT_*
    settings leak in) and its web port."""
    port = broker.free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENGAGEMENT_")}
    env.update(
        ENGAGEMENT_BROKER=f"kafka://{bootstrap}",
        ENGAGEMENT_WEB_PORT=str(port),
        ENGAGEMENT_APP_ID=app_id,
        ENGAGEMENT_TOPIC_PREFIX=prefix,
        ENGAGEMENT_PARTITIONS=str(partitions),
        ENGAGEMENT_DATA_DIR=str(data_dir),
    )
    return env, port


@contextlib.contextmanager
def broker_and_processes(
    args: argparse.Namespace, prefix: str
) -> Iterator[tuple[str, Path, Procs]]:
    """-> (bootstrap, a temporary directory, the list to register started processes
    in). Starts the embedded broker unless `args.broker` names one; on the way out
    stops every process, the workers first and the broker last."""
    signal.signal(signal.SIGTERM, signal.default_int_handler)  # clean up as on Ctrl-C
    procs: Procs = []
    port = broker.free_port()
    bootstrap = args.broker.removeprefix("kafka://") if args.broker else f"127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix=prefix) as tmp:
        try:
            if not args.broker:
                procs.append(broker.start(port, log_path=Path(tmp) / "broker.log"))
            yield bootstrap, Path(tmp), procs
        finally:
            for p in reversed(procs):
                broker.stop(p, timeout_s=15)


def run_and_report(
    args: argparse.Namespace,
    prefix: str,
    bench: Callable[[argparse.Namespace, str, Path, Procs], Coroutine[Any, Any, dict[str, Any]]],
    summary: Callable[[dict[str, Any]], tuple[str, bool]],
) -> int:
    """Run `bench` with a broker and its processes, print its summary and write
    `--json`. Exit code: 0, 1 when a check failed, 2 when the run failed, 130 when
    interrupted."""
    try:
        with broker_and_processes(args, prefix) as (bootstrap, tmp, procs):
            res = asyncio.run(bench(args, bootstrap, tmp, procs))
    except (TimeoutError, BenchError, broker.BrokerError, subprocess.CalledProcessError) as exc:
        print(f"benchmark failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    text, ok = summary(res)
    print(text)
    if args.json:
        args.json.write_text(json.dumps(res, indent=2, default=str) + "\n")
    return 0 if ok else 1

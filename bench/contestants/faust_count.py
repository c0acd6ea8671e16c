"""A bare faust agent: orjson.loads and a dict count by (account, kind), no table,
no windows. Run by bench/compare.py with the pipeline's faust settings for
start-up; prints `FIRST <unix seconds>` at its first record and `DONE <unix
seconds>` once it has counted N events."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

import faust
import orjson


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--data-dir", required=True)
    ap.add_argument("--web-port", type=int, required=True)
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("topics", nargs="+")
    args = ap.parse_args()
    app = faust.App(
        args.group,
        broker=f"kafka://{args.broker}",
        store="memory://",
        datadir=args.data_dir,
        web_port=args.web_port,
        key_serializer="raw",
        value_serializer="raw",
        consumer_auto_offset_reset="earliest",
        broker_session_timeout=6,
        broker_rebalance_timeout=6,
        broker_heartbeat_interval=1,
        topic_allow_declare=False,
    )
    counts: dict[tuple[str, str], int] = {}
    seen = [0]

    @app.agent(app.topic(*args.topics))
    async def count(stream: Any) -> None:
        async for value in stream:
            if not seen[0]:
                print(f"FIRST {time.time():.6f}", flush=True)
            e = orjson.loads(value)
            k = (e["account_id"], e["kind"])
            counts[k] = counts.get(k, 0) + 1
            seen[0] += 1
            if seen[0] == args.events:
                print(f"DONE {time.time():.6f}", flush=True)

    worker = faust.Worker(app, loglevel="warning", quiet=True, redirect_stdouts=False)
    worker.spinner = None  # as the pipeline's worker (agents/worker.py)
    worker.execute_from_commandline()


if __name__ == "__main__":
    sys.exit(main())

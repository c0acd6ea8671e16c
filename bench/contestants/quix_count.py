"""Quix Streams: a 1-minute tumbling count per account over the raw topics, final
windows to an output topic. Run by bench/compare.py in its own environment (Quix
Streams is not a dependency of the pipeline). Prints the wall time of its first
record as `FIRST <unix seconds>`."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from quixstreams import Application
from quixstreams.models.topics.manager import TopicManager


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--broker", required=True)
    ap.add_argument("--group", required=True)
    ap.add_argument("--state-dir", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("topics", nargs="+")
    args = ap.parse_args()

    # The embedded broker's DescribeConfigs omits retention.ms, which Quix Streams
    # reads to configure its changelog topics: take it as unlimited.
    derive = TopicManager.derive_topic_config.__func__  # type: ignore[attr-defined]

    def derive_topic_config(cls: Any, topics: Any) -> Any:
        for t in topics:
            t.broker_config.extra_config.setdefault("retention.ms", "-1")
        return derive(cls, topics)

    TopicManager.derive_topic_config = classmethod(derive_topic_config)  # type: ignore[assignment]

    app = Application(
        broker_address=args.broker,
        consumer_group=args.group,
        auto_offset_reset="earliest",
        state_dir=args.state_dir,
        loglevel="WARNING",
    )

    def event_time(value: Any, headers: Any, timestamp: float, kind: Any) -> int:
        return int(value["ts"])

    sdf = None
    for name in args.topics:
        topic = app.topic(name, value_deserializer="json", timestamp_extractor=event_time)
        frame = app.dataframe(topic)
        sdf = frame if sdf is None else sdf.concat(frame)
    assert sdf is not None
    first: list[float] = []

    def mark(value: Any) -> None:
        if not first:
            first.append(time.time())
            print(f"FIRST {first[0]:.6f}", flush=True)

    sdf = sdf.update(mark)
    # the pipeline's allowed lateness plus grace (10 + 5 s): the topics' records
    # interleave seconds apart in event time, and a late record would be dropped
    sdf = sdf.tumbling_window(60_000, grace_ms=15_000).count().final()
    sdf.to_topic(app.topic(args.out, value_serializer="json"))
    app.run()


if __name__ == "__main__":
    sys.exit(main())

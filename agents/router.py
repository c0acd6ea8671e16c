"""Router agent: validate raw messages, dead-letter the bad ones, and forward valid
events in batches to the internal events topic, partitioned by account.

Repartitioning makes results correct even when producers do not key by
account_id. Events are acked only after their batch is handed to the producer,
and faust flushes the producer before it commits offsets (at-least-once; the
aggregator's dedup makes the redelivery harmless).
"""

from __future__ import annotations

import time
import zlib
from collections import Counter
from typing import TYPE_CHECKING, Any

from pipeline import deadletter, wire
from pipeline.events import Interaction, Invalid
from pipeline.validation import validate

if TYPE_CHECKING:
    from agents.app import Runtime


def partition_for(account_id: str, partitions: int) -> int:
    """Stable across processes and languages (crc32, unlike Python's hash())."""
    return zlib.crc32(account_id.encode()) % partitions


def register(rt: Runtime) -> None:
    s = rt.settings
    topics = rt.app.topic(*rt.raw_topics, key_serializer="raw", value_serializer="raw")
    max_bytes, max_future_ms = s.max_message_bytes, s.max_future_s * 1000
    parts = s.partitions
    families = rt.raw_topics
    invalid_metric = rt.metrics.invalid

    async def route(stream: Any) -> None:
        async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
            batches: dict[int, list[wire.Row]] = {}
            rejected: Counter[str] = Counter()
            future_limit = int(time.time() * 1000) + max_future_ms
            for event in events:
                msg = event.message
                result = validate(msg.value, kind_family=families[msg.topic], max_bytes=max_bytes)
                if isinstance(result, Invalid):
                    pass
                elif result.ts_ms > future_limit:
                    result = Invalid("future_ts", "ts: more than limits.max_future_s ahead")
                else:
                    src = [msg.topic, msg.partition, msg.offset, int(msg.timestamp * 1000)]
                    if isinstance(result, Interaction):
                        row = wire.interaction_row(result, src)
                    else:
                        row = wire.exposure_row(result, src)
                    p = partition_for(result.account_id, parts)
                    batches.setdefault(p, []).append(row)
                    continue
                rejected[result.reason] += 1
                await rt.deadletter_topic.send(
                    key=msg.key,
                    value=deadletter.record(
                        result, msg.topic, msg.partition, msg.offset, msg.key, msg.value
                    ),
                )
            for p, rows in batches.items():
                await rt.events_topic.send(partition=p, value=wire.encode_batch(rows))
            for reason, n in rejected.items():
                invalid_metric.labels(reason).inc(n)

    rt.app.agent(topics, name="engagement.router")(route)

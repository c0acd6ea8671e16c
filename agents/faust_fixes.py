"""Fixes for faust-streaming 0.15.3 / aiokafka 0.14 behaviour that loses records.

Records lost in a rebalance. When partitions are revoked, faust clears every
agent's buffer of fetched records and then relies on "seek to committed offsets"
to fetch them again. aiokafka's `seek_to_committed` only seeks where the
committed offset is above 0. A partition nobody has committed yet keeps its
fetch position past the cleared records, and those records are never processed.
The two-worker and kill -9 tests caught this as a missing event (a record fetched
just before a rebalance) and as a partition stuck with lag 1 (a record that
arrived during one). The fix seeks such partitions to the start of the log, so
they are read again, and the pipeline's dedup makes the repeat harmless.

Partition counts unknown to all but one member. faust's `topic_partitions` reads
aiokafka's coordinator metadata snapshot, which only the group leader fills. On
every other member it answers None, so a worker that is not the leader never
learned its input partitions and held its watermark for good (the two-worker
`replay --settle` test caught this). The fix answers from the consumer's cluster
metadata, which every member has for the topics it subscribes to.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from faust.transport.drivers import aiokafka as faust_aiokafka


async def seek_to_committed_or_beginning(consumer: Any) -> Mapping[Any, int | None]:
    """Seek to the committed offsets, and to the log start where none is committed."""
    committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
    never = [tp for tp, offset in committed.items() if not offset]
    if never:
        await consumer.seek_to_beginning(*never)
    return committed


async def _seek_to_committed(self: Any) -> Mapping[Any, int | None]:
    return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer())  # type: ignore[no-any-return]


def _topic_partitions(self: Any, topic: str) -> int | None:
    if self._consumer is None:
        return None
    partitions = self._consumer.partitions_for_topic(topic)
    return len(partitions) if partitions else None


def install() -> None:
    """Patch faust's consumer thread (idempotent)."""
    thread = faust_aiokafka.AIOKafkaConsumerThread
    thread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign,assignment]
    thread.topic_partitions = _topic_partitions  # type: ignore[method-assign]

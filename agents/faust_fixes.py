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

State lost in a restart on the embedded broker. Tansu 0.6.0 answers ListOffsets
(latest) with the base offset of the partition's last record batch plus one, not
with the log end: when the producer put several records in that batch, the log
end is under-reported by all but one of them (the high watermark in its fetch
responses is right). faust's recovery reads each changelog partition up to that
end and stops; the partition that finishes last drops the rest of its batch, so
the restart bench restored a state short of the last delta (one router batch of
events). The fix takes, per partition, the larger of ListOffsets and the high
watermark of a fetch at the last offset it reports; on Apache Kafka both agree.

Records lost when a worker starts on a backlog. At the end of recovery faust
resumes fetching the input partitions, then awaits the seek to their committed
offsets, then resumes flow control, which clears every agent's buffer. Records
fetched while the seek was in flight were in those buffers and were cleared;
the fetch loop, still going through the same fetch, moved its read offsets past
them, so when the seek made the consumer fetch them again they were dropped as
already read. The router never forwarded them, or the aggregator never applied
an internal message and then skipped it for good as older than the next one it
applied. A slow seek (a busy broker, or an event loop held by a partition's
rebuild) made it happen: a worker restarted on 20,000 events with a 3 s seek
counted 2 too few, and the restart bench and the kill -9 test lost single
messages. The fix seeks first, clears the buffers, and only then resumes the
input partitions, so nothing is fetched before the seek.

Records consumed for partitions faust had paused. faust hands aiokafka its live
set of active partitions for each fetch, and aiokafka reads an empty set as
"every partition". When a pause empties that set while a fetch waits (at the end
of recovery every partition is paused for a moment), the fetch returns, and
consumes, the records of paused partitions too, and faust then drops them as not
active: a partition stopped being read ("none read yet"), or its later records
made faust treat the dropped ones as a gap and commit past them. With the seek now
ahead of the resume, nothing re-read them, and two crash tests on a loaded machine
lost events on both brokers. The fix fetches for a copy of the set taken when the
fetch is asked for, and fetches nothing when it is empty.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Iterable, Mapping
from typing import Any

from aiokafka.protocol.fetch import FetchRequest
from faust.tables.recovery import Recovery
from faust.transport.drivers import aiokafka as faust_aiokafka

# faust's own, kept to pin it in a test: the replacement below follows it step by step
FAUST_ON_RECOVERY_COMPLETED = Recovery.on_recovery_completed
FAUST_GETMANY = faust_aiokafka.AIOKafkaConsumerThread.getmany


async def seek_to_committed_or_beginning(consumer: Any) -> Mapping[Any, int | None]:
    """Seek to the committed offsets, and to the log start where none is committed."""
    committed: Mapping[Any, int | None] = await consumer.seek_to_committed()
    never = [tp for tp, offset in committed.items() if not offset]
    if never:
        await consumer.seek_to_beginning(*never)
    return committed


async def _seek_to_committed(self: Any) -> Mapping[Any, int | None]:
    return await self.call_thread(seek_to_committed_or_beginning, self._ensure_consumer())  # type: ignore[no-any-return]


async def log_end_offsets(consumer: Any, tps: Iterable[Any]) -> dict[Any, int]:
    """The next offset to be written in each partition (aiokafka consumer, any broker)."""
    ends: dict[Any, int] = dict(await consumer.end_offsets(list(tps)))
    client = consumer._client
    by_node: dict[int, dict[str, list[tuple[int, int, int]]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for tp, end in ends.items():
        node = client.cluster.leader_for_partition(tp)
        if end and node is not None and node >= 0:
            by_node[node][tp.topic].append((tp.partition, end - 1, 1))
    index = {(tp.topic, tp.partition): tp for tp in ends}
    for node, topics in by_node.items():
        # min_bytes 1 (with 0 the embedded broker answers no partitions): the record at
        # end - 1 exists, so the answer comes at once; read_uncommitted like end_offsets
        response = await client.send(node, FetchRequest(100, 1, 1, 0, list(topics.items())))
        for topic, partitions in response.topics:
            for partition, error_code, highwater, *_ in partitions:
                tp = index[(topic, partition)]
                if error_code == 0 and highwater > ends[tp]:
                    ends[tp] = highwater
    return ends


async def _highwaters(self: Any, partitions: list[Any]) -> Mapping[Any, int]:
    consumer = self._ensure_consumer()
    if self.consumer.in_transaction:  # faust's own answer for transactions
        return {tp: consumer.last_stable_offset(tp) for tp in partitions}
    return await log_end_offsets(consumer, partitions)


def _topic_partitions(self: Any, topic: str) -> int | None:
    if self._consumer is None:
        return None
    partitions = self._consumer.partitions_for_topic(topic)
    return len(partitions) if partitions else None


async def _on_recovery_completed(self: Any, generation_id: int = 0) -> None:
    """faust's `Recovery.on_recovery_completed` with its last steps reordered: seek,
    clear the buffers, and only then fetch the input partitions."""
    app, consumer = self.app, self.app.consumer
    self.log.info("Restore complete!")
    await app.on_rebalance_complete.send()
    self._set_recovery_ended()
    callbacks = [
        asyncio.ensure_future(
            table.on_recovery_completed(
                self.actives_for_table[table], self.standbys_for_table[table]
            )
        )
        for table in self.tables.values()
    ]
    if callbacks:
        await asyncio.wait(callbacks)
    assignment = consumer.assignment()
    if app.consumer_generation_id != generation_id:
        self.log.warning(
            f"Recovery rebalancing again app id {app.consumer_generation_id} param {generation_id}"
        )
        return
    if assignment:
        self.log.info("Seek stream partitions to committed offsets.")
        await self._wait(consumer.perform_seek(), timeout=app.conf.broker_request_timeout)
    app.flow_control.resume()  # clears the buffers, which hold no input record yet
    consumer.resume_partitions({tp for tp in assignment if not self._is_changelog_tp(tp)})
    self.completed.set()
    self.log.dev("Resume stream partitions")
    consumer.resume_flow()
    await app._fetcher.maybe_start()
    self.tables.on_actives_ready()
    if not app.assignor.assigned_standbys():
        self.tables.on_standbys_ready()
    app.on_rebalance_end()
    self.log.info("Worker ready")


async def _getmany(self: Any, active_partitions: Any, timeout: float) -> Mapping[Any, Any]:
    if active_partitions is not None:
        active_partitions = frozenset(active_partitions)
        if not active_partitions:  # to aiokafka an empty set would mean every partition
            return {}
    consumer = self._ensure_consumer()
    return await self.call_thread(  # type: ignore[no-any-return]
        self._fetch_records,
        consumer,
        active_partitions,
        timeout=timeout,
        max_records=consumer._max_poll_records,
    )


def install() -> None:
    """Patch faust's consumer thread and recovery (idempotent)."""
    Recovery.on_recovery_completed = _on_recovery_completed  # type: ignore[method-assign]
    thread = faust_aiokafka.AIOKafkaConsumerThread
    thread.seek_to_committed = _seek_to_committed  # type: ignore[method-assign,assignment]
    thread.topic_partitions = _topic_partitions  # type: ignore[method-assign]
    thread._highwaters = _highwaters  # type: ignore[method-assign]
    thread.getmany = _getmany  # type: ignore[method-assign]

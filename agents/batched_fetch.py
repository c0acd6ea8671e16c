"""Whole fetches for the raw input topics: one faust message per partition and fetch.

faust hands every fetched record to the streams one at a time, and each record
pays for a task group in `Consumer._drain_messages` (`wait_first`), the
conductor's lock, a queue hand-off, the stream's sensors and an ack through two
locks: on 2 cores that machinery, not our code, set the worker's ceiling. For the
topics named here (the raw inputs), the drain loop below delivers instead one
`FetchedRecords` message per partition and fetch, whose value is the fetch's
list of aiokafka records, in offset order. Everything else (the internal topic,
changelogs, recovery) takes faust's own path, message by message, unchanged.

What stays faust's: the fetch itself (`_wait_next_records`, with its active
partitions, the pause and the flow control), the conductor and the agent's
stream, rebalances (flow suspended, buffers cleared, `stream_wait_empty`, a
producer flush before each commit), and the commit of acked offsets. One message
covers an offset range: its ack marks every offset from the first it covers to
its last as acked, as acking each record would, so an offset is committed only
once the router has handed all of the message's rows to the producer. Offsets
no record holds (control records, compaction) between two fetches are covered as
faust's gap logic covers them. The router acks in order (concurrency 1).

The private names this relies on are pinned in tests/unit/agents/test_batched_fetch.py:
faust's `_drain_messages`, `getmany` and `ack` are compared with the sources they
were read from, so an upgrade that changes them fails a test instead of losing data.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any, cast

from faust.transport import consumer as faust_consumer
from faust.types import TP, ConsumerMessage
from faust.types.tuples import ack_lock
from mode.utils.futures import notify

# faust's own, kept to pin them in a test: the replacement follows them step by step
FAUST_DRAIN_MESSAGES = faust_consumer.Consumer._drain_messages
FAUST_GETMANY = faust_consumer.Consumer.getmany
FAUST_ACK = faust_consumer.Consumer.ack
_BATCHED = "_engagement_batched_topics"


class FetchedRecords(ConsumerMessage):
    """The records of one partition from one fetch, as one faust message.

    `offset` is the last record's, `first_offset` the first offset the message
    answers for; `value` is the list of aiokafka ConsumerRecords (`offset`,
    `timestamp` in ms, `key`, `value`)."""

    __slots__ = ("first_offset",)
    first_offset: int

    @property
    def records(self) -> list[Any]:
        return cast(list[Any], self.value)

    @classmethod
    def of(cls, tp: TP, records: list[Any], generation_id: int) -> FetchedRecords:
        last = records[-1]
        ts = last.timestamp / 1000.0 if last.timestamp is not None else None
        message = cls(
            tp.topic,
            tp.partition,
            last.offset,
            cast(float, ts),
            last.timestamp_type,
            None,
            None,
            cast(Any, records),
            None,
            0,
            0,
            tp,
            generation_id=generation_id,
        )
        message.first_offset = records[0].offset
        return message

    def on_final_ack(self, consumer: Any) -> bool:
        return ack_range(consumer, self)


def ack_range(consumer: Any, message: FetchedRecords) -> bool:
    """faust's `Consumer.ack`, for every offset from `first_offset` to `offset`."""
    with ack_lock:
        if message.acked:
            return False
        message.acked = True
        tp = message.tp
        consumer._unacked_messages.discard(message)
        try:
            if not consumer.app.topics.acks_enabled_for(message.topic):
                return False
            committed = consumer._committed_offset[tp]
            start = message.first_offset
            if committed is not None:
                start = max(start, committed)
            acked_index = consumer._acked_index[tp]
            new = [o for o in range(start, message.offset + 1) if o not in acked_index]
            acked_index.update(new)
            consumer._acked[tp].extend(new)
            consumer._n_acked += len(new)
            return bool(new)
        finally:
            notify(consumer._waiting_for_ack)


def batch_topics(app: Any, topics: Iterable[str]) -> None:
    """Deliver the records of these topics a fetch at a time (see the module doc)."""
    setattr(app, _BATCHED, frozenset(topics))


def batched_topics(app: Any) -> frozenset[str]:
    return getattr(app, _BATCHED, frozenset())


async def _fetches(self: Any, timeout: float) -> AsyncIterator[tuple[TP, Any]]:
    """faust's `Consumer.getmany`, yielding a `FetchedRecords` per partition of a
    batched topic and faust's own message per record of any other topic."""
    records, active_partitions = await self._wait_next_records(timeout)
    generation_id = self.app.consumer_generation_id
    if records is None or self.should_stop:
        return
    batched = batched_topics(self.app)
    to_message = self._to_message
    if self.flow_active:
        for tp, fetched in records.items():
            if not self.flow_active or self.app.consumer_generation_id != generation_id:
                break
            if not (
                active_partitions is None
                or tp in active_partitions
                or tp in self._buffered_partitions
            ):
                continue
            self.app.monitor.track_tp_end_offset(tp, self.highwater(tp))
            if tp.topic in batched:
                if fetched:
                    yield tp, FetchedRecords.of(tp, fetched, generation_id)
                continue
            for record in fetched:
                if not self.flow_active or self.app.consumer_generation_id != generation_id:
                    break
                yield tp, to_message(tp, record)
    else:
        try:
            await self.perform_seek()
        except Exception as ex:
            self.log.warning(f"exception performing seek when flow not active {ex}")


async def _drain_messages(self: Any, fetcher: Any) -> None:  # pragma: no cover
    """faust's `Consumer._drain_messages` over `_fetches`: a `FetchedRecords` is
    cut to the records not read yet, and answers for the gap before it."""
    callback = self.callback
    consumer_should_stop = self._stopped.is_set
    fetcher_should_stop = fetcher._stopped.is_set
    get_read_offset = self._read_offset.__getitem__
    set_read_offset = self._read_offset.__setitem__
    flag_consumer_fetching = faust_consumer.CONSUMER_FETCHING
    set_flag, unset_flag = self.diag.set_flag, self.diag.unset_flag
    commit_every = self._commit_every
    acks_enabled_for = self.app.topics.acks_enabled_for
    yield_every, num_since_yield = 100, 0
    sleep = asyncio.sleep
    try:
        while not (consumer_should_stop() or fetcher_should_stop()):
            set_flag(flag_consumer_fetching)
            ait = _fetches(self, timeout=1.0)
            await self.sleep(0)
            if not self.should_stop:
                async for tp, message in ait:
                    num_since_yield += 1
                    if num_since_yield > yield_every:
                        await sleep(0)
                        num_since_yield = 0
                    r_offset = get_read_offset(tp)
                    if isinstance(message, FetchedRecords):
                        fetched = message.records
                        if r_offset is not None and fetched[0].offset < r_offset:
                            fetched = [r for r in fetched if r.offset >= r_offset]
                            if not fetched:
                                continue
                            message.value = cast(Any, fetched)
                        first = fetched[0].offset
                        gap = first - (r_offset or 0)
                        # faust's gap rule: offsets between the last read and this
                        # fetch hold no record; the message answers for them
                        message.first_offset = r_offset + 1 if gap > 1 and r_offset else first
                    else:
                        offset = message.offset
                        if not (r_offset is None or offset >= r_offset):
                            continue
                        gap = offset - (r_offset or 0)
                        if gap > 1 and r_offset and acks_enabled_for(message.topic):
                            await self._add_gap(tp, r_offset + 1, offset)
                    if commit_every is not None and self._n_acked >= commit_every:
                        self._n_acked = 0
                        await self.commit()
                    await self.wait_first(callback(message), self.suspend_flow.wait())
                    set_read_offset(tp, message.offset)
                unset_flag(flag_consumer_fetching)
    except self.consumer_stopped_errors:
        if self.transport.app.should_stop:
            self.log.info("Broker stopped consumer, shutting down...")
            return
        raise
    except asyncio.CancelledError:
        if self.transport.app.should_stop:
            self.log.info("Consumer shutting down for user cancel.")
            return
        raise
    except Exception as exc:
        self.log.exception("Drain messages raised: %r", exc)
        raise
    finally:
        unset_flag(flag_consumer_fetching)


def install() -> None:
    """Replace faust's drain loop (idempotent); topics not named by `batch_topics`
    go through it message by message, as before."""
    faust_consumer.Consumer._drain_messages = _drain_messages  # type: ignore[method-assign]

"""Whole fetches for the raw topics: the offsets a message answers for, what the
drain loop delivers, and the faust internals it follows (pinned)."""

from __future__ import annotations

import asyncio
import hashlib
import inspect
from collections import defaultdict
from types import SimpleNamespace
from typing import Any

import pytest
from aiokafka.structs import ConsumerRecord
from faust.streams import Stream
from faust.transport import consumer as faust_consumer
from faust.types import TP
from intervaltree import IntervalTree

from agents import batched_fetch
from agents.batched_fetch import FetchedRecords

RAW, OTHER = TP("social.likes", 0), TP("engagement.events", 1)


def records(tp: TP, offsets: range | list[int]) -> list[Any]:
    return [
        ConsumerRecord(
            tp.topic, tp.partition, o, 1_700_000_000_000 + o, 0, b"k", b"v%d" % o, None, 1, 2, ()
        )
        for o in offsets
    ]


def bookkeeping(committed: int | None = None, acks: bool = True) -> Any:
    """The part of a faust Consumer that acks and `_new_offset` read and write."""
    c = SimpleNamespace(
        _acked=defaultdict(list),
        _acked_index=defaultdict(set),
        _gap=defaultdict(IntervalTree),
        _committed_offset=defaultdict(lambda: None),
        _n_acked=0,
        _unacked_messages=set(),
        _waiting_for_ack=None,
        app=SimpleNamespace(topics=SimpleNamespace(acks_enabled_for=lambda topic: acks)),
    )
    c._committed_offset[RAW] = committed
    return c


def new_offset(c: Any) -> int | None:
    return faust_consumer.Consumer._new_offset(c, RAW)  # type: ignore[arg-type]


def test_a_fetch_answers_for_every_offset_it_covers_and_faust_commits_past_it() -> None:
    c = bookkeeping(committed=10)
    m = FetchedRecords.of(RAW, records(RAW, range(10, 20)), generation_id=1)
    assert (m.first_offset, m.offset, len(m.value)) == (10, 19, 10)
    c._unacked_messages.add(m)
    assert m.on_final_ack(c) is True
    assert c._n_acked == 10 and m not in c._unacked_messages
    assert new_offset(c) == 20  # faust's own arithmetic commits all ten
    assert m.on_final_ack(c) is False  # a second ack counts nothing
    assert c._n_acked == 10


def test_a_fetch_after_a_gap_answers_for_the_gap() -> None:
    c = bookkeeping(committed=20)
    m = FetchedRecords.of(RAW, records(RAW, [25, 26]), generation_id=1)
    m.first_offset = 20  # as the drain loop sets it after offsets 20-24 held no record
    m.on_final_ack(c)
    assert new_offset(c) == 27


def test_offsets_below_the_committed_one_are_not_acked_again() -> None:
    c = bookkeeping(committed=17)
    m = FetchedRecords.of(RAW, records(RAW, range(10, 20)), generation_id=1)
    m.on_final_ack(c)
    assert sorted(c._acked[RAW]) == [17, 18, 19] and c._n_acked == 3
    assert new_offset(c) == 20


def test_a_fetch_not_acked_holds_the_commit() -> None:
    c = bookkeeping(committed=2)
    first = FetchedRecords.of(RAW, records(RAW, range(2, 5)), generation_id=1)
    second = FetchedRecords.of(RAW, records(RAW, range(5, 9)), generation_id=1)
    second.on_final_ack(c)
    assert new_offset(c) is None  # 2-4 not acked: nothing may be committed
    first.on_final_ack(c)
    assert new_offset(c) == 9


def test_topics_without_acks_ack_nothing() -> None:
    c = bookkeeping(committed=0, acks=False)
    m = FetchedRecords.of(RAW, records(RAW, range(0, 5)), generation_id=1)
    c._unacked_messages.add(m)
    assert m.on_final_ack(c) is False and not c._acked[RAW] and not c._unacked_messages


class FakeConsumer:
    """What faust's Consumer offers the drain loop and the fetch, with scripted fetches."""

    def __init__(self, fetches: list[dict[TP, list[Any]]], active: set[TP] | None = None) -> None:
        self.fetches = list(fetches)
        self.active = active
        self.delivered: list[Any] = []
        self.gaps: list[tuple[TP, int, int]] = []
        self.seeks = 0
        self._stopped = asyncio.Event()
        self._read_offset: dict[TP, int | None] = defaultdict(lambda: None)
        self._commit_every = None
        self._n_acked = 0
        self._buffered_partitions: set[TP] = set()
        self.flow_active = True
        self.should_stop = False
        self.consumer_stopped_errors = ()
        self.diag = SimpleNamespace(set_flag=lambda f: None, unset_flag=lambda f: None)
        self.suspend_flow = asyncio.Event()
        self.log = SimpleNamespace(info=print, warning=print, exception=print)
        self.app = SimpleNamespace(
            consumer_generation_id=3,
            topics=SimpleNamespace(acks_enabled_for=lambda topic: True),
            monitor=SimpleNamespace(track_tp_end_offset=lambda tp, high: None),
        )
        self.transport = SimpleNamespace(app=SimpleNamespace(should_stop=False))
        batched_fetch.batch_topics(self.app, [RAW.topic])

    async def _wait_next_records(self, timeout: float) -> tuple[Any, Any]:
        if not self.fetches:
            self._stopped.set()
            return None, None
        return self.fetches.pop(0), self.active

    async def callback(self, message: Any) -> None:
        self.delivered.append(message)

    async def wait_first(self, *coros: Any) -> None:
        coros[1].close()
        await coros[0]

    async def sleep(self, s: float) -> None:
        await asyncio.sleep(0)

    async def _add_gap(self, tp: TP, start: int, end: int) -> None:
        self.gaps.append((tp, start, end))

    async def perform_seek(self) -> None:
        self.seeks += 1

    def highwater(self, tp: TP) -> int:
        return 100

    def _to_message(self, tp: TP, record: Any) -> Any:
        return SimpleNamespace(topic=tp.topic, tp=tp, offset=record.offset, value=record.value)


def drain(consumer: FakeConsumer) -> list[Any]:
    fetcher = SimpleNamespace(_stopped=asyncio.Event())
    asyncio.run(batched_fetch._drain_messages(consumer, fetcher))
    return consumer.delivered


def test_the_drain_loop_delivers_a_message_per_raw_partition_and_fetch() -> None:
    c = FakeConsumer(
        [
            {RAW: records(RAW, range(0, 5)), OTHER: records(OTHER, [7, 8])},
            # 3 was read already; 4 is kept by faust's rule (after a seek the read
            # offset is the next to read, after a read the last one read)
            {RAW: records(RAW, range(3, 10))},
            {RAW: records(RAW, range(2, 4))},  # nothing new
            {RAW: records(RAW, [15, 16]), OTHER: records(OTHER, [12])},  # gaps after 9 and 8
        ]
    )
    got = drain(c)
    raw = [m for m in got if isinstance(m, FetchedRecords)]
    assert [(m.first_offset, m.offset, [r.offset for r in m.value]) for m in raw] == [
        (0, 4, [0, 1, 2, 3, 4]),
        (4, 9, [4, 5, 6, 7, 8, 9]),
        (10, 16, [15, 16]),
    ]
    # every other topic record by record, faust's gap rule as before
    assert [m.offset for m in got if not isinstance(m, FetchedRecords)] == [7, 8, 12]
    assert c.gaps == [(OTHER, 9, 12)]
    assert c._read_offset[RAW] == 16 and c._read_offset[OTHER] == 12


def test_the_fetch_skips_inactive_partitions_and_stops_at_a_new_generation() -> None:
    paused = TP("social.likes", 1)
    c = FakeConsumer([{paused: records(paused, [0]), RAW: records(RAW, [0, 1])}], active={RAW})
    assert [m.tp for m in drain(c)] == [RAW]

    c = FakeConsumer([{RAW: records(RAW, [0]), OTHER: records(OTHER, [0, 1])}])

    async def callback(message: Any) -> None:
        c.delivered.append(message)
        c.app.consumer_generation_id += 1  # a rebalance began

    c.callback = callback  # type: ignore[method-assign]
    assert [m.tp for m in drain(c)] == [RAW]


def test_the_fetch_seeks_instead_while_the_flow_is_stopped() -> None:
    c = FakeConsumer([{RAW: records(RAW, [0])}])
    c.flow_active = False
    assert drain(c) == [] and c.seeks == 1


def test_install_replaces_fausts_drain_loop() -> None:
    batched_fetch.install()
    assert faust_consumer.Consumer._drain_messages is batched_fetch._drain_messages


@pytest.mark.parametrize(
    ("function", "digest"),
    [
        (
            batched_fetch.FAUST_DRAIN_MESSAGES,
            "44a2500309e83c630493f6828af50166ec8d96a0b3e4fb2bab735f704ae93417",
        ),
        (
            batched_fetch.FAUST_GETMANY,
            "4b168d84882a70d6e3e2f9804430a63b92f8fd117d3187cbb4aeb54305bda34e",
        ),
        (
            batched_fetch.FAUST_ACK,
            "5fcf41cf45153475de3790dc56fec1b83335956dc8b3bf7ff6bbb2b57627f03f",
        ),
        # the arithmetic that turns what ack_range marks into a committed offset
        (
            faust_consumer.Consumer._new_offset,
            "1d2c7ea89a7ad4f1a216c1d51936e569162cd66bd56f889e13fd29c910b58eb0",
        ),
    ],
)
def test_the_faust_code_the_replacement_follows_is_unchanged(function: Any, digest: str) -> None:
    # faust 0.15.3's; a faust that changes them must be read again before this is carried over
    assert hashlib.sha256(inspect.getsource(function).encode()).hexdigest() == digest


def test_the_router_acks_a_batch_only_after_its_body_ran() -> None:
    # take_events disables per-event acks and acks each event after the body
    # handed the batch on, which is what lets a fetch's offsets be committed
    source = inspect.getsource(Stream.take_events)
    assert "self.enable_acks = False" in source
    assert source.index("yield list(events)") < source.index("await self.ack(event)")
    names = set(inspect.signature(faust_consumer.Consumer.__init__).parameters)
    assert "app" in names or "transport" in names
    init = inspect.getsource(faust_consumer.Consumer.__init__)
    for attr in (
        "_acked",
        "_acked_index",
        "_read_offset",
        "_committed_offset",
        "_unacked_messages",
    ):
        assert f"self.{attr} =" in init, attr

"""The faust/aiokafka internals the fixes rely on are still where they were read."""

from __future__ import annotations

import ast
import asyncio
import hashlib
import inspect
import textwrap
from collections import Counter
from types import SimpleNamespace
from typing import Any

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka
from faust.types import TP

from agents import faust_fixes


def test_topic_partitions_answers_from_cluster_metadata_on_every_member() -> None:
    faust_fixes.install()
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert thread.topic_partitions is faust_fixes._topic_partitions
    # a follower: the coordinator's snapshot is empty, the cluster metadata is not
    consumer = SimpleNamespace(
        partitions_for_topic=lambda t: {0, 1, 2} if t == "social.likes" else None,
        _coordinator=SimpleNamespace(_metadata_snapshot={}),
    )
    me = SimpleNamespace(_consumer=consumer)
    assert thread.topic_partitions(me, "social.likes") == 3  # type: ignore[arg-type]
    assert thread.topic_partitions(me, "unknown") is None  # type: ignore[arg-type]
    assert thread.topic_partitions(SimpleNamespace(_consumer=None), "x") is None  # type: ignore[arg-type]


def test_the_private_names_the_fixes_use_exist() -> None:
    assert list(inspect.signature(AIOKafkaConsumer.partitions_for_topic).parameters) == [
        "self",
        "topic",
    ]
    thread = faust_aiokafka.AIOKafkaConsumerThread
    source = inspect.getsource(thread)
    assert "self._consumer" in source and "def _ensure_consumer" in source
    assert "def seek_to_committed" in source and "def topic_partitions" in source
    assert callable(thread.call_thread)


def test_recovery_reads_the_changelog_up_to_the_patched_highwaters() -> None:
    faust_fixes.install()
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert thread._highwaters is faust_fixes._highwaters
    # faust's recovery takes its end from consumer.highwaters -> the thread's _highwaters
    from faust.tables.recovery import Recovery
    from faust.transport.consumer import ThreadDelegateConsumer

    assert "consumer.highwaters(" in inspect.getsource(Recovery._build_highwaters)
    assert issubclass(faust_aiokafka.Consumer, ThreadDelegateConsumer)
    assert "self._thread.highwaters(" in inspect.getsource(ThreadDelegateConsumer.highwaters)
    assert "self._highwaters" in inspect.getsource(thread.highwaters)
    assert list(
        inspect.signature(faust_aiokafka.AIOKafkaConsumerThread._highwaters).parameters
    ) == [
        "self",
        "partitions",
    ]
    from aiokafka.protocol.fetch import FetchRequest

    assert list(inspect.signature(FetchRequest.__init__).parameters)[1:6] == [
        "max_wait_time",
        "min_bytes",
        "max_bytes",
        "isolation_level",
        "topics",
    ]


def calls(function: Any) -> Counter[str]:
    """The names of the functions and methods `function` calls, with their counts."""
    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    return Counter(
        node.func.attr if isinstance(node.func, ast.Attribute) else getattr(node.func, "id", "")
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
    ) - Counter(cast=99)  # typing.cast only narrows a type


def test_recovery_completes_through_the_reordered_step() -> None:
    from faust.tables.recovery import Recovery

    faust_fixes.install()
    assert Recovery.on_recovery_completed is faust_fixes._on_recovery_completed
    assert "self.on_recovery_completed)(generation_id)" in inspect.getsource(
        Recovery._restart_recovery.fun
    )
    # The replacement copies faust 0.15.3's steps; a faust that changes them must be
    # read again before this fix is carried over.
    original = inspect.getsource(faust_fixes.FAUST_ON_RECOVERY_COMPLETED)
    assert hashlib.sha256(original.encode()).hexdigest() == (
        "6ef567acf072e46da3fccbccc6d662371f634f622c3d510972d5df81f70ae3ac"
    )
    # the same steps, every call of faust's and no other
    assert calls(faust_fixes._on_recovery_completed) == calls(
        faust_fixes.FAUST_ON_RECOVERY_COMPLETED
    )
    # faust's own order, the one that lost records: resume, then seek, then clear
    assert (
        original.index("consumer.resume_partitions(")
        < original.index("consumer.perform_seek()")
        < original.index("self.app.flow_control.resume()")
    )


class _Recording:
    """A Recovery's collaborators, recording the order of the calls that matter."""

    def __init__(self, generation: int) -> None:
        self.calls: list[str] = []
        calls = self.calls
        changelog, events = TP("app-window-state-changelog", 0), TP("events", 0)

        async def perform_seek() -> None:
            calls.append("seek")

        async def nothing(*args: Any, **kwargs: Any) -> None:
            return None

        async def wait(coro: Any, timeout: float | None = None) -> None:
            await coro

        self.consumer = SimpleNamespace(
            assignment=lambda: {changelog, events},
            perform_seek=perform_seek,
            resume_partitions=lambda tps: calls.append(f"resume {sorted(t.topic for t in tps)}"),
            resume_flow=lambda: calls.append("resume_flow"),
        )
        self.app = SimpleNamespace(
            consumer=self.consumer,
            consumer_generation_id=generation,
            conf=SimpleNamespace(broker_request_timeout=90.0),
            on_rebalance_complete=SimpleNamespace(send=nothing),
            flow_control=SimpleNamespace(resume=lambda: calls.append("clear buffers")),
            _fetcher=SimpleNamespace(maybe_start=nothing),
            assignor=SimpleNamespace(assigned_standbys=lambda: set()),
            on_rebalance_end=lambda: calls.append("rebalance end"),
        )
        self.log = SimpleNamespace(info=lambda *a: None, dev=lambda *a: None, warning=calls.append)
        self.tables = SimpleNamespace(  # faust's TableManager: a mapping of tables
            values=lambda: [],
            on_actives_ready=lambda: calls.append("actives ready"),
            on_standbys_ready=lambda: calls.append("standbys ready"),
        )
        self.actives_for_table: dict[Any, Any] = {}
        self.standbys_for_table: dict[Any, Any] = {}
        self.completed = SimpleNamespace(set=lambda: calls.append("completed"))
        self._wait = wait
        self._set_recovery_ended = lambda: None
        self._is_changelog_tp = lambda tp: tp == changelog


def test_input_partitions_are_fetched_only_after_the_seek_and_the_clear() -> None:
    me = _Recording(generation=3)
    asyncio.run(faust_fixes._on_recovery_completed(me, 3))
    assert me.calls == [
        "seek",
        "clear buffers",
        "resume ['events']",
        "completed",
        "resume_flow",
        "actives ready",
        "standbys ready",
        "rebalance end",
    ]


def test_a_recovery_overtaken_by_a_rebalance_resumes_nothing() -> None:
    me = _Recording(generation=4)
    asyncio.run(faust_fixes._on_recovery_completed(me, 3))
    assert len(me.calls) == 1 and "rebalancing again" in me.calls[0]


def test_a_fetch_asks_for_the_partitions_active_when_it_was_asked() -> None:
    from aiokafka.consumer.fetcher import Fetcher

    faust_fixes.install()
    thread = faust_aiokafka.AIOKafkaConsumerThread
    assert thread.getmany is faust_fixes._getmany
    original = inspect.getsource(faust_fixes.FAUST_GETMANY)
    assert hashlib.sha256(original.encode()).hexdigest() == (
        "26fc5fc9f3b667e104f9657dbc49da3b3b6620d40cc9856761cbaf4da2172557"
    )
    assert calls(faust_fixes._getmany) - Counter(frozenset=1) == calls(faust_fixes.FAUST_GETMANY)
    # why: aiokafka returns (and consumes) every partition's records for an empty set
    assert "if partitions and tp not in partitions:" in inspect.getsource(Fetcher.fetched_records)

    asked: list[Any] = []

    async def call_thread(fun: Any, consumer: Any, partitions: Any, **kw: Any) -> dict[str, int]:
        asked.append(partitions)
        live.clear()  # a pause while the fetch waits
        return {"records": 1}

    consumer = SimpleNamespace(_max_poll_records=500)
    me = SimpleNamespace(
        _ensure_consumer=lambda: consumer, call_thread=call_thread, _fetch_records=None
    )
    live = {TP("events", 0), TP("events", 1)}
    assert asyncio.run(faust_fixes._getmany(me, live, 1.0)) == {"records": 1}
    assert asked == [frozenset({TP("events", 0), TP("events", 1)})]
    assert asyncio.run(faust_fixes._getmany(me, live, 1.0)) == {}  # emptied: no fetch
    assert len(asked) == 1

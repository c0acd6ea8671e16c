"""The faust/aiokafka internals the fixes rely on are still where they were read."""

from __future__ import annotations

import inspect
from types import SimpleNamespace

from aiokafka import AIOKafkaConsumer
from faust.transport.drivers import aiokafka as faust_aiokafka

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

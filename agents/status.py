"""What the worker reads of its partitions from the consumer and the assignor: the
status document, a periodic log line per partition, the consumer lag of its inputs
and the input partitions that routers report on; the state gauges read them."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from faust.types import TP

from pipeline.durability.processor import PartitionProcessor
from pipeline.metrics.collectors import StateSource
from pipeline.metrics.factory import register_state_gauges
from pipeline.windows import status

if TYPE_CHECKING:
    from agents.context import Runtime

log = logging.getLogger("engagement.aggregate")
Published = Callable[[int], int | None]


def input_partitions(rt: Runtime) -> frozenset[str] | None:
    """Every partition of every input topic, as routers name them in reports;
    None while the consumer's metadata does not know a topic yet."""
    out: set[str] = set()
    for topic in rt.raw_topics:
        n = rt.app.consumer.topic_partitions(topic)
        if not n:
            return None
        out.update(f"{topic}:{i}" for i in range(n))
    return frozenset(out)


def document(
    rt: Runtime, processor: PartitionProcessor, wall_ms: int, published: Published
) -> dict[str, Any]:
    """The status document of the partitions this worker owns; `published` says how
    far each partition's performed effects have published."""
    consumer = rt.app.consumer
    events = rt.events_topic.get_topic_name()
    owned: dict[int, dict[str, Any]] = {}
    for p, state in sorted(rt.states.items()):
        try:
            high = consumer.highwater(TP(events, p))
        except Exception:  # moving in a rebalance
            high = None
        owned[p] = processor.status(p, state, wall_ms, backlog_end=high, published=published)
    changelog = rt.state_table.changelog_topic.get_topic_name()
    urls = rt.app.assignor._tps_url  # type: ignore[attr-defined]
    owners = {
        p: str(urls[TP(changelog, p)])
        for p in range(rt.settings.partitions)
        if TP(changelog, p) in urls
    }
    return status.document(
        owned, total=rt.settings.partitions, owners=owners, cfg=rt.aggregator.cfg
    )


def log_partitions(
    rt: Runtime, processor: PartitionProcessor, wall_ms: int, published: Published
) -> None:
    """One line per partition: where its watermark stands and what holds it."""
    for p, state in sorted(rt.states.items()):
        view = processor.status(p, state, wall_ms, published=published)
        log.info("partition %d: %s", p, status.summary(view))


async def consumer_lag(rt: Runtime) -> dict[tuple[str, int], int]:
    """The lag of every assigned input partition (a partition no longer assigned
    drops out of the gauges at the next scrape)."""
    consumer = rt.app.consumer
    sources = {*rt.raw_topics, rt.events_topic.get_topic_name()}
    lag: dict[tuple[str, int], int] = {}
    for tp in consumer.assignment():
        if tp.topic not in sources:
            continue
        try:
            position = await asyncio.wait_for(consumer.position(tp), timeout=1.0)
            high = consumer.highwater(tp)
        except Exception:  # a gauge must never stop the tick that drives idle advance
            continue
        if position is not None and high is not None:
            lag[(tp.topic, tp.partition)] = max(0, high - position)
    return lag


def register_gauges(
    rt: Runtime, processor: PartitionProcessor, lag: Callable[[], dict[tuple[str, int], int]]
) -> None:
    """State gauges computed at each scrape, over the partitions owned and not
    re-reading a backlog (none during a rebalance or recovery)."""

    def described() -> dict[int, Any]:
        if rt.app.rebalancing or rt.app.in_recovery:
            return {}
        return {p: s for p, s in rt.states.items() if not processor.catching_up(p)}

    source = StateSource(
        states=described,
        consumer_lag=lag,
        channels=frozenset(rt.settings.metrics_channels),
        wall_ms=lambda: int(time.time() * 1000),
        own_account=rt.labels.has_own,
    )
    register_state_gauges(rt.registry, source)

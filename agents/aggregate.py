"""Aggregator agent: the faust shell of `pipeline.durability.processor`. It locks a
partition, restores it from the changelog (`pipeline.durability.restore`), hands
each message of the internal topic and each tick to the processor, and performs
the effects it returns in order: changelog records (straight to the producer, so
faust's flush before each offset commit covers them), publications, and barriers
that wait for every delivery before. The durability order of a close is the
processor's `_publish`. A failed delivery exits the worker (agents/delivery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

from faust.types import TP

from agents.delivery import fatal_on_failure
from pipeline.durability.processor import (
    ALERT,
    DEADLETTER,
    WINDOW,
    Barrier,
    Limits,
    PartitionProcessor,
    Put,
    Step,
)
from pipeline.durability.restore import restore as from_records
from pipeline.metrics.collectors import StateSource
from pipeline.metrics.factory import register_state_gauges
from pipeline.metrics.observe import StepMetrics
from pipeline.model import wire
from pipeline.windows import status
from pipeline.windows.aggregator import PartitionState
from pipeline.windows.valve import SETTLE_MS, Sources

if TYPE_CHECKING:
    from agents.context import Runtime

log = logging.getLogger("engagement.aggregate")
STATUS_EVERY_S = 10.0


class PartitionWork:
    """The faust side of one worker's partitions: locks, restore, and performing the
    processor's effects in order (pipeline.durability.processor decides)."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        s = rt.settings
        self.processor = PartitionProcessor(
            rt.aggregator,
            rt.responses,
            rt.detection,
            s.thresholds,
            Limits(snapshot_interval_s=s.responses.snapshot_interval_s),
        )
        self.observer = StepMetrics(rt.metrics, rt.labels, frozenset(s.metrics_channels))
        self.locks: dict[int, asyncio.Lock] = {}
        self.pending: dict[int, list[Any]] = {}  # deliveries not yet acknowledged
        self.next_offset: dict[int, int] = {}  # next offset of the internal topic to read
        self.last_status = 0.0
        self.consumer_lag: dict[tuple[str, int], int] = {}  # measured each tick
        self.last_label_refresh = 0.0

    def lock(self, p: int) -> asyncio.Lock:
        if p not in self.locks:
            self.locks[p] = asyncio.Lock()
        return self.locks[p]

    def state(self, p: int) -> PartitionState:
        states = self.rt.states
        if p not in states:
            states[p] = self.restore(p)
        return states[p]

    def restore(self, p: int) -> PartitionState:
        """Rebuild partition p from the recovered table contents."""
        restored = from_records(self.rt.state_table.data, p, self.rt.aggregator, self.rt.responses)
        state = restored.state
        # Nothing closes before the backlog as it stands now has been read again.
        high = self.rt.app.consumer.highwater(TP(self.rt.events_topic.get_topic_name(), p))
        self.processor.restored(p, restored, backlog_end=high or 0)
        # Until every router has reported where its input partitions stand, hold.
        state.sources = Sources(
            self.rt.aggregator.cfg.source_stale_ms,
            settle_until_ms=int(time.time() * 1000) + SETTLE_MS,
            required=True,
            expected=self.input_partitions(),
        )
        if restored.deltas or restored.marker:
            log.info(
                "restored partition %d: %d deltas, applied offset %d, %d outputs to republish, "
                "response snapshot through delta %d, %d inbound messages tracked",
                p,
                restored.deltas,
                state.applied_offset,
                len(restored.outbox),
                state.responses.snap_seq,
                state.responses.tracked,
            )
        return state

    def input_partitions(self) -> frozenset[str] | None:
        """Every partition of every input topic, as routers name them in reports;
        None while the consumer's metadata does not know a topic yet."""
        consumer = self.rt.app.consumer
        out: set[str] = set()
        for topic in self.rt.raw_topics:
            n = consumer.topic_partitions(topic)
            if not n:
                return None
            out.update(f"{topic}:{i}" for i in range(n))
        return frozenset(out)

    def drop(self, p: int) -> None:
        """Forget a partition this worker no longer owns."""
        self.rt.states.pop(p, None)
        self.processor.drop(p)
        self.next_offset.pop(p, None)
        self.pending.pop(p, None)

    async def write(self, p: int, key: bytes, value: bytes | None) -> Any:
        """Write a changelog record of partition p; returns its delivery future.

        Not faust's send_changelog: that goes through a buffer whose flush before
        a commit gives up after a timeout, so a commit could overtake the record.
        """
        table = self.rt.state_table
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        fut = await table.changelog_topic.send(
            key=key, value=value, partition=p, key_serializer="raw", value_serializer="raw"
        )
        return fatal_on_failure(fut, "changelog")

    async def apply(self, p: int, offset: int, raw: bytes) -> None:
        rows, report = wire.decode_message(raw)
        state = self.state(p)
        self.next_offset[p] = offset + 1
        step = self.processor.batch(
            p, state, offset, rows, report, int(time.time() * 1000), time.monotonic()
        )
        await self.perform(p, step)

    async def perform(self, p: int, step: Step) -> None:
        """The effects in order; then what the step saw, into the metrics."""
        rt = self.rt
        topics = {WINDOW: rt.windows_topic, ALERT: rt.alerts_topic, DEADLETTER: rt.deadletter_topic}
        now = time.time()
        for effect in step.effects:
            if isinstance(effect, Barrier):
                await self.settle(p)
            elif isinstance(effect, Put):
                self.track(p, await self.write(p, effect.key, effect.value))
            else:
                fut = await topics[effect.topic].send(key=effect.key, value=effect.value)
                self.track(p, fatal_on_failure(fut, effect.topic))
                self.observer.published(effect, now)
        self.observer.step(step.observed, time.time())

    def track(self, p: int, fut: Any) -> None:
        """Remember a delivery to wait for at the next barrier."""
        pending = self.pending.setdefault(p, [])
        pending.append(fut)
        if len(pending) > 256:  # delivered ones need no waiting
            pending[:] = [f for f in pending if not f.done()]

    async def settle(self, p: int) -> None:
        """A barrier: wait until every record sent for p is acknowledged."""
        pending = self.pending.pop(p, [])
        if pending:
            await asyncio.gather(*pending)

    async def tick(self) -> None:
        """Idle advance and gauges, once a second."""
        rt, m = self.rt, self.rt.metrics
        if rt.app.rebalancing or rt.app.in_recovery:
            return  # states are rebuilt by the agent once recovery has completed
        wall_ms = int(time.time() * 1000)
        inputs = self.input_partitions()  # input topics may have gained partitions
        for p in sorted(rt.states):
            async with self.lock(p):
                state = rt.states.get(p)
                if state is None or self.processor.catching_up(p):
                    continue
                if inputs is not None:
                    state.sources.expected = inputs
                await self.perform(p, self.processor.tick(p, state, wall_ms, time.monotonic()))
        if time.monotonic() - self.last_status > STATUS_EVERY_S:
            self.last_status = time.monotonic()
            self.log_status(wall_ms)
        await self._lag()
        if time.monotonic() - self.last_label_refresh > 60:
            self.last_label_refresh = time.monotonic()
            for account in rt.labels.refresh():
                with contextlib.suppress(KeyError):
                    m.account_events.remove(account)

    def described(self) -> dict[int, PartitionState]:
        """The partitions the state gauges describe: owned, and not re-reading a backlog."""
        if self.rt.app.rebalancing or self.rt.app.in_recovery:
            return {}
        return {p: s for p, s in self.rt.states.items() if not self.processor.catching_up(p)}

    def log_status(self, wall_ms: int) -> None:
        """One line per partition: where its watermark stands and what holds it."""
        cfg = self.rt.aggregator.cfg
        for p, state in sorted(self.rt.states.items()):
            v = status.partition_status(
                state,
                cfg,
                published_ms=self.processor.published(p),
                catching_up=self.processor.catching_up(p),
                lag=None,
                wall_ms=wall_ms,
            )
            idle = sum(1 for i in v["inputs"].values() if i["status"] == "IDLE")
            log.info(
                "partition %d: watermark %s, published through %s, %d open windows, "
                "%d of %d input partitions IDLE, held by %s",
                p,
                v["watermark"],
                v["published_through"],
                v["open_windows"],
                idle,
                len(v["inputs"]),
                v["held_by"],
            )

    def status(self, wall_ms: int) -> dict[str, Any]:
        """The status document of the partitions this worker owns."""
        rt = self.rt
        consumer = rt.app.consumer
        events = rt.events_topic.get_topic_name()
        owned: dict[int, dict[str, Any]] = {}
        for p, state in sorted(rt.states.items()):
            try:
                high = consumer.highwater(TP(events, p))
            except Exception:  # moving in a rebalance
                high = None
            nxt = self.next_offset.get(p)
            lag = None if high is None or high < 0 or nxt is None else max(0, high - nxt)
            owned[p] = status.partition_status(
                state,
                rt.aggregator.cfg,
                published_ms=self.processor.published(p),
                catching_up=self.processor.catching_up(p),
                lag=lag,
                wall_ms=wall_ms,
                detectors_behind=self.processor.detection_behind(p),
            )
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

    async def on_revoked(self, revoked: set[Any]) -> None:
        events = self.rt.events_topic.get_topic_name()
        for tp in revoked:
            if tp.topic == events:
                async with self.lock(tp.partition):
                    self.drop(tp.partition)

    async def _lag(self) -> None:
        """Measure the consumer lag of every assigned input partition (read by the
        gauges at the next scrape; a partition no longer assigned drops out)."""
        consumer = self.rt.app.consumer
        sources = {*self.rt.raw_topics, self.rt.events_topic.get_topic_name()}
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
        self.consumer_lag = lag


def register(rt: Runtime) -> PartitionWork:
    work = PartitionWork(rt)
    register_state_gauges(
        rt.registry,
        StateSource(
            states=work.described,
            consumer_lag=lambda: work.consumer_lag,
            channels=frozenset(rt.settings.metrics_channels),
            wall_ms=lambda: int(time.time() * 1000),
        ),
    )

    async def aggregate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            async with work.lock(msg.partition):
                await work.apply(msg.partition, msg.offset, msg.value)

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        await work.on_revoked(revoked)

    rt.app.agent(rt.events_topic, name="engagement.aggregate")(aggregate)

    async def tick() -> None:
        # A timer whose body raises stops for good, silently: idle advance and the
        # gauges would stop with it. Log and go on with the next tick.
        try:
            await work.tick()
        except Exception:
            log.exception("tick failed; retrying")

    rt.app.timer(interval=1.0)(tick)
    rt.app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    return work

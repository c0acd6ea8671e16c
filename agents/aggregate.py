"""Aggregator agent: the faust shell of `pipeline.durability.processor`. It locks a
partition, restores it from the changelog (`pipeline.durability.restore`), hands
each message of the internal topic and each tick to the processor, and has the
partition's task (agents/effects.py) perform the effects it returns in order:
changelog records (straight to the producer, so faust's flush before each offset
commit covers them), publications, and barriers that wait for every delivery
before. A message is acknowledged once its effects are performed. The durability
order of a close is the processor's `_publish`. A failed delivery exits the
worker (agents/delivery.py).
"""

from __future__ import annotations

import asyncio
import logging
import time
from functools import partial
from typing import TYPE_CHECKING, Any

from faust.types import TP

from agents import status
from agents.delivery import Deliveries, fatal_on_failure, write_changelog
from agents.effects import Done, PartitionEffects
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
from pipeline.durability.restore import restore
from pipeline.metrics.factory import register_latest_gauges
from pipeline.metrics.observe import StepMetrics
from pipeline.model import wire
from pipeline.windows.aggregator import PartitionState

if TYPE_CHECKING:
    from agents.context import Runtime

log = logging.getLogger("engagement.aggregate")
STATUS_EVERY_S, LABELS_EVERY_S = 10.0, 60.0


class PartitionWork:
    """One worker's partitions: locks, restore, and the processor's effects in order."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        s = rt.settings
        self.processor = PartitionProcessor(
            rt.aggregator,
            rt.responses,
            rt.detection,
            s.thresholds,
            Limits(snapshot_interval_s=s.responses.snapshot_interval_s),
            early=s.early_alerts,
        )
        channels = frozenset(s.metrics_channels)
        latest = register_latest_gauges(rt.registry, rt.labels, channels)
        self.observer = StepMetrics(rt.metrics, rt.labels, channels, latest)
        self.locks: dict[int, asyncio.Lock] = {}
        self.deliveries = Deliveries()
        self.effects = PartitionEffects(self.perform)
        self.consumer_lag: dict[tuple[str, int], int] = {}  # measured each tick
        self.last_status = self.last_labels = 0.0

    def lock(self, p: int) -> asyncio.Lock:
        return self.locks.setdefault(p, asyncio.Lock())

    def state(self, p: int) -> PartitionState:
        if p not in self.rt.states:
            self.rt.states[p] = self.restore(p)
        return self.rt.states[p]

    def restore(self, p: int) -> PartitionState:
        """Rebuild partition p from the recovered table contents; nothing closes
        before the internal topic's backlog as it stands now has been read again."""
        rt = self.rt
        restored = restore(rt.state_table.data, p, rt.aggregator, rt.responses)
        high = rt.app.consumer.highwater(TP(rt.events_topic.get_topic_name(), p))
        self.processor.restored(
            p,
            restored,
            high or 0,
            wall_ms=int(time.time() * 1000),
            inputs=status.input_partitions(rt),
        )
        if restored.deltas or restored.marker:
            log.info("restored partition %d: %s", p, restored.summary())
        return restored.state

    def drop(self, p: int) -> None:
        """Forget a partition this worker no longer owns (its effects drained)."""
        self.rt.states.pop(p, None)
        self.processor.drop(p)
        self.effects.drop(p)
        self.deliveries.drop(p)
        self.observer.drop(p)

    async def apply(self, p: int, offset: int, raw: bytes, done: Done | None = None) -> None:
        """One message of the internal topic; `done` acknowledges it, once performed."""
        rows, report = wire.decode_message(raw)
        state = self.state(p)
        now = int(time.time() * 1000)
        step = self.processor.batch(p, state, offset, rows, report, now, time.monotonic())
        if step.observed.skipped_offsets:
            log.error(
                "partition %d: %d internal messages before offset %d were never delivered",
                p,
                step.observed.skipped_offsets,
                offset,
            )
        await self.effects.submit(p, step, done, self.processor.published(p))

    async def perform(self, p: int, step: Step) -> None:
        """The effects in order; then what the step saw, into the metrics."""
        rt = self.rt
        topics = {WINDOW: rt.windows_topic, ALERT: rt.alerts_topic, DEADLETTER: rt.deadletter_topic}
        now = time.time()
        for effect in step.effects:
            if isinstance(effect, Barrier):
                await self.deliveries.barrier(p)
            elif isinstance(effect, Put):
                fut = await write_changelog(rt.state_table, p, effect.key, effect.value)
                self.deliveries.track(p, fut)
            else:
                fut = await topics[effect.topic].send(key=effect.key, value=effect.value)
                self.deliveries.track(p, fatal_on_failure(fut, effect.topic))
                self.observer.published(effect, now)
        self.observer.step(step.observed, time.time(), p)

    async def tick(self) -> None:
        """Once a second: idle advance, status lines, lag and label ranking."""
        rt = self.rt
        if rt.app.rebalancing or rt.app.in_recovery:
            return  # states are rebuilt by the agent once recovery has completed
        wall_ms, inputs = int(time.time() * 1000), status.input_partitions(rt)  # may grow
        for p in sorted(rt.states):
            async with self.lock(p):
                if rt.app.rebalancing:  # began during this tick: the states are dropped
                    return
                state = rt.states.get(p)
                if state is None or self.processor.catching_up(p):
                    continue
                if inputs is not None:
                    state.sources.expected = inputs
                step = self.processor.tick(p, state, wall_ms, time.monotonic())
                await self.effects.submit(p, step, None, self.processor.published(p))
        if time.monotonic() - self.last_status > STATUS_EVERY_S:
            self.last_status = time.monotonic()
            status.log_partitions(rt, self.processor, wall_ms, self.effects.published)
        self.consumer_lag = await status.consumer_lag(rt)
        if time.monotonic() - self.last_labels > LABELS_EVERY_S:
            self.last_labels = time.monotonic()
            self.observer.refresh_labels()

    def status(self, wall_ms: int) -> dict[str, Any]:
        return status.document(self.rt, self.processor, wall_ms, self.effects.published)


def register(rt: Runtime) -> PartitionWork:
    work = PartitionWork(rt)
    status.register_gauges(rt, work.processor, lambda: work.consumer_lag)

    async def aggregate(stream: Any) -> None:
        # acknowledged by the partition's effects task once the step is performed
        manual = stream.noack()
        async for event in manual.events():
            msg = event.message
            async with work.lock(msg.partition):
                await work.apply(msg.partition, msg.offset, msg.value, partial(manual.ack, event))

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        events = rt.events_topic.get_topic_name()
        for tp in revoked:
            if tp.topic == events:
                async with work.lock(tp.partition):  # a tick's step in progress ends first
                    await work.effects.drain(tp.partition)  # a tick's, queued
                    work.drop(tp.partition)
        # faust flushed the producer before this signal; a tick's step may have written
        # since. The changelog's recovery, next, reads the log up to its end as it is
        # then and overwrites the table with it: a record still in flight would leave a
        # key at an older value (a marker) beside newer keys, a state no crash makes.
        await rt.app.producer.flush()

    async def tick() -> None:
        # A timer whose body raises stops for good, silently: idle advance and the
        # gauges would stop with it. Log and go on with the next tick.
        try:
            await work.tick()
        except Exception:
            log.exception("tick failed; retrying")

    rt.app.agent(rt.events_topic, name="engagement.aggregate")(aggregate)
    rt.app.timer(interval=1.0)(tick)
    rt.app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    return work

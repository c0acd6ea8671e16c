"""Aggregator agent: applies event batches to per-partition window state, writes one
changelog record per batch, and publishes final windows and alerts.

Durability order per partition: delta record -> (windows, alerts delivered) ->
marker record. The marker says which windows were published, so it is written
only after the broker acknowledged them; a crash before that republishes the
same windows with the same contents and the same alert ids.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson

from pipeline import alerts, deadletter, wire
from pipeline.aggregator import Delta, FinalWindow, PartitionState

if TYPE_CHECKING:
    from agents.app import Runtime

log = logging.getLogger("engagement.aggregate")


def delta_key(p: int, seq: int) -> bytes:
    return f"d:{p}:{seq:012d}".encode()


def marker_key(p: int) -> bytes:
    return f"m:{p}".encode()


class PartitionWork:
    """The faust side of one worker's partitions: state, locks and durable writes."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.locks: dict[int, asyncio.Lock] = {}
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
        data = self.rt.state_table.data
        prefix = f"d:{p}:".encode()
        deltas = [
            Delta.from_json(orjson.loads(v)) for k, v in data.items() if k.startswith(prefix) and v
        ]
        raw_marker = data.get(marker_key(p))
        marker = orjson.loads(raw_marker) if raw_marker else {}
        state = PartitionState()
        self.rt.aggregator.restore(state, deltas, marker)
        # Until a router reports where the input partitions stand, the watermark holds.
        state.sources.waiting_since_ms = int(time.time() * 1000)
        if deltas or marker:
            log.info(
                "restored partition %d: %d deltas, applied offset %d",
                p,
                len(deltas),
                state.applied_offset,
            )
        return state

    def write(self, p: int, key: bytes, value: bytes | None) -> None:
        table = self.rt.state_table
        if value is None:
            table.data.pop(key, None)
        else:
            table.data[key] = value
        table.send_changelog(p, key, value, key_serializer="raw", value_serializer="raw")

    async def apply(self, p: int, offset: int, raw: bytes) -> None:
        rt = self.rt
        wall_ms = int(time.time() * 1000)
        rows, report = wire.decode_message(raw)
        state = self.state(p)
        if rows:
            await self._apply_rows(p, state, rows, offset, wall_ms)
        if report:
            rt.aggregator.apply_progress(state, report, wall_ms)
        await self.close(p, state, wall_ms)

    async def _apply_rows(
        self, p: int, state: PartitionState, rows: list[wire.Row], offset: int, wall_ms: int
    ) -> None:
        rt, m = self.rt, self.rt.metrics
        applied = rt.aggregator.apply_batch(state, rows, offset, wall_ms)
        if applied.skipped:
            return
        if applied.delta is not None:
            self.write(p, delta_key(p, applied.delta.seq), orjson.dumps(applied.delta.to_json()))
            self._count(applied.delta.rows, set(applied.delta.late_idx))
        if applied.duplicates:
            m.duplicates.inc(applied.duplicates)
        if applied.late_counted:
            m.late.labels("counted").inc(applied.late_counted)
        if applied.too_late:
            m.late.labels("dropped").inc(len(applied.too_late))
            for row in applied.too_late:
                src = row[wire.I_SRC] if row[0] == wire.INTERACTION else row[wire.X_SRC]
                await rt.deadletter_topic.send(
                    value=deadletter.too_late_record(wire.row_as_event(row), src)
                )
        oldest_ms = min(r[wire.I_SRC if r[0] == wire.INTERACTION else wire.X_SRC][3] for r in rows)
        m.processing_latency.observe(max(0.0, time.time() - oldest_ms / 1000))

    def _count(self, rows: list[wire.Row], late: set[int]) -> None:
        m = self.rt.metrics
        by_kind: Counter[tuple[str, str]] = Counter()
        by_account: Counter[str] = Counter()
        for row in rows:
            if row[0] == wire.INTERACTION:
                by_kind[(row[wire.I_KIND], row[wire.I_CHANNEL])] += 1
                by_account[row[wire.I_ACCOUNT]] += 1
        for (kind, channel), n in by_kind.items():
            m.events.labels(kind, channel).inc(n)
        labels = self.rt.labels
        labels.observe(by_account)
        per_label: Counter[str] = Counter()
        for account, n in by_account.items():
            per_label[labels.label(account)] += n
        for label, n in per_label.items():
            m.account_events.labels(label).inc(n)

    async def close(self, p: int, state: PartitionState, wall_ms: int) -> None:
        """Publish windows that became final, then record that they were published."""
        rt = self.rt
        records = rt.aggregator.close_windows(state, wall_ms)
        if records:
            await self.publish(p, state, records)
        # A delta is tombstoned only once all its windows were published, which wrote
        # a marker before this point in the same changelog partition.
        for seq in rt.aggregator.prune(state):
            self.write(p, delta_key(p, seq), None)

    async def publish(self, p: int, state: PartitionState, records: list[FinalWindow]) -> None:
        rt = self.rt
        pending = []
        now = time.time()
        for final in records:
            rec, newest = final.record, final.newest_broker_ms
            key = rec["account_id"].encode()
            pending.append(await rt.windows_topic.send(key=key, value=orjson.dumps(rec)))
            rt.metrics.windows_emitted.labels(f"{rec['size_seconds']}s").inc()
            if newest:
                rt.metrics.output_latency.labels("window").observe(max(0.0, now - newest / 1000))
            for alert in alerts.evaluate(
                rec, final.start_ms, final.end_ms, rt.settings.thresholds, state.cooldowns
            ):
                pending.append(await rt.alerts_topic.send(key=key, value=orjson.dumps(alert)))
                rt.metrics.alerts.labels(
                    alert["type"], alert["severity"], rt.labels.label(alert["account_id"])
                ).inc()
                if newest:
                    rt.metrics.output_latency.labels("alert").observe(max(0.0, now - newest / 1000))
        await asyncio.gather(*pending)
        self.write(p, marker_key(p), orjson.dumps(rt.aggregator.marker(state)))

    async def tick(self) -> None:
        """Idle advance and gauges, once a second."""
        rt, m = self.rt, self.rt.metrics
        wall_ms = int(time.time() * 1000)
        assigned = {
            tp.partition
            for tp in rt.app.consumer.assignment()
            if tp.topic == rt.events_topic.get_topic_name()
        }
        for p in list(rt.states):
            if p not in assigned:
                del rt.states[p]  # revoked: another worker owns it now
        open_windows = dedup_ids = 0
        for p in sorted(assigned):
            async with self.lock(p):
                state = self.state(p)
                await self.close(p, state, wall_ms)
            open_windows += len(state.windows)
            dedup_ids += len(state.dedup)
            wm = state.watermark.floor_ms
            if wm is not None:
                m.watermark_lag.labels(str(p)).set((wall_ms - wm) / 1000)
        m.open_windows.set(open_windows)
        m.dedup_ids.set(dedup_ids)
        await self._lag()
        if time.monotonic() - self.last_label_refresh > 60:
            self.last_label_refresh = time.monotonic()
            for account in rt.labels.refresh():
                with contextlib.suppress(KeyError):
                    m.account_events.remove(account)

    async def _lag(self) -> None:
        consumer = self.rt.app.consumer
        sources = {*self.rt.raw_topics, self.rt.events_topic.get_topic_name()}
        for tp in consumer.assignment():
            if tp.topic not in sources:
                continue
            try:
                position = await consumer.position(tp)
                high = consumer.highwater(tp)
            except Exception:
                continue
            if position is not None and high is not None:
                self.rt.metrics.consumer_lag.labels(tp.topic, str(tp.partition)).set(
                    max(0, high - position)
                )


def register(rt: Runtime) -> None:
    work = PartitionWork(rt)

    async def aggregate(stream: Any) -> None:
        async for event in stream.events():
            msg = event.message
            async with work.lock(msg.partition):
                await work.apply(msg.partition, msg.offset, msg.value)

    rt.app.agent(rt.events_topic, name="engagement.aggregate")(aggregate)
    rt.app.timer(interval=1.0)(work.tick)

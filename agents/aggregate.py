"""Aggregator agent: applies event batches to per-partition window state, writes one
changelog record per batch, and publishes final windows and alerts.

Durability order per partition (every write goes straight to the producer, so
faust's flush before each offset commit covers it):
1. the batch's delta record;
2. when windows close: the exact output records (an outbox, in parts) and a
   marker holding the close decision, all awaited;
3. the outputs, awaited;
4. a marker without the outbox, and tombstones for its parts.
A crash after 2 republishes the outbox on restart: the same windows with the
same contents and the same alert ids, and rows for those windows are too late
there exactly as they were in the run that crashed. A failed delivery exits the
worker (agents/delivery.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

import orjson
from faust.types import TP

from agents.delivery import fatal_on_failure
from pipeline.detection import series as detection
from pipeline.durability import keys
from pipeline.durability.restore import restore as from_records
from pipeline.ingest import deadletter
from pipeline.metrics.collectors import StateSource
from pipeline.metrics.factory import register_state_gauges
from pipeline.metrics.labels import OTHER
from pipeline.model import wire
from pipeline.responses import alerts as response_alerts
from pipeline.responses import snapshot as response_snapshot
from pipeline.windows import status
from pipeline.windows import thresholds as alerts
from pipeline.windows.aggregator import FinalWindow, PartitionState
from pipeline.windows.valve import SETTLE_MS, Sources

if TYPE_CHECKING:
    from agents.context import Runtime

log = logging.getLogger("engagement.aggregate")
CLOSE_EVERY_MS = 200
# Windows published per close, so the marker that carries them stays far below the
# broker's message size limit however far a catch-up moves the watermark at once.
MAX_CLOSE = 400
STATUS_EVERY_S = 10.0
OUTBOX_PART = 300  # output records per outbox changelog record (~200 KB)
# Windows fed to the detectors per close (about 0.1 s): a replay over months means
# millions, and detection then trails instead of stopping the worker.
DETECT_PER_CLOSE = 20_000


class PartitionWork:
    """The faust side of one worker's partitions: state, locks and durable writes."""

    def __init__(self, rt: Runtime) -> None:
        self.rt = rt
        self.locks: dict[int, asyncio.Lock] = {}
        # restored, not yet republished: (output records, outbox parts to clear)
        self.outbox: dict[int, tuple[list[list[Any]], int]] = {}
        self.pending: dict[int, list[Any]] = {}  # delivery futures not yet awaited
        self.last_close: dict[int, int] = {}  # wall ms of each partition's last close
        self.last_snapshot: dict[int, float] = {}  # monotonic s of the last response snapshot
        # emitted-through watermark of the last detection pass: the next pass is due only
        # when it moves or windows close (a close runs every 200 ms, mostly with neither)
        self.detected_through: dict[int, int | None] = {}
        self.detection_behind: set[int] = set()  # partitions whose detectors trail
        self.catch_up: dict[int, int] = {}  # partition -> end offset to re-read first
        # the watermark whose outputs are all published, per partition (status API)
        self.published: dict[int, int] = {}
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
        # Until this worker has re-read the partition's backlog as it stood at the
        # restore, publish nothing new: the restored watermark may already make windows
        # final whose rows are in that backlog (their deltas were lost in the crash),
        # and publishing first would turn those rows into late ones.
        high = self.rt.app.consumer.highwater(TP(self.rt.events_topic.get_topic_name(), p))
        if high:
            self.catch_up[p] = high
        if restored.outbox_parts:
            self.outbox[p] = (restored.outbox, restored.outbox_parts)
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
                len(self.outbox.get(p, ((), 0))[0]),
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
        self.last_close.pop(p, None)
        self.last_snapshot.pop(p, None)
        self.detected_through.pop(p, None)
        self.detection_behind.discard(p)
        self.catch_up.pop(p, None)
        self.published.pop(p, None)
        self.next_offset.pop(p, None)
        self.outbox.pop(p, None)
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
        rt = self.rt
        wall_ms = int(time.time() * 1000)
        rows, report = wire.decode_message(raw)
        state = self.state(p)
        self.next_offset[p] = offset + 1
        if p in self.outbox:
            entries, parts = self.outbox.pop(p)
            await self.send_outbox(p, state, entries, parts)
        if rows:
            await self._apply_rows(p, state, rows, offset, wall_ms)
        if report:
            rt.aggregator.apply_progress(state, report, wall_ms)
        # Publishing costs two broker round trips (marker, outputs): do it at most every
        # CLOSE_EVERY_MS per partition, so a catch-up publishes in few large steps.
        if p in self.catch_up:
            if offset + 1 < self.catch_up[p]:
                return
            del self.catch_up[p]
        if wall_ms - self.last_close.get(p, 0) >= CLOSE_EVERY_MS:
            await self.close(p, state, wall_ms)

    async def _apply_rows(
        self, p: int, state: PartitionState, rows: list[wire.Row], offset: int, wall_ms: int
    ) -> None:
        rt, m = self.rt, self.rt.metrics
        applied = rt.aggregator.apply_batch(state, rows, offset, wall_ms)
        if applied.skipped:
            return
        if applied.delta is not None:
            fut = await self.write(
                p, keys.delta(p, applied.delta.seq), orjson.dumps(applied.delta.to_json())
            )
            self.track(p, fut)
            self._count(applied.delta.rows)
            rt.responses.apply_rows(state.responses, applied.delta.response_rows())
        if applied.duplicates:
            m.duplicates.inc(applied.duplicates)
        if applied.late_counted:
            m.late.labels("counted").inc(applied.late_counted)
        if applied.too_late:
            m.late.labels("dropped").inc(len(applied.too_late))
            for row in applied.too_late:
                src = wire.row_src(row)
                fut = await rt.deadletter_topic.send(
                    value=deadletter.too_late_record(wire.row_as_event(row), src)
                )
                self.track(p, fatal_on_failure(fut, "dead-letter"))
        oldest_ms = min(wire.row_src(r)[3] for r in rows)
        m.processing_latency.observe(max(0.0, time.time() - oldest_ms / 1000))

    def _count(self, rows: list[wire.Row]) -> None:
        m = self.rt.metrics
        by_kind: Counter[tuple[str, str]] = Counter()
        by_account: Counter[str] = Counter()
        for row in rows:
            if row[0] == wire.INTERACTION:
                by_kind[(row[wire.I_KIND], row[wire.I_CHANNEL])] += 1
                by_account[row[wire.I_ACCOUNT]] += 1
        channels = self.rt.settings.metrics_channels
        for (kind, channel), n in by_kind.items():
            m.events.labels(kind, channel if channel in channels else OTHER).inc(n)
        labels = self.rt.labels
        labels.observe(by_account)
        per_label: Counter[str] = Counter()
        for account, n in by_account.items():
            per_label[labels.label(account)] += n
        for label, n in per_label.items():
            m.account_events.labels(label).inc(n)

    async def close(self, p: int, state: PartitionState, wall_ms: int, prune: bool = False) -> None:
        """Publish windows that became final (see the module docstring for the order);
        prune (a walk over the partition's state) after publishing, or when asked."""
        rt = self.rt
        self.last_close[p] = wall_ms
        records = rt.aggregator.close_windows(state, wall_ms, max_windows=MAX_CLOSE)
        outbox = self.outputs(state, records)
        if (
            records
            or p in self.detection_behind
            or self.detected_through.get(p, -1) != state.emitted_through_ms
        ):
            self.detected_through[p] = state.emitted_through_ms
            outbox += self.detection_outputs(p, state, records)
        if state.watermark.floor_ms is not None:
            outbox += self.response_outputs(state, state.watermark.floor_ms)
        if outbox:
            parts = [outbox[i : i + OUTBOX_PART] for i in range(0, len(outbox), OUTBOX_PART)]
            # Deltas first: a window is never published ahead of the rows it counts.
            await self.settle(p)
            # The outbox in parts (each well below the broker's size limit), then the
            # marker that makes the close decision durable by naming them.
            futs = [
                await self.write(p, keys.outbox(p, i), orjson.dumps(part))
                for i, part in enumerate(parts)
            ]
            marker = {**rt.aggregator.marker(state), "outbox_parts": len(parts)}
            futs.append(await self.write(p, keys.marker(p), orjson.dumps(marker)))
            await asyncio.gather(*futs)
            await self.send_outbox(p, state, outbox, len(parts))
        if (records or prune) and rt.aggregator.needs_snapshot(state):
            await self.snapshot(p, state)
        dead = rt.aggregator.prune(state) if records or prune else []
        if dead:
            # The marker carries what pruning keeps in memory (the last followers level)
            # ahead of the tombstones that drop the deltas it came from; it also records
            # the applied offset, so the deltas up to it must be delivered first.
            await self.settle(p)
            await self.write(p, keys.marker(p), orjson.dumps(rt.aggregator.marker(state)))
            for seq in dead:
                await self.write(p, keys.delta(p, seq), None)
        wm, emitted = state.watermark.floor_ms, state.emitted_through_ms
        if wm is not None and emitted is not None:
            self.published[p] = min(wm, emitted)

    async def snapshot(self, p: int, state: PartitionState) -> None:
        """Make the response state durable up to the current delta, so the deltas it
        covers may be dropped: at most every `snapshot_interval_s`."""
        interval = self.rt.settings.responses.snapshot_interval_s
        if time.monotonic() - self.last_snapshot.get(p, 0.0) < interval:
            return
        self.last_snapshot[p] = time.monotonic()
        st = state.responses
        parts = response_snapshot.snapshot(st, state.seq)
        gen, old_gen, old_parts = st.snap_gen + 1, st.snap_gen, st.snap_parts
        # The deltas it covers must be durable before a marker may name it.
        await self.settle(p)
        futs = [await self.write(p, keys.snapshot(p, gen, i), v) for i, v in enumerate(parts)]
        await asyncio.gather(*futs)
        st.snap_seq, st.snap_gen, st.snap_parts = state.seq, gen, len(parts)
        await (await self.write(p, keys.marker(p), orjson.dumps(self.rt.aggregator.marker(state))))
        for i in range(old_parts):  # the previous generation is no longer named
            await self.write(p, keys.snapshot(p, old_gen, i), None)

    def response_outputs(self, state: PartitionState, watermark_ms: int) -> list[list[Any]]:
        """Alerts the watermark made due, as outbox records; observes first responses."""
        rt, m = self.rt, self.rt.metrics
        advanced = rt.responses.advance(state.responses, watermark_ms)
        channels = rt.settings.metrics_channels
        for channel, kind, seconds in advanced.first_responses:
            m.first_response.labels(channel if channel in channels else OTHER, kind).observe(
                seconds
            )
        return [
            ["alert", d.account, orjson.dumps(response_alerts.build(d)).decode(), 0]
            for d in advanced.decisions
        ]

    def detection_outputs(
        self, p: int, state: PartitionState, records: list[FinalWindow]
    ) -> list[Any]:
        """Spike/drop alerts of the windows now final, and the detector state of every
        account that moved, as outbox records: both are published by the same marker.
        At most DETECT_PER_CLOSE windows are fed per close; the rest on the next ones."""
        det = self.rt.detection
        adv = det.advance(
            state.detection,
            (r.record for r in records),
            state.emitted_through_ms,
            self.rt.aggregator.cfg.grace_ms,
            budget=DETECT_PER_CLOSE,
        )
        if adv.behind:
            self.detection_behind.add(p)
        else:
            self.detection_behind.discard(p)
        out: list[list[Any]] = []
        for f in adv.found:
            cfg = det.detector(f.account, f.series).cfg
            alert = detection.build_alert(f, det.cfg.window_s, cfg)
            out.append(["alert", f.account, orjson.dumps(alert).decode(), 0])
        for account in sorted(adv.changed):
            value = orjson.dumps(state.detection[account].to_json()).decode()
            out.append(["detector", account, value, 0])
        out.extend(["detector", account, "", 0] for account in sorted(adv.forgotten))
        return out

    def track(self, p: int, fut: Any) -> None:
        """Remember a delivery to wait for before the next close publishes anything."""
        pending = self.pending.setdefault(p, [])
        pending.append(fut)
        if len(pending) > 256:  # delivered ones need no waiting
            pending[:] = [f for f in pending if not f.done()]

    async def settle(self, p: int) -> None:
        """Wait until every changelog and dead-letter record sent for p is delivered."""
        pending = self.pending.pop(p, [])
        if pending:
            await asyncio.gather(*pending)

    def outputs(self, state: PartitionState, records: list[FinalWindow]) -> list[list[Any]]:
        """The output records of closing windows: [topic kind, key, value, newest broker ms].
        Evaluating alerts advances the cooldowns, which the same marker records."""
        out: list[list[Any]] = []
        rules = self.rt.settings.thresholds
        for final in records:
            rec = final.record
            out.append(
                ["window", rec["account_id"], orjson.dumps(rec).decode(), final.newest_broker_ms]
            )
            for alert in alerts.evaluate(rec, final.start_ms, final.end_ms, rules, state.cooldowns):
                out.append(
                    [
                        "alert",
                        rec["account_id"],
                        orjson.dumps(alert).decode(),
                        final.newest_broker_ms,
                    ]
                )
        return out

    async def send_outbox(
        self, p: int, state: PartitionState, outbox: list[list[Any]], parts: int
    ) -> None:
        rt, m = self.rt, self.rt.metrics
        topics = {"window": rt.windows_topic, "alert": rt.alerts_topic}
        pending = []
        now = time.time()
        for kind, account, value, newest in outbox:
            if kind == "detector":  # state, not output: to the changelog
                pending.append(
                    await self.write(p, keys.detector(p, account), value.encode() or None)
                )
                continue
            fut = await topics[kind].send(key=account.encode(), value=value.encode())
            pending.append(fatal_on_failure(fut, kind))
            if kind == "window":
                m.windows_emitted.labels(f"{orjson.loads(value)['size_seconds']}s").inc()
            else:
                alert = orjson.loads(value)
                m.alerts.labels(alert["type"], alert["severity"], rt.labels.label(account)).inc()
            if newest:
                m.output_latency.labels(kind).observe(max(0.0, now - newest / 1000))
        await asyncio.gather(*pending)
        await self.write(p, keys.marker(p), orjson.dumps(rt.aggregator.marker(state)))
        for i in range(parts):
            await self.write(p, keys.outbox(p, i), None)

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
                if state is None or p in self.catch_up:
                    continue
                if inputs is not None:
                    state.sources.expected = inputs
                await self.close(p, state, wall_ms, prune=True)
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
        return {p: s for p, s in self.rt.states.items() if p not in self.catch_up}

    def log_status(self, wall_ms: int) -> None:
        """One line per partition: where its watermark stands and what holds it."""
        cfg = self.rt.aggregator.cfg
        for p, state in sorted(self.rt.states.items()):
            v = status.partition_status(
                state,
                cfg,
                published_ms=self.published.get(p),
                catching_up=p in self.catch_up,
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
                published_ms=self.published.get(p),
                catching_up=p in self.catch_up,
                lag=lag,
                wall_ms=wall_ms,
                detectors_behind=p in self.detection_behind,
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

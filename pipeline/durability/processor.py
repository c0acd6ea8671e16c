"""The partition processor: every decision the aggregator agent makes about one
partition, as data. Given the partition's state, one input (a batch of rows and a
progress report, or a tick) and the time, it returns an ordered list of effects;
the agent performs them in order and decides nothing. No broker, no clock: the
time is an argument, so a crash at any effect is a unit test.

The durability order of a close is `_publish`, in numbered steps."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.config.settings import ThresholdRule
from pipeline.detection.series import Detection, Judged, build_alert
from pipeline.durability import keys
from pipeline.durability.restore import Restored
from pipeline.ingest import deadletter
from pipeline.model import wire
from pipeline.responses import alerts as response_alerts
from pipeline.responses import snapshot as response_snapshot
from pipeline.responses.tracker import Decision, ResponseTracker
from pipeline.windows import status, thresholds
from pipeline.windows.aggregator import Aggregator, FinalWindow, PartitionState
from pipeline.windows.early import EarlyAlerts, Raised
from pipeline.windows.valve import SETTLE_MS, Sources

WINDOW, ALERT, DEADLETTER = "window", "alert", "deadletter"  # the topics effects go to


@dataclass(frozen=True, slots=True)
class Put:
    """A changelog record of the partition; a value of None is a tombstone."""

    key: bytes
    value: bytes | None


@dataclass(frozen=True, slots=True)
class Barrier:
    """Everything sent before must be acknowledged before anything after is sent."""


@dataclass(frozen=True, slots=True)
class Publish:
    topic: str  # WINDOW, ALERT or DEADLETTER
    key: bytes | None
    value: bytes
    newest_ms: int = 0  # broker time of the newest event behind it (0: none)


Effect = Put | Barrier | Publish


@dataclass
class Observed:
    """What a step saw, for the metrics (the agent counts them once per step)."""

    rows: list[wire.Row] = field(default_factory=list)  # accepted
    duplicates: int = 0
    late_counted: int = 0
    too_late: int = 0
    oldest_ms: int | None = None  # broker time of the oldest row of the batch
    first_responses: list[tuple[str, str, float]] = field(default_factory=list)
    # Internal-topic offsets jumped over since the last message: messages never seen,
    # so never applied (the topic is neither compacted nor transactional).
    skipped_offsets: int = 0
    # What the step's close decided, for the engagement gauges: the final window
    # records published, how each detector series judged the newest final window,
    # the accounts the detectors forgot, and the response-time decisions.
    windows: list[FinalWindow] = field(default_factory=list)
    judged: dict[tuple[str, str], Judged] = field(default_factory=dict)
    forgotten: set[str] = field(default_factory=set)
    decisions: list[Decision] = field(default_factory=list)


@dataclass
class Step:
    effects: list[Effect] = field(default_factory=list)
    observed: Observed = field(default_factory=Observed)


@dataclass(frozen=True, slots=True)
class Limits:
    close_every_ms: int = 200  # a close costs broker round trips: at most this often
    # Windows published per close, so the marker that carries them stays far below
    # the broker's message size limit however far a catch-up moves the watermark.
    max_close: int = 400
    outbox_part: int = 300  # output records per outbox changelog record (~200 KB)
    # Windows fed to the detectors per close (about 0.1 s): a replay over months means
    # millions, and detection then trails instead of stopping the worker.
    detect_per_close: int = 20_000
    snapshot_interval_s: float = 60.0  # response state snapshots at most this often


@dataclass
class _Partition:
    last_close_ms: int = 0  # wall time of the last close
    last_snapshot_s: float | None = None  # monotonic time of the last response snapshot
    # emitted-through watermark of the last detection pass: the next pass is due only
    # when it moves or windows close (a close runs every 200 ms, mostly with neither)
    detected_through: int | None = -1
    detection_behind: bool = False
    published_ms: int | None = None  # the watermark whose outputs are all published
    outbox: list[list[Any]] = field(default_factory=list)  # restored, to publish again
    outbox_parts: int = 0
    # Restored: the end offset of the backlog to re-read before anything closes. The
    # restored watermark may already make windows final whose rows are in that
    # backlog (their deltas were lost in the crash); closing first would make them late.
    catch_up: int | None = None
    next_offset: int | None = None  # of the internal topic: the next message to read
    # Restored: look at every open window for early alerts a crash left undecided
    recheck: bool = False


class PartitionProcessor:
    def __init__(
        self,
        aggregator: Aggregator,
        tracker: ResponseTracker,
        detection: Detection,
        rules: Sequence[ThresholdRule],
        limits: Limits | None = None,
        *,
        early: bool = True,
    ) -> None:
        self.aggregator = aggregator
        self.tracker = tracker
        self.detection = detection
        self.rules = tuple(rules)
        self.limits = limits or Limits()
        self.parts: dict[int, _Partition] = {}
        found = EarlyAlerts(self.rules, detection, aggregator.cfg)
        self.early = found if early and found.enabled else None

    def _p(self, p: int) -> _Partition:
        if p not in self.parts:
            self.parts[p] = _Partition()
        return self.parts[p]

    # -- what the agent asks --------------------------------------------------------
    def restored(
        self,
        p: int,
        restored: Restored,
        backlog_end: int = 0,
        *,
        wall_ms: int | None = None,
        inputs: frozenset[str] | None = None,
    ) -> None:
        """A partition rebuilt from its records: its unpublished outbox goes out first,
        and nothing closes before the input up to `backlog_end` (the internal topic's
        end offset at the restore) has been read. In a worker (`wall_ms` given), whose
        routers report every input partition, the watermark also holds until each of
        `inputs` has been heard from, and for SETTLE_MS: the state knows nothing of
        other routers' inputs after a restart."""
        part = self.parts[p] = _Partition()
        part.outbox, part.outbox_parts = restored.outbox, restored.outbox_parts
        part.catch_up = backlog_end or None
        part.recheck = True
        if wall_ms is not None:
            restored.state.sources = Sources(
                self.aggregator.cfg.source_stale_ms,
                settle_until_ms=wall_ms + SETTLE_MS,
                required=True,
                expected=inputs,
            )

    def drop(self, p: int) -> None:
        self.parts.pop(p, None)

    def published(self, p: int) -> int | None:
        return self.parts[p].published_ms if p in self.parts else None

    def detection_behind(self, p: int) -> bool:
        return p in self.parts and self.parts[p].detection_behind

    def catching_up(self, p: int) -> bool:
        return p in self.parts and self.parts[p].catch_up is not None

    def status(
        self,
        p: int,
        state: PartitionState,
        wall_ms: int,
        backlog_end: int | None = None,
        published: Callable[[int], int | None] | None = None,
    ) -> dict[str, Any]:
        """Partition p in the status document; its lag is known when the internal
        topic's end offset (`backlog_end`) is. `published`: what the partition has
        published as far as its effects are performed (default: as decided)."""
        part = self.parts.get(p)
        nxt = part.next_offset if part else None
        lag = None
        if backlog_end is not None and backlog_end >= 0 and nxt is not None:
            lag = max(0, backlog_end - nxt)
        return status.partition_status(
            state,
            self.aggregator.cfg,
            published_ms=(published or self.published)(p),
            catching_up=self.catching_up(p),
            lag=lag,
            wall_ms=wall_ms,
            detectors_behind=self.detection_behind(p),
        )

    # -- inputs ---------------------------------------------------------------------
    def batch(
        self,
        p: int,
        state: PartitionState,
        offset: int,
        rows: list[wire.Row],
        report: Mapping[str, list[int | None]] | None,
        wall_ms: int,
        mono_s: float,
    ) -> Step:
        """One message of the internal topic (at `offset`): rows and/or a router's
        progress report."""
        step, part = Step(), self._p(p)
        if part.next_offset is not None and offset > part.next_offset:
            step.observed.skipped_offsets = offset - part.next_offset
        part.next_offset = offset + 1
        if part.outbox_parts:
            self._republish(p, state, part, step.effects)
        if part.recheck:
            self._recheck(p, state, part, step.effects)
        if rows:
            self._apply_rows(p, state, rows, offset, wall_ms, step)
        if report:
            self.aggregator.apply_progress(state, report, wall_ms)
        if part.catch_up is not None:
            if offset + 1 < part.catch_up:
                return step
            part.catch_up = None
        if wall_ms - part.last_close_ms >= self.limits.close_every_ms:
            self._close(p, state, wall_ms, mono_s, False, step)
        return step

    def tick(self, p: int, state: PartitionState, wall_ms: int, mono_s: float) -> Step:
        """Once a second: idle advance, and pruning even when nothing closes (nothing
        while a restored partition re-reads its backlog)."""
        step, part = Step(), self._p(p)
        if part.catch_up is not None:
            return step
        if part.outbox_parts:
            self._republish(p, state, part, step.effects)
        if part.recheck:
            self._recheck(p, state, part, step.effects)
        self._close(p, state, wall_ms, mono_s, True, step)
        return step

    # -- applying -------------------------------------------------------------------
    def _apply_rows(
        self,
        p: int,
        state: PartitionState,
        rows: list[wire.Row],
        offset: int,
        wall_ms: int,
        step: Step,
    ) -> None:
        applied = self.aggregator.apply_batch(state, rows, offset, wall_ms)
        if applied.skipped:
            state.touched.clear()
            return
        seen = step.observed
        # Dead letters first, acknowledged before the delta: once the delta is durable
        # the batch counts as applied and is skipped if read again, so its dead letters
        # must already be out (a crash in between sends them again: at least once).
        for row in applied.too_late:
            record = deadletter.too_late_record(wire.row_as_event(row), wire.row_src(row))
            step.effects.append(Publish(DEADLETTER, None, record))
        if applied.too_late:
            step.effects.append(Barrier())
        if applied.delta is not None:
            step.effects.append(
                Put(keys.delta(p, applied.delta.seq), orjson.dumps(applied.delta.to_json()))
            )
            seen.rows = applied.delta.rows
            self.tracker.apply_rows(state.responses, applied.delta.response_rows())
        if self.early is None:
            state.touched.clear()
        else:
            raised = self.early.after_rows(state)
            if raised:  # after the delta they count
                self._publish(p, state, _early_outbox(raised), step.effects)
        seen.duplicates, seen.late_counted = applied.duplicates, applied.late_counted
        seen.too_late = len(applied.too_late)
        seen.oldest_ms = min(wire.row_src(r)[3] for r in rows)

    # -- closing --------------------------------------------------------------------
    def _close(
        self,
        p: int,
        state: PartitionState,
        wall_ms: int,
        mono_s: float,
        prune: bool,
        step: Step,
    ) -> None:
        """Publish the windows that became final, their alerts, the detectors' and the
        response clock's alerts; snapshot and prune after publishing, or when asked."""
        part, effects = self._p(p), step.effects
        part.last_close_ms = wall_ms
        before = state.emitted_through_ms
        records = self.aggregator.close_windows(state, wall_ms, max_windows=self.limits.max_close)
        outbox = self._outputs(state, records)
        step.observed.windows.extend(records)
        fed: set[str] = set()
        if records or part.detection_behind or part.detected_through != state.emitted_through_ms:
            part.detected_through = state.emitted_through_ms
            outbox += self._detection_outputs(part, state, records, fed, step.observed)
        if self.early is not None:
            if state.early:
                self.early.settle(state)
            # windows the close made certain, published by the same marker
            outbox += _early_outbox(self.early.after_close(state, before, fed))
        if state.watermark.floor_ms is not None:
            outbox += self._response_outputs(state, state.watermark.floor_ms, step.observed)
        if outbox:
            self._publish(p, state, outbox, effects)
        if (records or prune) and self.aggregator.needs_snapshot(state):
            self._snapshot(p, state, part, mono_s, effects)
        dead = self.aggregator.prune(state) if records or prune else []
        if dead:
            # The marker carries what pruning keeps in memory (the last followers level)
            # ahead of the tombstones that drop the deltas it came from; it also records
            # the applied offset, so the deltas up to it must be delivered first.
            effects.append(Barrier())
            effects.append(Put(keys.marker(p), orjson.dumps(self.aggregator.marker(state))))
            effects.extend(Put(keys.delta(p, seq), None) for seq in dead)
        wm, emitted = state.watermark.floor_ms, state.emitted_through_ms
        if wm is not None and emitted is not None:
            part.published_ms = min(wm, emitted)

    def _publish(
        self, p: int, state: PartitionState, outbox: list[list[Any]], effects: list[Effect]
    ) -> None:
        """The durability order of a close."""
        size = self.limits.outbox_part
        parts = [outbox[i : i + size] for i in range(0, len(outbox), size)]
        # 1. Every delta and dead letter sent so far is acknowledged: a window is never
        #    published ahead of the rows it counts.
        effects.append(Barrier())
        # 2. The outputs, in parts below the broker's size limit, and the marker that
        #    makes the close decision durable by naming them; acknowledged.
        effects.extend(Put(keys.outbox(p, i), orjson.dumps(part)) for i, part in enumerate(parts))
        marker = {**self.aggregator.marker(state), "outbox_parts": len(parts)}
        effects.append(Put(keys.marker(p), orjson.dumps(marker)))
        effects.append(Barrier())
        # 3. to 5. The outputs themselves, acknowledged; then the marker without them.
        self._send(p, state, outbox, len(parts), effects)

    def _recheck(
        self, p: int, state: PartitionState, part: _Partition, effects: list[Effect]
    ) -> None:
        """Restored: an early alert whose rows were durable and whose publication was
        not is decided again on the same state, so it is the same record."""
        part.recheck = False
        if self.early is not None:
            raised = self.early.everything(state)
            if raised:
                self._publish(p, state, _early_outbox(raised), effects)

    def _republish(
        self, p: int, state: PartitionState, part: _Partition, effects: list[Effect]
    ) -> None:
        """A restored outbox: the outputs a crash after step 2 left unpublished."""
        outbox, parts = part.outbox, part.outbox_parts
        part.outbox, part.outbox_parts = [], 0
        self._send(p, state, outbox, parts, effects)

    def _send(
        self,
        p: int,
        state: PartitionState,
        outbox: list[list[Any]],
        parts: int,
        effects: list[Effect],
    ) -> None:
        # 3. Windows and alerts to their topics; detector states, which are state and
        #    not output, to the changelog.
        for kind, account, value, newest in outbox:
            if kind == "detector":
                effects.append(Put(keys.detector(p, account), value.encode() or None))
            else:
                effects.append(Publish(kind, account.encode(), value.encode(), newest or 0))
        # 4. All of them acknowledged.
        effects.append(Barrier())
        # 5. The marker without the outbox, and tombstones for its parts.
        effects.append(Put(keys.marker(p), orjson.dumps(self.aggregator.marker(state))))
        effects.extend(Put(keys.outbox(p, i), None) for i in range(parts))

    def _snapshot(
        self,
        p: int,
        state: PartitionState,
        part: _Partition,
        mono_s: float,
        effects: list[Effect],
    ) -> None:
        """Make the response state durable up to the current delta, so the deltas it
        covers may be dropped: at most every `snapshot_interval_s`."""
        if (
            part.last_snapshot_s is not None
            and mono_s - part.last_snapshot_s < self.limits.snapshot_interval_s
        ):
            return
        part.last_snapshot_s = mono_s
        st = state.responses
        values = response_snapshot.snapshot(st, state.seq)
        gen, old_gen, old_parts = st.snap_gen + 1, st.snap_gen, st.snap_parts
        # The deltas it covers are durable before a marker may name it.
        effects.append(Barrier())
        effects.extend(Put(keys.snapshot(p, gen, i), v) for i, v in enumerate(values))
        effects.append(Barrier())
        st.snap_seq, st.snap_gen, st.snap_parts = state.seq, gen, len(values)
        effects.append(Put(keys.marker(p), orjson.dumps(self.aggregator.marker(state))))
        effects.append(Barrier())
        # The previous generation is no longer named.
        effects.extend(Put(keys.snapshot(p, old_gen, i), None) for i in range(old_parts))

    # -- what a close publishes -----------------------------------------------------
    def _outputs(self, state: PartitionState, records: Iterable[FinalWindow]) -> list[list[Any]]:
        """[kind, key, value, newest broker ms] of closing windows and their threshold
        alerts; evaluating them advances the cooldowns, which the same marker records."""
        out: list[list[Any]] = []
        for final in records:
            rec = final.record
            newest = final.newest_broker_ms
            out.append([WINDOW, rec["account_id"], orjson.dumps(rec).decode(), newest])
            for alert in thresholds.evaluate(
                rec, final.start_ms, final.end_ms, self.rules, state.cooldowns
            ):
                if state.early.pop(alert["alert_id"], None) is None:  # else raised early
                    out.append([ALERT, rec["account_id"], orjson.dumps(alert).decode(), newest])
        return out

    def _detection_outputs(
        self,
        part: _Partition,
        state: PartitionState,
        records: list[FinalWindow],
        fed: set[str],
        seen: Observed,
    ) -> list[list[Any]]:
        """Spike/drop alerts of the windows now final, and the detector state of every
        account that moved (added to `fed`): both are published by the same marker. At
        most `detect_per_close` windows are fed per close; the rest on the next ones."""
        det = self.detection
        adv = det.advance(
            state.detection,
            (r.record for r in records),
            state.emitted_through_ms,
            self.aggregator.cfg.grace_ms,
            budget=self.limits.detect_per_close,
        )
        part.detection_behind = adv.behind
        fed.update(adv.changed)
        seen.judged.update(adv.latest)
        seen.forgotten.update(adv.forgotten)
        out: list[list[Any]] = []
        for f in adv.found:
            alert = build_alert(f, det.cfg.window_s, det.detector(f.account, f.series).cfg)
            if state.early.pop(alert["alert_id"], None) is None:  # else raised early
                out.append([ALERT, f.account, orjson.dumps(alert).decode(), 0])
        for account in sorted(adv.changed):
            value = orjson.dumps(state.detection[account].to_json()).decode()
            out.append(["detector", account, value, 0])
        out.extend(["detector", account, "", 0] for account in sorted(adv.forgotten))
        return out

    def _response_outputs(
        self, state: PartitionState, watermark_ms: int, seen: Observed
    ) -> list[list[Any]]:
        """SLA and degradation alerts the watermark made due; first responses seen."""
        advanced = self.tracker.advance(state.responses, watermark_ms)
        seen.first_responses.extend(advanced.first_responses)
        seen.decisions.extend(advanced.decisions)
        return [
            [ALERT, d.account, orjson.dumps(response_alerts.build(d)).decode(), 0]
            for d in advanced.decisions
        ]


def _early_outbox(raised: list[Raised]) -> list[list[Any]]:
    return [[ALERT, r.account, orjson.dumps(r.record).decode(), r.newest_ms] for r in raised]

"""Progress of the input partitions that feed one internal partition.

After repartitioning, an internal partition mixes events from many input
partitions, read at different speeds while the worker catches up (after
downtime, or in a replay). A watermark taken from the newest event alone would
run ahead of a slower input partition and turn its events into late ones.

So every router reports, for each input partition it reads, the newest event
time it forwarded and how many messages it still has to read (its lag). The
internal partition's watermark comes from a valve over those input partitions
(Apache Flink's `StatusWatermarkValve` with `WatermarksWithIdleness`), each of
which has an explicit status:

- IDLE: no backlog (lag 0), a recent report, and no newer event for
  `idle_after` of wall time; it is ACTIVE again with its next event. An IDLE
  input partition does not hold the watermark, so one that went quiet days of
  event time before the end of a replay cannot keep the rest of it open.
- ACTIVE: everything else. The watermark is the minimum over ACTIVE input
  partitions of their newest event time minus the allowed lateness. One with a
  backlog but no event read yet, or with an unknown lag, holds it where it is.
- When every input partition is IDLE, the watermark is the newest event time
  seen on any of them minus the allowed lateness, advanced by the wall time
  elapsed since that event was read: quiet accounts still close, and a replay of
  last year that pauses moves forward by the pause, never to "now".

Holding rules that make a catch-up safe:
- one whose router stopped reporting (killed, or lost the partition in a
  rebalance) is ACTIVE without idleness until it is reported again by its new
  owner, or for at most `stale_ms`;
- in a worker every input partition must be reported: one that nobody reports
  (its reader died and the group has not reassigned it yet, or a report went
  stale) holds the watermark. A restarted worker that owns only some input
  partitions would otherwise close windows whose events wait, unread, in the
  partitions of a dead group member.

The trade-off of idleness: an event that arrives on an IDLE input partition
behind the watermark is late (counted in a window still open, or too late).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from pipeline.windows.watermark import BLOCKED

KEEPALIVE_MS = 2_000  # a router re-sends an unchanged report this often
TRUSTED_MS = 3 * KEEPALIVE_MS  # a report this recent may count as IDLE
SETTLE_MS = 2 * KEEPALIVE_MS + 1_000  # after a restart, wait to hear from every router


class InputStatus(StrEnum):
    ACTIVE = "ACTIVE"
    IDLE = "IDLE"


@dataclass(frozen=True, slots=True)
class InputView:
    """One input partition as the valve sees it at an instant."""

    status: InputStatus
    reason: str  # why it has that status, for the status API and logs
    position_ms: int | None  # what it allows as an ACTIVE input (None: holds where it is)


@dataclass(slots=True)
class SourceReport:
    max_ts_ms: int | None  # newest event time forwarded from that input partition
    lag: int | None  # messages still to read there; None when unknown
    wall_ms: int  # when the last report arrived
    advanced_wall_ms: int  # when max_ts_ms last increased


@dataclass(slots=True)
class Sources:
    stale_ms: int
    reports: dict[str, SourceReport] = field(default_factory=dict)
    # In a worker, routers always report: no report at all means "not heard yet",
    # which must hold rather than fall back to this partition's own newest event.
    required: bool = False
    # After a (re)start nothing is known about other routers' input partitions:
    # the watermark holds until then.
    settle_until_ms: int | None = None
    # Every input partition ("topic:partition"), when `required`; None until the
    # worker knows the input topics' partition counts (holds meanwhile).
    expected: frozenset[str] | None = None

    def missing(self) -> list[str]:
        """Input partitions that must be reported and are not (sorted)."""
        if not self.required:
            return []
        if self.expected is None:
            return ["<input partitions not known yet>"]
        return sorted(s for s in self.expected if s not in self.reports)

    def update(self, report: Mapping[str, list[int | None]], wall_ms: int) -> None:
        for source, (max_ts, lag) in report.items():
            prev = self.reports.get(source)
            advanced = wall_ms
            if prev is not None:
                advanced = prev.advanced_wall_ms
                if prev.max_ts_ms is not None and (max_ts is None or max_ts <= prev.max_ts_ms):
                    max_ts = prev.max_ts_ms  # never backwards (a restarted router, a late report)
                elif max_ts is not None:
                    advanced = wall_ms
            self.reports[source] = SourceReport(max_ts, lag, wall_ms, advanced)

    def view(
        self, r: SourceReport, wall_ms: int, lateness_ms: int, idle_after_ms: int
    ) -> InputView:
        """The status of one reported input partition at `wall_ms`."""
        if r.max_ts_ms is None and r.lag == 0:
            return InputView(InputStatus.IDLE, "empty: nothing read and nothing to read", None)
        position = None if r.max_ts_ms is None else r.max_ts_ms - lateness_ms
        age_ms = wall_ms - r.wall_ms
        if age_ms > TRUSTED_MS:
            return InputView(
                InputStatus.ACTIVE, f"holding: no report for {age_ms / 1000:.0f} s", position
            )
        if r.lag is None:
            return InputView(InputStatus.ACTIVE, "holding: lag unknown", position)
        if r.lag > 0:
            if position is None:
                return InputView(
                    InputStatus.ACTIVE, f"holding: {r.lag} messages, none read yet", None
                )
            return InputView(InputStatus.ACTIVE, f"backlog of {r.lag} messages", position)
        quiet_ms = wall_ms - r.advanced_wall_ms
        if quiet_ms >= idle_after_ms:
            return InputView(
                InputStatus.IDLE, f"no backlog, no newer event for {quiet_ms / 1000:.0f} s", None
            )
        return InputView(InputStatus.ACTIVE, f"newer event {quiet_ms / 1000:.0f} s ago", position)

    def expire(self, wall_ms: int) -> None:
        """Forget reports older than `stale_ms`."""
        for source in [s for s, r in self.reports.items() if wall_ms - r.wall_ms > self.stale_ms]:
            del self.reports[source]

    def watermark(self, wall_ms: int, lateness_ms: int, idle_after_ms: int) -> int | None:
        """The watermark the input partitions allow; None when none is known (the
        caller then falls back to the partition's own events); BLOCKED to hold."""
        if self.settle_until_ms is not None:
            if wall_ms < self.settle_until_ms:
                return BLOCKED
            self.settle_until_ms = None
        self.expire(wall_ms)
        if self.required and (
            self.expected is None or not all(src in self.reports for src in self.expected)
        ):
            return BLOCKED  # an input partition nobody reports (`missing` names them)
        active_min: int | None = None
        newest: SourceReport | None = None
        for r in self.reports.values():
            if r.max_ts_ms is not None and (
                newest is None
                or newest.max_ts_ms is None
                or (r.max_ts_ms, r.advanced_wall_ms) > (newest.max_ts_ms, newest.advanced_wall_ms)
            ):
                newest = r
            v = self.view(r, wall_ms, lateness_ms, idle_after_ms)
            if v.status is InputStatus.IDLE:
                continue
            if v.position_ms is None:
                return BLOCKED
            if active_min is None or v.position_ms < active_min:
                active_min = v.position_ms
        if active_min is not None:
            return active_min
        if newest is None or newest.max_ts_ms is None:
            return BLOCKED if self.required and not self.reports else None
        # every input partition is IDLE: follow the newest event, advanced by wall time
        return newest.max_ts_ms - lateness_ms + max(0, wall_ms - newest.advanced_wall_ms)

    def describe(self, wall_ms: int, lateness_ms: int, idle_after_ms: int) -> dict[str, Any]:
        """Every input partition's status, for the status API: ACTIVE or IDLE, why, and
        whether it is what holds the watermark now."""
        views = {
            src: (r, self.view(r, wall_ms, lateness_ms, idle_after_ms))
            for src, r in self.reports.items()
        }
        active = [v.position_ms for _, v in views.values() if v.status is InputStatus.ACTIVE]
        known = [pos for pos in active if pos is not None]
        lowest = min(known) if known and len(known) == len(active) else None
        out: dict[str, Any] = {
            src: {
                "status": v.status.value,
                "reason": v.reason,
                "newest_event_ms": r.max_ts_ms,
                "lag": r.lag,
                "holds": v.status is InputStatus.ACTIVE
                and (v.position_ms is None or v.position_ms == lowest),
            }
            for src, (r, v) in sorted(views.items())
        }
        for src in self.missing():
            out[src] = {
                "status": InputStatus.ACTIVE.value,
                "reason": "holding: not reported yet",
                "newest_event_ms": None,
                "lag": None,
                "holds": True,
            }
        return out

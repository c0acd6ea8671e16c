"""Progress of the input partitions that feed one internal partition.

After repartitioning, an internal partition mixes events from many input
partitions, read at different speeds while the worker catches up (after
downtime, or in a replay). A watermark taken from the newest event alone would
run ahead of a slower input partition and turn its events into late ones.

So every router reports, for each input partition it reads, the newest event
time it forwarded and how many messages it still has to read (its lag), and an
internal partition's watermark is the minimum over input partitions of their
own watermarks (like Flink's watermark alignment across input channels):

- an input partition's watermark is its newest event time minus the allowed
  lateness;
- one that has caught up (lag 0) and has had no newer event for `idle_after`
  advances by the wall time since its last newer event, so quiet accounts
  still close, relative to the last event and never to "now";
- one with a backlog but no event seen yet blocks the watermark;
- one whose router stopped reporting (killed, or lost the partition in a
  rebalance) holds at its last position without idle advance until it is
  reported again by its new owner, or for at most `stale_ms`;
- in a worker every input partition must be reported: one that nobody reports
  (its reader died and the group has not reassigned it yet, or a report went
  stale) holds the watermark. A restarted worker that owns only some input
  partitions would otherwise close windows whose events wait, unread, in the
  partitions of a dead group member.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.watermark import BLOCKED

KEEPALIVE_MS = 2_000  # a router re-sends an unchanged report this often
TRUSTED_MS = 3 * KEEPALIVE_MS  # a report this recent may idle-advance
SETTLE_MS = 2 * KEEPALIVE_MS + 1_000  # after a restart, wait to hear from every router


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

    def watermark(self, wall_ms: int, lateness_ms: int, idle_after_ms: int) -> int | None:
        """The watermark the input partitions allow; None when none is known (the
        caller then falls back to the partition's own events); BLOCKED to hold."""
        if self.settle_until_ms is not None:
            if wall_ms < self.settle_until_ms:
                return BLOCKED
            self.settle_until_ms = None
        for source in [s for s, r in self.reports.items() if wall_ms - r.wall_ms > self.stale_ms]:
            del self.reports[source]
        if self.required and (
            self.expected is None or not all(src in self.reports for src in self.expected)
        ):
            return BLOCKED  # an input partition nobody reports (`missing` names them)
        wm: int | None = None
        for r in self.reports.values():
            age = wall_ms - r.wall_ms
            if r.max_ts_ms is None:
                if r.lag == 0:
                    continue  # nothing valid read yet, and nothing pending
                return BLOCKED
            w = r.max_ts_ms - lateness_ms
            idle_ms = wall_ms - r.advanced_wall_ms
            if r.lag == 0 and age <= TRUSTED_MS and idle_ms >= idle_after_ms:
                w += idle_ms
            if wm is None or w < wm:
                wm = w
        if wm is None and self.required and not self.reports:
            return BLOCKED
        return wm

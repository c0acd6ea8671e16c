"""Progress of the input partitions that feed one internal partition.

After repartitioning, an internal partition mixes events from many input
partitions, which are read at different speeds while the worker catches up
(after downtime, or in a replay). A watermark taken from the newest event alone
would run ahead of a slower input partition and turn its events into late ones.
So the router reports, for each input partition it reads, the newest event time
it forwarded and how many messages it still has to read (its lag); the
watermark may not pass an input partition that still has a backlog, and idle
advance waits until every input partition has caught up.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.watermark import BLOCKED


@dataclass(slots=True)
class SourceReport:
    max_ts_ms: int | None  # newest event time forwarded from that input partition
    lag: int | None  # messages still to read there; None when unknown
    wall_ms: int  # when the report arrived


@dataclass(slots=True)
class Sources:
    """Reports older than `stale_ms` are ignored: their router stopped, or lost the
    input partition in a rebalance and its new owner reports it afresh."""

    stale_ms: int
    reports: dict[str, SourceReport] = field(default_factory=dict)
    # Set when a worker (re)starts: until the first report arrives, nothing is
    # known about backlogs, so the watermark holds (for at most stale_ms).
    waiting_since_ms: int | None = None

    def update(self, report: Mapping[str, list[int | None]], wall_ms: int) -> None:
        for source, (max_ts, lag) in report.items():
            prev = self.reports.get(source)
            if max_ts is None and prev is not None:
                max_ts = prev.max_ts_ms
            elif prev is not None and prev.max_ts_ms is not None and max_ts is not None:
                max_ts = max(max_ts, prev.max_ts_ms)
            self.reports[source] = SourceReport(max_ts, lag, wall_ms)
        self.waiting_since_ms = None

    def hold(self, wall_ms: int) -> tuple[int | None, bool]:
        """(bound on the event time the watermark may reach, whether any input
        partition still has a backlog). A bound of None means no bound."""
        if self.waiting_since_ms is not None and wall_ms - self.waiting_since_ms < self.stale_ms:
            return BLOCKED, True
        bound: int | None = None
        backlog = False
        for source, r in list(self.reports.items()):
            if wall_ms - r.wall_ms > self.stale_ms:
                del self.reports[source]
                continue
            if r.lag == 0:
                continue
            backlog = True
            ts = BLOCKED if r.max_ts_ms is None else r.max_ts_ms
            if bound is None or ts < bound:
                bound = ts
        return bound, backlog

"""Per-partition window aggregation: dedup, event-time windows, finalization.

All state of one partition of the internal events topic lives in a
`PartitionState`. Each applied batch yields a `Delta` (the rows it accepted,
with the source offset) that is written to the changelog as one record, so a
batch costs one changelog write, not one per event. Restoring replays the
retained deltas through the same code that applied them live.

Crash safety: a batch whose offset is at or below `applied_offset` was already
applied before the crash and is skipped whole; redelivered events that reach
the internal topic again (at new offsets) are caught by event_id dedup.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from typing import Any

from pipeline.model import records, wire
from pipeline.model.events import KINDS
from pipeline.windows import rates
from pipeline.windows.arithmetic import is_final, rfc3339, window_bounds, window_start
from pipeline.windows.retention import Retention
from pipeline.windows.state import (
    SOURCE_STALE_MS,
    AggregatorConfig,
    Applied,
    Delta,
    FinalWindow,
    PartitionState,
    WindowAgg,
    WindowKey,
    dedup_key,
)
from pipeline.windows.watermark import Watermark

__all__ = [
    "SOURCE_STALE_MS",
    "Aggregator",
    "AggregatorConfig",
    "Applied",
    "Delta",
    "FinalWindow",
    "PartitionState",
    "WindowAgg",
    "WindowKey",
    "dedup_key",
]


class Aggregator(Retention):
    def __init__(self, cfg: AggregatorConfig) -> None:
        self.cfg = cfg

    def watermark(self, state: PartitionState, wall_ms: int) -> Watermark:
        """The partition's watermark: from input-partition progress where known."""
        cfg = self.cfg
        state.watermark.source_ms = state.sources.watermark(
            wall_ms, cfg.lateness_ms, cfg.idle_after_ms
        )
        return Watermark(cfg.lateness_ms, cfg.idle_after_ms, state.watermark)

    def apply_progress(
        self, state: PartitionState, report: Mapping[str, list[int | None]], wall_ms: int
    ) -> None:
        """Record a router's progress report for its input partitions."""
        state.sources.update(report, wall_ms)

    # -- applying -------------------------------------------------------------
    def apply_batch(
        self, state: PartitionState, rows: list[wire.Row], offset: int, wall_ms: int
    ) -> Applied:
        """Apply one batch read at `offset` of this partition."""
        if offset <= state.applied_offset:
            return Applied(None, skipped=True)
        wm = self.watermark(state, wall_ms)
        wm_now = wm.current(wall_ms)
        emitted = state.emitted_through_ms
        grace, sizes = self.cfg.grace_ms, self.cfg.sizes_ms
        dedup = state.dedup
        response_kinds = self.cfg.response_kinds
        out = Applied(None)
        accepted: list[wire.Row] = []
        late_idx: list[int] = []
        kept: list[wire.Row] = []  # too late for windows, still for response pairing
        max_end = 0
        max_ts = kept_max_ts = -1
        for row in rows:
            key = dedup_key(row)
            ts = wire.row_ts(row)
            if key in dedup:
                out.duplicates += 1
                continue
            # Too late: its smallest window is already final (and emitted).
            if emitted is not None and is_final(window_bounds(ts, sizes[0])[1], emitted, grace):
                out.too_late.append(row)
                if row[0] == wire.INTERACTION and row[wire.I_KIND] in response_kinds:
                    dedup.add(key, ts)  # a redelivery is a duplicate, not a second reply
                    kept.append(row)
                    kept_max_ts = max(kept_max_ts, ts)
                continue
            dedup.add(key, ts)
            late = wm_now is not None and ts < wm_now
            if late:
                late_idx.append(len(accepted))
                out.late_counted += 1
            accepted.append(row)
            end = self._apply_row(state, row, late)
            if end > max_end:
                max_end = end
            if ts > max_ts:
                max_ts = ts
        state.applied_offset = offset
        if max_ts >= 0:
            wm.observe(max_ts, wall_ms)
        if not accepted and not kept:
            return out
        state.seq += 1
        max_ts = max(max_ts, kept_max_ts)
        out.delta = Delta(state.seq, offset, accepted, late_idx, max_end, max_ts, kept)
        state.deltas.append((state.seq, max_end, max_ts))
        return out

    def _apply_row(self, state: PartitionState, row: wire.Row, late: bool) -> int:
        """Add one accepted row to every window size; return the largest window end."""
        windows = state.windows
        interaction = row[0] == wire.INTERACTION
        if interaction:
            account, channel, ts = row[wire.I_ACCOUNT], row[wire.I_CHANNEL], row[wire.I_TS]
            kind, actor, sentiment = row[wire.I_KIND], row[wire.I_ACTOR], row[wire.I_SENTIMENT]
            broker_ms = row[wire.I_SRC][3]
        else:
            account, channel, ts = row[wire.X_ACCOUNT], row[wire.X_CHANNEL], row[wire.X_TS]
            broker_ms = row[wire.X_SRC][3]
            if row[wire.X_FOLLOWERS] is not None:
                self._add_followers(state, account, channel, ts, row[wire.X_FOLLOWERS])
        max_end = 0
        emitted = state.emitted_through_ms
        for size in self.cfg.sizes_ms:
            start = window_start(ts, size)
            end = start + size
            if end > max_end:
                max_end = end
            # A larger window may still be open when a smaller one is final;
            # a window at or below the emitted watermark was already published.
            if emitted is not None and end + self.cfg.grace_ms <= emitted:
                continue
            key = (account, channel, size, start)
            agg = windows.get(key)
            if agg is None:
                agg = windows[key] = WindowAgg()
                keys = state.by_end.get(end)
                if keys is None:
                    keys = state.by_end[end] = []
                    heapq.heappush(state.ends, end)
                keys.append(key)
                group = state.groups.get((account, size, start))
                if group is None:
                    state.groups[(account, size, start)] = [channel]
                else:
                    group.append(channel)
            if ts > agg.max_event_ms:
                agg.max_event_ms = ts
            if broker_ms > agg.newest_broker_ms:
                agg.newest_broker_ms = broker_ms
            if interaction:
                state.touched.add(key)
                agg.counts[kind] = agg.counts.get(kind, 0) + 1
                if actor is not None:
                    agg.actors.add(actor)
                if late:
                    agg.late += 1
                if sentiment is not None:
                    agg.scored += 1
                    if sentiment <= self.cfg.negative_below:
                        agg.negative += 1
            else:
                if row[wire.X_IMPRESSIONS] is not None:
                    agg.impressions = (agg.impressions or 0) + row[wire.X_IMPRESSIONS]
                if row[wire.X_REACH] is not None:
                    agg.reach = (agg.reach or 0) + row[wire.X_REACH]
        return max_end

    @staticmethod
    def _add_followers(state: PartitionState, account: str, channel: str, ts: int, n: int) -> None:
        hist = state.followers.setdefault((account, channel), [])
        if not hist or ts >= hist[-1][0]:
            hist.append((ts, n))
        else:  # out of order: keep the history sorted by event time
            i = len(hist)
            while i > 0 and hist[i - 1][0] > ts:
                i -= 1
            hist.insert(i, (ts, n))

    # -- closing --------------------------------------------------------------
    def close_windows(
        self, state: PartitionState, wall_ms: int, max_windows: int | None = None
    ) -> list[FinalWindow]:
        """Pop the windows that are final at the current watermark, in a deterministic
        order (end, size, account, channel): all of them, or whole groups of equal end
        up to about `max_windows` (the rest on later calls). `emitted_through_ms` then
        covers exactly the popped windows, so rows for the others still count."""
        ws = state.watermark
        if ws.last_event_wall_ms is None and ws.max_event_ms is not None:
            ws.last_event_wall_ms = wall_ms  # restored: idle time counts from the restart
        wm = self.watermark(state, wall_ms).advance(wall_ms)
        if wm is None:
            return []
        grace = self.cfg.grace_ms
        ends = state.ends
        final: list[WindowKey] = []
        through = wm
        while ends and is_final(ends[0], wm, grace):
            if max_windows is not None and len(final) >= max_windows:
                # stop after a whole group: what is published is exactly what is final
                through = (final[-1][3] + final[-1][2]) + grace
                break
            final.extend(state.by_end.pop(heapq.heappop(ends)))
        if state.emitted_through_ms is None or through > state.emitted_through_ms:
            state.emitted_through_ms = through
        if not final:
            return []
        final.sort(key=lambda k: (k[3] + k[2], k[2], k[0], k[1]))
        records = []
        groups = state.groups
        for k in final:
            agg = state.windows.pop(k)
            groups.pop((k[0], k[2], k[3]), None)
            records.append(
                FinalWindow(k[3], k[3] + k[2], self.record(state, k, agg), agg.newest_broker_ms)
            )
        return records

    def record(self, state: PartitionState, key: WindowKey, agg: WindowAgg) -> dict[str, Any]:
        account, channel, size, start = key
        end = start + size
        counts = {k: agg.counts.get(k, 0) for k in KINDS}
        weighted = rates.weighted_engagement(counts, self.cfg.weights)
        followers = None
        for ts, n in reversed(state.followers.get((account, channel), ())):
            if ts < end:
                followers = n
                break
        by = {
            "followers": rates.rate(weighted, followers),
            "reach": rates.rate(weighted, agg.reach),
            "impressions": rates.rate(weighted, agg.impressions),
        }
        basis = self.cfg.rate_basis.get(account, self.cfg.default_basis)
        return {
            "schema_version": records.SCHEMA_VERSION,
            "account_id": account,
            "channel": channel,
            "window_start": rfc3339(start),
            "window_end": rfc3339(end),
            "size_seconds": size // 1000,
            "counts": counts,
            "unique_actors": len(agg.actors),
            "weighted_engagement": weighted,
            "late_events": agg.late,
            "followers": followers,
            "reach": agg.reach,
            "impressions": agg.impressions,
            "rate_by_followers": by["followers"],
            "rate_by_reach": by["reach"],
            "rate_by_impressions": by["impressions"],
            "engagement_rate": rates.headline(by, basis),
            "rate_basis": basis,
            "sentiment": {"scored": agg.scored, "negative": agg.negative},
        }

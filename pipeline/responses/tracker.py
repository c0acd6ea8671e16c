"""Response times: inbound messages paired with the brand's replies, in event time.

An inbound comment, mention or DM is answered by a `reply` of the same account and
channel whose `in_reply_to` names its `event_id`. Either may arrive first. Nothing
is decided on arrival: every decision waits for the watermark to pass the time it
is about, so the outcome is the same for any arrival order and for a replay.
- The first response is the earliest reply; it is settled once the watermark passes
  that reply's time (an earlier one would now be late). Later replies are
  subsequent responses, timed from the inbound message too.
- SLA warning and breach are judged when the watermark passes their deadline:
  alerted unless a reply came at or before it.
- The rolling p90 of first responses per account x kind x priority is evaluated at
  each step end the watermark passes.

All of it lives in a `ResponseState` per partition of the internal topic, next to
the window state, and is snapshotted to the changelog (`snapshot`/`restore`).
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from ddsketch import DDSketch

from pipeline.model import wire
from pipeline.responses import sketch
from pipeline.responses.settings import ResponseSettings

# What a scheduled item does when the watermark passes its time. At equal times a
# reply is settled before the deadline it meets is judged.
FIRST, WARN, BREACH, ORPHAN, DEGRADE = range(5)
WARNED, BREACHED = 1, 2
MIN_DUE_LIMIT = 65_536  # `due` is never compacted below this many items

InboundKey = tuple[str, str]  # (channel, event_id) within one account
TableKey = tuple[str, str, str, str]  # channel, kind, priority, issue_type ("" if none)
SlaKey = tuple[str, str, str]  # account, kind, priority


@dataclass(slots=True)
class Inbound:
    """One tracked message. Hundreds of thousands are held per partition, so its
    strings are interned and an empty list of replies is None."""

    ts_ms: int
    kind: str
    priority: str
    issue: str
    replies: list[int] | None = None  # reply times not yet settled
    first_ms: int | None = None  # the settled first response
    alerted: int = 0  # WARNED | BREACHED

    @property
    def open(self) -> bool:
        return self.first_ms is None and not self.replies


@dataclass(slots=True)
class Table:
    """One account x channel x kind x priority x issue type."""

    first: DDSketch = field(default_factory=sketch.new)  # calendar seconds
    business: DDSketch | None = None  # business seconds, with a calendar
    subsequent: DDSketch = field(default_factory=sketch.new)
    with_sla: int = 0  # answered inbound that had an SLA
    within_sla: int = 0  # ... answered within it


@dataclass(frozen=True, slots=True)
class Decision:
    """An alert the watermark made due: type is response_sla_warning,
    response_sla_breach or response_time_degradation."""

    type: str
    account: str
    channel: str | None
    kind: str
    priority: str
    start_ms: int  # the inbound's time, or the rolling window's start
    end_ms: int  # the deadline, or the rolling window's end
    observed_s: float
    threshold_s: float
    business: bool
    event_id: str | None = None


@dataclass(slots=True)
class ResponseState:
    inbound: dict[str, dict[InboundKey, Inbound]] = field(default_factory=dict)
    orphans: dict[str, dict[InboundKey, list[int]]] = field(default_factory=dict)
    tables: dict[str, dict[TableKey, Table]] = field(default_factory=dict)
    buckets: dict[SlaKey, dict[int, DDSketch]] = field(default_factory=dict)
    last_eval: dict[SlaKey, int] = field(default_factory=dict)
    degraded: set[SlaKey] = field(default_factory=set)
    counters: dict[str, Counter[str]] = field(default_factory=dict)  # account -> name -> n
    open_counts: Counter[tuple[str, str]] = field(default_factory=Counter)  # channel, kind
    due: list[tuple[Any, ...]] = field(default_factory=list)  # heap of scheduled items
    expiries: list[tuple[int, str, str, str]] = field(default_factory=list)  # ts, account, key
    tracked: int = 0
    orphan_count: int = 0
    # `due` is compacted once it grows past this (see ResponseTracker._compact_due).
    due_limit: int = field(default_factory=lambda: MIN_DUE_LIMIT)
    # The last durable snapshot: it covers deltas up to snap_seq, in snap_parts
    # changelog records of generation snap_gen.
    snap_seq: int = 0
    snap_gen: int = 0
    snap_parts: int = 0


@dataclass(slots=True)
class Advanced:
    decisions: list[Decision] = field(default_factory=list)
    # (channel, kind, calendar seconds) of every first response settled
    first_responses: list[tuple[str, str, float]] = field(default_factory=list)


class ResponseTracker:
    def __init__(self, cfg: ResponseSettings) -> None:
        self.cfg = cfg
        self.inbound_kinds = frozenset(cfg.inbound_kinds)

    # -- applying -------------------------------------------------------------
    def apply_rows(self, st: ResponseState, rows: list[wire.Row]) -> None:
        """Apply accepted (deduplicated) rows."""
        for row in rows:
            if row[0] != wire.INTERACTION:
                continue
            kind = row[wire.I_KIND]
            if kind == "reply":
                if row[wire.I_REPLY_TO] is not None:
                    self._reply(st, row)
            elif kind in self.inbound_kinds:
                self._inbound(st, row)

    def _inbound(self, st: ResponseState, row: wire.Row) -> None:
        intern = sys.intern  # one copy of each name, not one per message
        account, channel = intern(row[wire.I_ACCOUNT]), intern(row[wire.I_CHANNEL])
        ts = row[wire.I_TS]
        key = (channel, row[wire.I_ID])
        entries = st.inbound.setdefault(account, {})
        if key in entries:  # the same id again, after dedup forgot it
            return
        entry = Inbound(
            ts,
            intern(row[wire.I_KIND]),
            intern(row[wire.I_PRIORITY]),
            intern(row[wire.I_ISSUE] or ""),
        )
        entries[key] = entry
        st.tracked += 1
        heapq.heappush(st.expiries, (ts, account, channel, key[1]))
        waiting = st.orphans.get(account, {}).pop(key, None)
        if waiting:
            st.orphan_count -= 1
            entry.replies = waiting
            heapq.heappush(st.due, (min(waiting), FIRST, account, channel, key[1]))
        else:
            st.open_counts[(channel, entry.kind)] += 1
        self.schedule_sla(st, account, key, entry)
        while st.tracked > self.cfg.max_tracked_per_partition and st.expiries:
            self._drop_oldest(st, "evicted")
        if len(st.due) > st.due_limit:
            self._compact_due(st)

    def _reply(self, st: ResponseState, row: wire.Row) -> None:
        account, channel, ts = row[wire.I_ACCOUNT], row[wire.I_CHANNEL], row[wire.I_TS]
        key = (channel, row[wire.I_REPLY_TO])
        entry = st.inbound.get(account, {}).get(key)
        if entry is None:
            if st.orphan_count >= self.cfg.max_tracked_per_partition:
                self._count(st, account, "unmatched_replies")
                return
            waiting = st.orphans.setdefault(account, {}).setdefault(key, [])
            if not waiting:
                st.orphan_count += 1
            waiting.append(ts)
            heapq.heappush(st.due, (ts + self.cfg.orphan_wait_s * 1000, ORPHAN, account, *key))
            return
        if entry.first_ms is not None:
            self._subsequent(st, account, key[0], entry, ts)
            return
        if entry.open:
            st.open_counts[(channel, entry.kind)] -= 1
        if entry.replies is None:
            entry.replies = []
        entry.replies.append(ts)
        heapq.heappush(st.due, (ts, FIRST, account, *key))

    def _subsequent(
        self, st: ResponseState, account: str, channel: str, entry: Inbound, ts: int
    ) -> None:
        table = self._table(st, account, channel, entry)
        table.subsequent.add(max(0, ts - entry.ts_ms) / 1000)

    def schedule_sla(self, st: ResponseState, account: str, key: InboundKey, e: Inbound) -> None:
        """The next SLA deadline not yet alerted: the warning, else the breach. One
        item at a time: the breach is scheduled when the warning is judged."""
        sla_s = self.cfg.sla_s(account, e.kind, e.priority)
        if sla_s is None:
            return
        if not e.alerted & WARNED:
            warn = self._deadline(account, e.ts_ms, sla_s * self.cfg.warning_fraction)
            heapq.heappush(st.due, (warn, WARN, account, *key))
        elif not e.alerted & BREACHED:
            heapq.heappush(st.due, (self._deadline(account, e.ts_ms, sla_s), BREACH, account, *key))

    def _deadline(self, account: str, ts_ms: int, seconds: float) -> int:
        cal = self.cfg.calendar(account)
        if cal is None:
            return ts_ms + round(seconds * 1000)
        return cal.add_business_seconds(ts_ms, seconds)

    def _table(self, st: ResponseState, account: str, channel: str, e: Inbound) -> Table:
        tables = st.tables.setdefault(account, {})
        key = (channel, e.kind, e.priority, e.issue)
        table = tables.get(key)
        if table is None:
            table = tables[key] = Table()
            if self.cfg.calendar(account) is not None:
                table.business = sketch.new()
        return table

    @staticmethod
    def _count(st: ResponseState, account: str, name: str, n: int = 1) -> None:
        st.counters.setdefault(account, Counter())[name] += n

    # -- the watermark moves --------------------------------------------------
    def advance(self, st: ResponseState, wm_ms: int) -> Advanced:
        """Decide everything whose time the watermark has passed."""
        out = Advanced()
        horizon_ms = self.cfg.horizon_s * 1000
        due = st.due
        while due or st.expiries:
            next_due = due[0][0] if due else None
            next_expiry = st.expiries[0][0] + horizon_ms if st.expiries else None
            expires_first = next_expiry is not None and (next_due is None or next_expiry < next_due)
            if expires_first and next_expiry is not None and next_expiry < wm_ms:
                self._drop_oldest(st, "expired_unanswered")
                continue
            if next_due is None or next_due >= wm_ms:
                break
            item = heapq.heappop(due)
            action = item[1]
            if action == DEGRADE:
                self._degradation(st, item[0], (item[2], item[3], item[4]), out)
            elif action == ORPHAN:
                waiting = st.orphans.get(item[2], {}).pop((item[3], item[4]), None)
                if waiting:
                    st.orphan_count -= 1
                    self._count(st, item[2], "unmatched_replies", len(waiting))
            else:
                self._inbound_due(st, item, out)
        return out

    def _inbound_due(self, st: ResponseState, item: tuple[Any, ...], out: Advanced) -> None:
        due_ms, action, account, channel, event_id = item
        entry = st.inbound.get(account, {}).get((channel, event_id))
        if entry is None:
            return
        if action == FIRST:
            if entry.first_ms is None and entry.replies:
                self._settle(st, account, channel, entry, out)
            return
        # A reply at or before the deadline is settled by now (FIRST sorts first at
        # equal times), so an answered message has met this deadline and the next.
        if entry.first_ms is not None and entry.first_ms <= due_ms:
            return
        flag = WARNED if action == WARN else BREACHED
        if entry.alerted & flag:
            return
        entry.alerted |= flag
        if action == WARN:
            self.schedule_sla(st, account, (channel, event_id), entry)
        sla_s = self.cfg.sla_s(account, entry.kind, entry.priority) or 0
        business = self.cfg.calendar(account) is not None
        threshold = sla_s * self.cfg.warning_fraction if action == WARN else float(sla_s)
        out.decisions.append(
            Decision(
                "response_sla_warning" if action == WARN else "response_sla_breach",
                account,
                channel,
                entry.kind,
                entry.priority,
                entry.ts_ms,
                due_ms,
                threshold,
                float(sla_s),
                business,
                event_id,
            )
        )

    def _settle(
        self, st: ResponseState, account: str, channel: str, e: Inbound, out: Advanced
    ) -> None:
        first, *rest = sorted(e.replies or ())
        e.first_ms, e.replies = first, None
        table = self._table(st, account, channel, e)
        seconds = max(0, first - e.ts_ms) / 1000
        table.first.add(seconds)
        cal = self.cfg.calendar(account)
        clock_s = seconds
        if cal is not None and table.business is not None:
            clock_s = cal.business_seconds(e.ts_ms, first) if first > e.ts_ms else 0.0
            table.business.add(clock_s)
        for t in rest:
            table.subsequent.add(max(0, t - e.ts_ms) / 1000)
        out.first_responses.append((channel, e.kind, seconds))
        sla_s = self.cfg.sla_s(account, e.kind, e.priority)
        if sla_s is None:
            return
        table.with_sla += 1
        if clock_s <= sla_s:
            table.within_sla += 1
        key = (account, e.kind, e.priority)
        step = self.cfg.degradation_step_s * 1000
        start = first // step * step
        buckets = st.buckets.setdefault(key, {})
        if start not in buckets:
            buckets[start] = sketch.new()
            heapq.heappush(st.due, (start + step, DEGRADE, *key))
        buckets[start].add(clock_s)

    def _degradation(self, st: ResponseState, end: int, key: SlaKey, out: Advanced) -> None:
        if end <= st.last_eval.get(key, -1):
            return  # already evaluated at this step
        st.last_eval[key] = end
        step, window = self.cfg.degradation_step_s * 1000, self.cfg.degradation_window_s * 1000
        buckets = st.buckets.get(key, {})
        inside = [sk for start, sk in buckets.items() if end - window <= start < end]
        merged = sketch.merged(inside)
        sla_s = self.cfg.sla_s(*key)
        degraded = (
            sla_s is not None
            and merged.count >= self.cfg.degradation_min_responses
            and sketch.quantile(merged, 0.9) > sla_s
        )
        if degraded and key not in st.degraded:
            st.degraded.add(key)
            account, kind, priority = key
            out.decisions.append(
                Decision(
                    "response_time_degradation",
                    account,
                    None,
                    kind,
                    priority,
                    end - window,
                    end,
                    sketch.quantile(merged, 0.9),
                    float(sla_s or 0),
                    self.cfg.calendar(account) is not None,
                )
            )
        elif not degraded:
            st.degraded.discard(key)
        for start in [s for s in buckets if s < end + step - window]:
            del buckets[start]
        if buckets:  # keep evaluating every step while the window holds responses
            heapq.heappush(st.due, (end + step, DEGRADE, *key))
        else:
            st.buckets.pop(key, None)

    @staticmethod
    def _compact_due(st: ResponseState) -> None:
        """Drop the scheduled items that can no longer do anything: those of inbound
        messages forgotten (evicted, expired) or already answered. Eviction would
        otherwise leave its item until its SLA deadline, hours of event time, and
        memory would grow past `max_tracked_per_partition`. What is kept is what a
        restore from a snapshot schedules (pipeline.responses.snapshot), so decisions
        are the same. Amortized: the next compaction is a quarter as many items again
        away (at most a fifth of the schedule is dead; 0.3 s per 600k items)."""

        def live(item: tuple[Any, ...]) -> bool:
            action = item[1]
            if action not in (FIRST, WARN, BREACH):
                return True
            entry = st.inbound.get(item[2], {}).get((item[3], item[4]))
            if entry is None:
                return False
            return bool(entry.replies) if action == FIRST else entry.first_ms is None

        st.due = [item for item in st.due if live(item)]
        heapq.heapify(st.due)
        st.due_limit = max(MIN_DUE_LIMIT, len(st.due) + len(st.due) // 4)

    def _drop_oldest(self, st: ResponseState, reason: str) -> None:
        """Forget the oldest tracked inbound message (expired, or evicted for room)."""
        _, account, channel, event_id = heapq.heappop(st.expiries)
        entries = st.inbound.get(account, {})
        entry = entries.pop((channel, event_id), None)
        if entry is None:
            return
        st.tracked -= 1
        if not entries:
            del st.inbound[account]
        if entry.open:
            st.open_counts[(channel, entry.kind)] -= 1
            self._count(st, account, reason)
        elif reason == "evicted":
            self._count(st, account, reason)

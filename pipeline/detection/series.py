"""Spike and drop detection on final windows: per account series, fed in window order.

At each close, the final windows of the detection size (`[detection] window_s`)
become one value per account and series (channels summed), queued per account.
Every tracked account is then fed every final window in order, an empty one as
0: a silent account is a drop, not a gap. Rate and share series skip windows
with too few events to judge. Accounts are fed in lockstep by window start, at
most a budget of windows per call: a replay over months means millions of
windows, and detection then trails the published windows by a few seconds
instead of stopping the worker for a minute. The result is the same however the
work is split. Each account's detector state and queue are saved after every
call that moved them (the agent writes them to the changelog with the close's
outputs); a window at or before an account's `through_ms` is never fed twice, so
a re-close after a crash decides exactly as before.
"""

from __future__ import annotations

import heapq
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pipeline.detection.detector import (
    BURST,
    RANGE,
    UP,
    Detector,
    DetectorSettings,
    DetectorState,
    SpikeBar,
    Step,
)
from pipeline.detection.settings import SERIES, DetectionSettings
from pipeline.model import records
from pipeline.windows.arithmetic import rfc3339

# Series whose window value only grows as the window fills (with non-negative weights)
COUNT_SERIES = ("engagement", "mentions")
_LABELS = {
    "engagement": "Weighted engagement",
    "engagement_rate": "The engagement rate",
    "mentions": "Mentions",
    "negative_share": "The share of negative sentiment",
    "share_of_voice": "The share of voice",
}


@dataclass(slots=True)
class AccountSeries:
    through_ms: int  # start of the last window fed
    seen_ms: int  # start of the last window fed that had events
    states: dict[str, DetectorState] = field(default_factory=dict)
    # final windows with events, not fed yet: start -> sums
    queued: dict[int, _Window] = field(default_factory=dict)

    def to_json(self) -> list[Any]:
        states = {k: v.to_json() for k, v in self.states.items()}
        queued = [[start, *w.to_json()] for start, w in sorted(self.queued.items())]
        return [self.through_ms, self.seen_ms, states, queued]

    @classmethod
    def from_json(cls, d: list[Any]) -> AccountSeries:
        states = {k: DetectorState.from_json(v) for k, v in d[2].items()}
        queued = {q[0]: _Window(*q[1:]) for q in (d[3] if len(d) > 3 else ())}
        return cls(d[0], d[1], states, queued)


@dataclass(slots=True)
class Found:
    account: str
    series: str
    step: Step


@dataclass(frozen=True, slots=True)
class Judged:
    """How one series judged the newest final window: the full step (observed,
    expected, band, score), or None when the window had too few events to judge; and
    whether an alert episode is active (`in_episode`)."""

    start_ms: int
    step: Step | None
    active: bool = False


@dataclass(slots=True)
class Advanced:
    found: list[Found] = field(default_factory=list)
    changed: set[str] = field(default_factory=set)  # accounts whose state moved
    forgotten: set[str] = field(default_factory=set)
    behind: bool = False  # the budget ran out before the newest final window
    # (account, series) -> how it judged the newest final window, for the series fed
    # it in this call (windows before it are fed without describing them)
    latest: dict[tuple[str, str], Judged] = field(default_factory=dict)


def in_episode(st: DetectorState, start_ms: int, size_ms: int) -> bool:
    """An alert episode is active: the window starting at `start_ms`, just fed, is in
    a run of consecutive qualifying windows in which an alert was raised. It ends at
    the first window that does not qualify in that direction."""
    for streak, last in ((st.streak_up, st.last_up_ms), (st.streak_down, st.last_down_ms)):
        if streak and last is not None and last >= start_ms - (streak - 1) * size_ms:
            return True
    return False


@dataclass(slots=True)
class _Window:
    weighted: float = 0.0
    mentions: float = 0.0
    denominator: float = 0.0
    events: int = 0
    scored: int = 0
    negative: int = 0

    def to_json(self) -> list[Any]:
        return [
            self.weighted, self.mentions, self.denominator, self.events, self.scored,
            self.negative,
        ]  # fmt: skip


def _collect(records: Iterable[dict[str, Any]], size_s: int) -> dict[str, dict[int, _Window]]:
    """Final window records of one size, summed over channels: account -> start -> sums."""
    out: dict[str, dict[int, _Window]] = {}
    for rec in records:
        if rec["size_seconds"] != size_s:
            continue
        start = int(datetime.fromisoformat(rec["window_start"]).timestamp() * 1000)
        w = out.setdefault(rec["account_id"], {}).setdefault(start, _Window())
        w.weighted += rec["weighted_engagement"]
        counts = rec["counts"]
        w.mentions += counts.get("mention", 0)
        w.events += sum(n for k, n in counts.items() if k != "reply")
        den = rec.get(rec.get("rate_basis") or "followers")
        if den:
            w.denominator += den
        sent = rec.get("sentiment") or {}
        w.scored += sent.get("scored", 0)
        w.negative += sent.get("negative", 0)
    return out


class Detection:
    """The logic; the per-partition data is a dict account -> AccountSeries."""

    def __init__(self, cfg: DetectionSettings) -> None:
        self.cfg = cfg
        self.size_ms = cfg.window_s * 1000
        self._detectors: dict[tuple[str | None, str], Detector] = {}
        self.rivals = {a: c for a, c in cfg.competitors.items() if "share_of_voice" in cfg.series}

    def detector(self, account: str, series: str) -> Detector:
        key = (account if account in self.cfg.accounts else None, series)
        det = self._detectors.get(key)
        if det is None:
            det = Detector(self.cfg.settings_for(key[0], series), self.cfg.window_s)
            self._detectors[key] = det
        return det

    def spike_bars(self, acc: AccountSeries, account: str, start_ms: int) -> dict[str, SpikeBar]:
        """The bars the account's window starting at `start_ms` must clear for a spike
        alert, by series (of `series`): known once the window before it was fed."""
        if acc.through_ms != start_ms - self.size_ms:
            return {}
        bars = {}
        for series in self.cfg.series:
            st = acc.states.get(series)
            if st is not None and series in COUNT_SERIES:
                bar = self.detector(account, series).spike_bar(st, start_ms)
                if bar is not None:
                    bars[series] = bar
        return bars

    def last_final_start(self, through_ms: int | None, grace_ms: int) -> int | None:
        """The start of the newest window of the detection size that is final."""
        if through_ms is None:
            return None
        return (through_ms - grace_ms - self.size_ms) // self.size_ms * self.size_ms

    def values(
        self, account: str, w: _Window | None, windows: dict[str, dict[int, _Window]], start: int
    ) -> dict[str, float | None]:
        """Each series' value for one account and window; None: not enough to judge."""
        w = w or _Window()
        min_n = self.cfg.min_events
        out: dict[str, float | None] = {"engagement": w.weighted, "mentions": w.mentions}
        out["engagement_rate"] = (
            w.weighted / w.denominator if w.denominator and w.events >= min_n else None
        )
        out["negative_share"] = w.negative / w.scored if w.scored >= min_n else None
        rivals = self.rivals.get(account)
        if rivals:
            theirs = sum(
                rw.mentions for r in rivals if (rw := windows.get(r, {}).get(start)) is not None
            )
            total = w.mentions + theirs
            out["share_of_voice"] = w.mentions / total if total >= min_n else None
        return out

    def advance(
        self,
        accounts: dict[str, AccountSeries],
        records: Iterable[dict[str, Any]],
        through_ms: int | None,
        grace_ms: int,
        budget: int | None = None,
    ) -> Advanced:
        """Queue the windows that became final, then feed the tracked accounts every
        window up to the newest final one, in order: at most about `budget` windows
        (whole window starts; None: all), the rest on later calls."""
        res = Advanced()
        size, forget_ms = self.size_ms, self.cfg.forget_after_s * 1000
        for account, by_start in _collect(records, self.cfg.window_s).items():
            acc = accounts.get(account)
            if acc is None:
                first = min(by_start)
                acc = accounts[account] = AccountSeries(first - size, first)
            for start, sums in by_start.items():
                if start > acc.through_ms:  # a window already fed is never fed again
                    acc.queued[start] = sums
                    res.changed.add(account)
        last = self.last_final_start(through_ms, grace_ms)
        if last is None:
            return res
        due = [(acc.through_ms + size, a) for a, acc in accounts.items()]
        due = [d for d in due if d[0] <= last]
        heapq.heapify(due)
        queues = {a: acc.queued for a, acc in accounts.items()}  # rivals' windows
        fed = 0
        while due:
            start = due[0][0]
            if budget is not None and fed >= budget:
                res.behind = True
                break
            group = []
            while due and due[0][0] == start:
                group.append(heapq.heappop(due)[1])
            for account in group:
                acc = accounts[account]
                w = acc.queued.get(start)
                if w is not None:
                    acc.seen_ms = start
                elif start - acc.seen_ms > forget_ms:  # silent too long: forgotten
                    del accounts[account]
                    res.forgotten.add(account)
                    res.changed.discard(account)
                    if acc.queued:  # back later: a new series from its next window
                        nxt = min(acc.queued)
                        accounts[account] = AccountSeries(nxt - size, nxt, queued=acc.queued)
                        queues[account] = acc.queued
                        res.forgotten.discard(account)
                        res.changed.add(account)
                        if nxt <= last:
                            heapq.heappush(due, (nxt, account))
                    continue
                self._step(account, acc, w, queues, start, res, full=start == last)
                acc.through_ms = start
                res.changed.add(account)
                fed += 1
                if start + size <= last:
                    heapq.heappush(due, (start + size, account))
            for account in group:  # rivals read the queues of this start until here
                acc_now = accounts.get(account)
                if acc_now is not None and acc_now.through_ms >= start:
                    acc_now.queued.pop(start, None)
        return res

    def _step(
        self,
        account: str,
        acc: AccountSeries,
        w: _Window | None,
        windows: dict[str, dict[int, _Window]],
        start: int,
        res: Advanced,
        *,
        full: bool = False,
    ) -> None:
        """Feed one window to each series; `full`: the newest final window, described
        in `res.latest` as well."""
        for series, value in self.values(account, w, windows, start).items():
            if series not in self.cfg.series:
                continue
            if value is None:
                if full:
                    res.latest[(account, series)] = Judged(start, None)
                continue
            st = acc.states.get(series)
            if st is None:
                st = acc.states[series] = DetectorState()
            det = self.detector(account, series)
            if full:
                described = det.step(st, start, value)
                res.latest[(account, series)] = Judged(
                    start, described, in_episode(st, start, self.size_ms)
                )
                step = described if described.alert is not None else None
            else:
                step = det.feed(st, start, value)
            if step is not None:
                res.found.append(Found(account, series, step))


def alert_type(series: str, direction: str) -> str:
    up_type, down_type, _ = SERIES[series]
    return up_type if direction == UP else down_type


def alert_id(account: str, series: str, direction: str, size_s: int, start_ms: int) -> str:
    kind = alert_type(series, direction)
    return records.alert_id("detector", kind, account, series, size_s, start_ms)


def build_alert(
    f: Found, size_s: int, cfg: DetectorSettings, *, early: bool = False
) -> dict[str, Any]:
    """The alert.v1 record of one detection: what was observed, what was expected, the
    threshold and the rule that qualified it (`cfg`: the series' detector settings);
    never message text (series are counts and shares). `early`: raised while the
    window was open, `observed` being its value then."""
    s = f.step
    assert s.alert is not None
    metric = SERIES[f.series][2]
    kind = alert_type(f.series, s.alert)
    start, end = s.start_ms, s.start_ms + size_s * 1000
    share = f.series in ("negative_share", "share_of_voice")

    def fmt(x: float | None) -> str:
        if x is None:
            return "n/a"
        return f"{x:.1%}" if share else f"{x:.4g}"

    direction = "above" if s.alert == UP else "below"
    ratio_needed = cfg.spike_ratio if s.alert == UP else cfg.drop_ratio
    if s.rule == RANGE:
        edge = "highest" if s.alert == UP else "lowest"
        why = (
            f"It is beyond the {edge} value of the last {cfg.range_days} days by more than "
            f"{cfg.range_margin:.0%} of their range, and {abs(s.z):.1f} robust scales from "
            "expected (range rule)."
        )
    elif s.rule == BURST:
        why = (
            f"The rise has lasted: the running mean of the deviation reached "
            f"{cfg.burst_ratio:g}x its typical daily peak, with this window {s.z:.1f} robust "
            "scales up (burst rule)."
        )
    else:
        why = (
            f"The deviation is {abs(s.z):.1f} robust scales, {abs(s.ratio):.1f}x the typical "
            f"daily extreme of the last {cfg.history_days} days ({s.typical_peak:.1f}); "
            f"alerts start at {ratio_needed:g}x."
        )
    message = (
        f"{_LABELS[f.series]} {'reached' if early else 'was'} {fmt(s.observed)} in the "
        f"{size_s // 60} min window from "
        f"{rfc3339(start)}, against about {fmt(s.expected)} expected for this hour; the "
        f"alert threshold was {fmt(s.threshold)} ({direction}). {why}"
    )
    extra: dict[str, Any] = {}
    if early:
        message += " Raised while the window was still open."
        extra["early"] = True
    return records.alert(
        ident=alert_id(f.account, f.series, s.alert, size_s, start),
        type=kind,
        severity=s.severity,
        account_id=f.account,
        channel=None,
        metric=metric,
        window_start=rfc3339(start),
        window_end=rfc3339(end),
        observed=s.observed,
        expected=s.expected,
        threshold=s.threshold,
        message=message,
        **extra,
    )

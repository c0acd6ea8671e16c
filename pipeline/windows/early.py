"""Early alerts: a decision that can only become more true as its window fills is
published as soon as it is certain, with the alert_id the close would give.

Which decisions: `threshold_above` rules on volume, count.<kind>, unique_actors or
weighted_engagement (weights not negative), and spikes of the count series
(engagement, mentions). A window's running value only grows (duplicates are
removed before anything counts, late rows add), so a value that clears the bar
now clears it at the close. Certain also needs what comes before the window: a
rule's cooldown depends on the alerts of the windows before it, so they must all
be final (a rule without a cooldown needs nothing before); a detector's bar comes
from its state after the window before, so that window must have been fed. Drops,
rates (their denominators grow) and shares stay at the close.

The ids raised early are in the partition's marker (`PartitionState.early`): the
close that makes the window final publishes the same decision, and skips it."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from pipeline.config.settings import ThresholdRule
from pipeline.detection.detector import UP
from pipeline.detection.series import COUNT_SERIES, AccountSeries, Detection, Found, build_alert
from pipeline.detection.series import alert_id as series_alert_id
from pipeline.model.events import KINDS
from pipeline.windows import rates, thresholds
from pipeline.windows.arithmetic import is_final
from pipeline.windows.state import AggregatorConfig, PartitionState, WindowAgg, WindowKey

GROWING = ("volume", "unique_actors", "weighted_engagement")  # and every count.<kind>
_MAX_BARS = 100_000  # cached detector bars per partition before the cache starts over


@dataclass(frozen=True, slots=True)
class Raised:
    account: str
    record: dict[str, Any]  # alert.v1
    newest_ms: int  # broker time of the newest event of the window


def running_value(agg: WindowAgg, metric: str, weights: Mapping[str, float]) -> float | None:
    """A growing metric of an open window, computed as the final record computes it
    (`thresholds.observed_value`), so equal counts give the same value to the bit."""
    counts = {k: agg.counts.get(k, 0) for k in KINDS}
    if metric == "volume":
        return float(sum(n for k, n in counts.items() if k != "reply"))
    if metric.startswith("count."):
        return float(counts.get(metric[6:], 0))
    if metric == "weighted_engagement":
        return rates.weighted_engagement(counts, weights)
    if metric == "unique_actors":
        return float(len(agg.actors))
    return None


class EarlyAlerts:
    def __init__(
        self, rules: Sequence[ThresholdRule], detection: Detection, cfg: AggregatorConfig
    ) -> None:
        monotone = all(w >= 0 for w in cfg.weights.values())
        grows = {m for m in GROWING if monotone or m != "weighted_engagement"}
        self.rules: dict[int, list[ThresholdRule]] = {}
        for rule in rules:
            if rule.op == "above" and (rule.metric in grows or rule.metric.startswith("count.")):
                self.rules.setdefault(rule.window_s * 1000, []).append(rule)
        self.detection = detection
        self.size_ms = detection.size_ms
        self.series = tuple(
            s for s in detection.cfg.series if s in COUNT_SERIES and (monotone or s != "engagement")
        )
        if self.size_ms not in cfg.sizes_ms:
            self.series = ()
        self.grace_ms = cfg.grace_ms
        self.weights = cfg.weights

    @property
    def enabled(self) -> bool:
        return bool(self.rules or self.series)

    def sizes(self) -> set[int]:
        return set(self.rules) | ({self.size_ms} if self.series else set())

    # -- which windows to look at -----------------------------------------------------
    def after_rows(self, state: PartitionState) -> list[Raised]:
        """The windows the last batch added to."""
        touched, state.touched = state.touched, set()
        accounts = {(k[0], k[3]) for k in touched if k[2] == self.size_ms} if self.series else ()
        return self.check(state, touched, accounts)

    def after_close(
        self, state: PartitionState, before_ms: int | None, fed: Iterable[str]
    ) -> list[Raised]:
        """The windows a close made certain: those whose predecessors all became final
        (emitted-through passed their start) and the accounts' next detection window."""
        after = state.emitted_through_ms
        keys: list[WindowKey] = []
        if after is not None and after != before_ms:
            g = self.grace_ms
            crossed = [
                s
                for s in self.rules
                if before_ms is None or (after - g) // s > (before_ms - g) // s
            ]
            for size in crossed:
                for end, group in state.by_end.items():
                    start = end - size
                    if start + g <= after and (before_ms is None or start + g > before_ms):
                        keys.extend(k for k in group if k[2] == size)
        targets = []
        for account in fed:
            acc = state.detection.get(account)
            if acc is not None:
                targets.append((account, acc.through_ms + self.size_ms))
        return self.check(state, keys, targets)

    def everything(self, state: PartitionState) -> list[Raised]:
        """Every open window: after a restore, for what a crash left undecided."""
        state.touched = set()
        sizes = self.sizes()
        keys = [k for k in state.windows if k[2] in sizes]
        targets = [(a, acc.through_ms + self.size_ms) for a, acc in state.detection.items()]
        return self.check(state, keys, targets)

    # -- deciding ---------------------------------------------------------------------
    def check(
        self,
        state: PartitionState,
        keys: Iterable[WindowKey],
        targets: Iterable[tuple[str, int]],
    ) -> list[Raised]:
        out: list[Raised] = []
        if self.rules:
            for key in keys:
                out.extend(self._thresholds(state, key))
        if self.series:
            for account, start in targets:
                raised = self._spikes(state, account, start)
                if raised:
                    out.extend(raised)
        return out

    def _thresholds(self, state: PartitionState, key: WindowKey) -> list[Raised]:
        account, channel, size, start = key
        rules = self.rules.get(size)
        agg = state.windows.get(key)
        if not rules or agg is None:
            return []
        out = []
        before_final = is_final(start, state.emitted_through_ms, self.grace_ms)
        for rule in rules:
            if not rule.applies_to(account) or (rule.cooldown_s and not before_final):
                continue
            observed = running_value(agg, rule.metric, self.weights)
            if observed is None or not observed > rule.value:
                continue
            if thresholds.cooling(rule, account, channel, start, state.cooldowns):
                continue
            ident = thresholds.alert_id(rule, account, channel, start)
            if ident in state.early:
                continue
            record = thresholds.build(
                rule, account, channel, start, start + size, observed, early=True
            )
            state.early[ident] = [start + size, ""]
            out.append(Raised(account, record, agg.newest_broker_ms))
        return out

    def _spikes(self, state: PartitionState, account: str, start: int) -> list[Raised]:
        acc = state.detection.get(account)
        channels = state.groups.get((account, self.size_ms, start))
        if acc is None or not channels:
            return []
        bars = self._bars(state, acc, account, start)
        if not bars:
            return []
        size_s = self.size_ms // 1000
        # Summed over channels in the order the close sums them (`series._collect`).
        weighted = mentions = 0.0
        newest = 0
        for channel in sorted(channels):
            agg = state.windows.get((account, channel, self.size_ms, start))
            if agg is None:
                continue
            counts = {k: agg.counts.get(k, 0) for k in KINDS}
            weighted += rates.weighted_engagement(counts, self.weights)
            mentions += counts.get("mention", 0)
            newest = max(newest, agg.newest_broker_ms)
        out = []
        for series, bar in bars.items():
            ident = series_alert_id(account, series, UP, size_s, start)
            if ident in state.early:
                continue
            step = bar.alert(weighted if series == "engagement" else mentions)
            if step is None:
                continue
            cfg = self.detection.detector(account, series).cfg
            record = build_alert(Found(account, series, step), size_s, cfg, early=True)
            state.early[ident] = [start + self.size_ms, account]
            out.append(Raised(account, record, newest))
        return out

    def _bars(
        self, state: PartitionState, acc: AccountSeries, account: str, start: int
    ) -> dict[str, Any]:
        """The account's spike bars for the window at `start`, computed once per window
        (they depend on the detector state only, which moves when a window is fed)."""
        cache = state.spike_bars
        at = (start, acc.through_ms)
        hit = cache.get(account)
        if hit is not None and hit[0] is acc and hit[1] == at:
            return hit[2]
        if len(cache) >= _MAX_BARS:
            cache.clear()
        found = self.detection.spike_bars(acc, account, start)
        bars = {s: b for s, b in found.items() if s in self.series}
        cache[account] = (acc, at, bars)
        return bars

    # -- settling ---------------------------------------------------------------------
    def settle(self, state: PartitionState) -> None:
        """Forget early ids whose window the close has decided: a threshold window once
        final, a detector window once fed (the close skipped them by id)."""
        emitted = state.emitted_through_ms
        for ident, (end, account) in list(state.early.items()):
            if account:
                acc = state.detection.get(account)
                done = acc is None or acc.through_ms >= end - self.size_ms
            else:
                done = is_final(end, emitted, self.grace_ms)
            if done:
                del state.early[ident]

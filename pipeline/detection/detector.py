"""Online spike and drop detection for one series of window values.

Causal and single pass: each step reads one window value and the detector's own
state, never a later value, so the backtest and the live worker decide alike.
Bounded memory: a level, a robust scale, 24 hour-of-day and 7 day-of-week offsets
and two weeks of daily extremes, whatever the series' length.

How a step is judged:
1. The value is transformed (counts: variance-stabilising square root, so a jump
   from 0 to 9 and one from 400 to 520 are comparable; rates: logs, zero taken as
   a tenth of the series' first positive value; shares: as they are).
2. Expected = level + the offset of the hour of day + the offset of the day of the
   week (UTC; weekend audiences differ). The deviation z is the residual in units
   of a robust running scale (mean absolute residual).
3. Level, offsets and scale learn from the residual clipped to `clip` scales, so a
   spike barely moves them: the detector is robust to its own past anomalies.
4. A window qualifies by any of three rules, each monotone in the window's value,
   so the value a window must reach is known before it opens (`Step.threshold`):
   - peak: every series has its own rhythm of deviations (a busy account spikes
     daily), so z is compared with the typical daily peak deviation of the last
     `history_days` (median of the daily maxima): a spike is a deviation
     `spike_ratio` times larger than a usual day's largest one, and at least
     `min_z`. Drops likewise against the daily minima.
   - range: a value beyond the highest (lowest) value of the last `range_days`
     whole days by `range_margin` of their range, and `range_min_z` scales from
     expected: something new on a series whose deviations are always large.
   - burst (spikes): a moderate rise that lasts. The running mean of z (weight
     `burst_alpha` per window) reaches `burst_ratio` times its typical daily
     peak, with the window itself `burst_min_z` scales up.
5. Persistence (consecutive qualifying windows), a volume floor and a cooldown
   in event time turn qualifying windows into alerts.

The defaults were chosen by leave-one-category-out cross-validation over 53
labeled series (bench/detection.py; README, Spike and drop detection).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from typing import Any

DAY_MS = 86_400_000
HOUR_MS = 3_600_000
REF_STEP_S = 300  # the smoothing rates are stated per 5 minutes of event time
UP, DOWN = "spike", "drop"
PEAK, RANGE, BURST = "peak", "range", "burst"  # the rules a window qualifies by
LOG_ZERO = 1e-12  # rates in logs: zero, when `log_unit` is off


@dataclass(frozen=True, slots=True)
class DetectorSettings:
    """Defaults need no tuning per account (chosen by cross-validation over 53
    labeled series, see README, Spike and drop detection); each can be overridden
    per account."""

    # "count": square root (volumes); "log": relative changes (rates); "share": as is
    transform: str = "count"
    level_alpha: float = 0.02  # per 5 min of event time
    season_alpha: float = 0.1  # per 5 min, for the hour-of-day offset being visited
    scale_alpha: float = 0.01  # per 5 min
    clip: float = 3.0  # residuals are clipped to this many scales before learning
    scale_floor: float = 0.5  # the smallest scale (transformed units)
    history_days: int = 14  # daily extremes remembered
    min_history_days: int = 2  # no alert before this many whole days were seen
    history_floor: float = 3.0  # a typical daily peak is taken as at least this
    spike_ratio: float = 1.5  # z against the typical daily peak deviation
    drop_ratio: float = 1.5  # |z| against the typical daily lowest deviation
    min_z: float = 4.0  # and never below this many scales
    spike_persistence: int = 1  # consecutive qualifying windows before a spike alert
    drop_persistence: int = 2  # a drop must hold longer: one quiet window is common
    min_volume: float = 5.0  # a spike needs at least this observed value (counts)
    min_expected: float = 20.0  # a drop needs at least this expected value (counts)
    cooldown_s: int = 43_200  # per series and direction, in event time
    directions: tuple[str, ...] = (UP, DOWN)
    critical_ratio: float = 2.0  # severity critical from this multiple of the z that qualifies
    # Range rule: beyond the high (low) of the last `range_days` whole days by this
    # share of their range and `range_min_z` scales from expected; 0 turns it off.
    range_margin: float = 0.02
    range_days: int = 4
    range_min_z: float = 3.0
    # Day-of-week offsets learn at this rate per 5 min, on the day visited; 0: none
    week_alpha: float = 0.03
    # Burst rule: the running mean of z, this weight per window (0 turns it off),
    # `burst_ratio` times its typical daily peak, the window `burst_min_z` scales up
    burst_alpha: float = 0.05
    burst_ratio: float = 2.0
    burst_min_z: float = 2.0
    # Rates in logs: zero is taken as this share of the first positive value (0: 1e-12)
    log_unit: float = 0.1


FIELDS = frozenset(f.name for f in fields(DetectorSettings))


@dataclass(slots=True)
class DetectorState:
    """Everything the detector remembers about one series; plain JSON-able data."""

    level: float | None = None
    scale: float = 1.0
    season: list[float] = field(default_factory=lambda: [0.0] * 24)
    last_start_ms: int | None = None
    day: int | None = None
    day_max: float = 0.0
    day_min: float = 0.0
    maxima: list[float] = field(default_factory=list)  # of whole past days, oldest first
    minima: list[float] = field(default_factory=list)
    partial_day: bool = False  # the current day began mid-day: its extremes don't count
    streak_up: int = 0
    streak_down: int = 0
    last_up_ms: int | None = None  # window start of the last alert, per direction
    last_down_ms: int | None = None
    # Highest and lowest values of past whole days (oldest first), and of today
    highs: list[float] = field(default_factory=list)
    lows: list[float] = field(default_factory=list)
    day_high: float | None = None
    day_low: float | None = None
    week: list[float] = field(default_factory=lambda: [0.0] * 7)  # Monday first
    unit: float | None = None  # rates: what zero is taken as, from the first value > 0
    burst: float = 0.0  # the running mean of z
    burst_max: float = 0.0  # of today
    bursts: list[float] = field(default_factory=list)  # of whole past days
    # Derived, not persisted: medians of maxima, minima and burst maxima, and the
    # high and low of the past days, which change only when a day ends (recomputed
    # after a restore).
    medians: tuple[float, float, float, float, float] | None = field(
        default=None, compare=False, repr=False
    )

    def to_json(self) -> list[Any]:
        return [
            self.level, self.scale, list(self.season), self.last_start_ms, self.day,
            self.day_max, self.day_min, list(self.maxima), list(self.minima),
            self.partial_day, self.streak_up, self.streak_down, self.last_up_ms,
            self.last_down_ms, list(self.highs), list(self.lows), self.day_high, self.day_low,
            list(self.week), self.unit, self.burst, self.burst_max, list(self.bursts),
        ]  # fmt: skip

    @classmethod
    def from_json(cls, d: list[Any]) -> DetectorState:
        """Also a state saved before the later fields existed: they start afresh."""
        return cls(*d)


@dataclass(frozen=True, slots=True)
class Step:
    """What one window made of the series."""

    start_ms: int
    observed: float
    expected: float  # in the series' own units
    z: float  # deviation in scales (signed)
    ratio: float  # z against the typical daily extreme of its sign (signed)
    score: float  # anomaly score in [0, 1]; 0.5 where z reaches what would qualify
    alert: str | None = None  # UP or DOWN when this window raises an alert
    threshold: float | None = None  # the observed value that would have qualified
    typical_peak: float = 0.0  # the typical daily extreme deviation compared with
    severity: str = "warning"
    # PEAK, RANGE or BURST: the rule with the lowest bar, which sets the threshold
    # (and qualified the window, when it alerts)
    rule: str = PEAK
    # The band (in a step that `step` or `feed` describes): the lowest value that would
    # have qualified as a spike and the highest that would have qualified as a drop
    # (persistence and cooldown aside); None where no value would.
    upper: float | None = None
    lower: float | None = None


@dataclass(frozen=True, slots=True)
class _Bars:
    hour: int
    weekday: int
    exp_y: float
    scale: float
    need_up: float  # the smallest z any rule qualifies a spike at
    rule_up: str
    need_down: float
    rule_down: str
    peak_up: float  # the typical daily extreme deviations
    peak_down: float


@dataclass(frozen=True, slots=True)
class SpikeBar:
    """The bar one window must clear for a spike alert (`Detector.spike_bar`)."""

    detector: Detector
    start_ms: int
    bars: _Bars
    unit: float | None

    def alert(self, x: float) -> Step | None:
        """The Step the feed of value `x` would return, if it raises a spike alert."""
        det, b = self.detector, self.bars
        z = (det.forward(x, self.unit) - b.exp_y) / b.scale
        if z < 0 or not det._qualifies_up(b, z, x):
            return None
        return det._describe(
            self.start_ms, x, b.exp_y, z, b.peak_up, b.scale, b.need_up, self.unit, UP,
            b.rule_up,
        )  # fmt: skip


def _alpha(rate: float, step_s: float) -> float:
    """A smoothing rate stated per 5 minutes, for steps of another length."""
    return float(1.0 - (1.0 - rate) ** (step_s / REF_STEP_S))


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return float(s[n // 2] if n % 2 else (s[n // 2 - 1] + s[n // 2]) / 2)


def _lowest(*needs: tuple[float, str]) -> tuple[float, str]:
    """The lowest bar and its rule; the first listed on a tie."""
    best = needs[0]
    for need in needs[1:]:
        if need[0] < best[0]:
            best = need
    return best


def _score(z: float, need: float) -> float:
    """0 at no deviation, 0.5 at the deviation that qualifies, towards 1 beyond it."""
    if z <= 0:
        return 0.0
    if not math.isfinite(need):
        return 0.0
    return float(1.0 / (1.0 + (max(need, 1e-9) / z) ** 4))


class Detector:
    """The logic; `DetectorState` is the data. One instance serves many series."""

    def __init__(self, cfg: DetectorSettings, step_s: int) -> None:
        self.cfg = cfg
        self.step_s = step_s
        self.a_level = _alpha(cfg.level_alpha, step_s)
        self.a_season = _alpha(cfg.season_alpha, step_s)
        self.a_scale = _alpha(cfg.scale_alpha, step_s)
        self.a_week = _alpha(cfg.week_alpha, step_s)

    def forward(self, x: float, unit: float | None = None) -> float:
        """`unit`: for rates, what zero is taken as (DetectorState.unit)."""
        if self.cfg.transform == "count":
            return 2.0 * math.sqrt(max(x, 0.0) + 0.375)
        if self.cfg.transform == "log":
            return math.log(max(x, 0.0) + (unit or LOG_ZERO))
        return x

    def inverse(self, y: float, unit: float | None = None) -> float:
        if self.cfg.transform == "count":
            return max((max(y, 0.0) / 2.0) ** 2 - 0.375, 0.0)
        if self.cfg.transform == "log":
            return max(math.exp(min(y, 700.0)) - (unit or LOG_ZERO), 0.0)
        return y

    def step(self, st: DetectorState, start_ms: int, x: float) -> Step:
        """Feed the value of the window starting at `start_ms` (windows in order)."""
        step = self._step(st, start_ms, x, True)
        assert step is not None
        return step

    def feed(self, st: DetectorState, start_ms: int, x: float) -> Step | None:
        """`step`, returning the Step only when the window alerts: the same state, at
        about a quarter of the cost (a replay over months feeds millions of windows)."""
        return self._step(st, start_ms, x, False)

    def _step(self, st: DetectorState, start_ms: int, x: float, full: bool) -> Step | None:
        cfg = self.cfg
        unit = None
        if cfg.transform == "log" and cfg.log_unit > 0:
            if st.unit is None:
                if x <= 0:  # a rate series starts at its first positive value
                    return Step(start_ms, x, x, 0.0, 0.0, 0.0) if full else None
                st.unit = cfg.log_unit * x
            unit = st.unit
        y = self.forward(x, unit)
        if st.level is None:
            st.level, st.scale = y, max(1.0 if cfg.transform == "count" else 0.0, cfg.scale_floor)
        self._roll(st, start_ms)
        b = self._bars(st, start_ms, unit)
        exp_y, scale = b.exp_y, b.scale
        resid = y - exp_y
        z = resid / scale
        alert = None
        if z >= 0:
            need, rule = b.need_up, b.rule_up
            ok = self._qualifies_up(b, z, x)
            st.streak_up, st.streak_down = (st.streak_up + 1 if ok else 0), 0
            if ok and st.streak_up >= cfg.spike_persistence and self._cool(st.last_up_ms, start_ms):
                alert, st.last_up_ms = UP, start_ms
        else:
            need, rule = b.need_down, b.rule_down
            ok = -z >= need and DOWN in cfg.directions
            ok = ok and (cfg.transform != "count" or self.inverse(exp_y) >= cfg.min_expected)
            st.streak_up, st.streak_down = 0, (st.streak_down + 1 if ok else 0)
            cool = self._cool(st.last_down_ms, start_ms)
            if ok and st.streak_down >= cfg.drop_persistence and cool:
                alert, st.last_down_ms = DOWN, start_ms
        step = None
        if full or alert is not None:
            step = self._describe(
                start_ms, x, exp_y, z, b.peak_up if z >= 0 else b.peak_down, scale, need, unit,
                alert, rule,
            )  # fmt: skip
            upper, lower = self._band(b, unit)
            step = replace(step, upper=upper, lower=lower)
        self._learn(st, b.hour, b.weekday, y, resid, scale, z, start_ms)
        st.day_high = x if st.day_high is None else max(st.day_high, x)
        st.day_low = x if st.day_low is None else min(st.day_low, x)
        return step

    def spike_bar(self, st: DetectorState, start_ms: int) -> SpikeBar | None:
        """What the window starting at `start_ms`, the next one this series is fed, must
        reach to raise a spike alert; None when no value would (no history yet, in a
        cooldown, too short a streak) or when the bar depends on the value itself (a
        rate series before its first positive value). The state is not changed.

        The decision is monotone in the value: `need_up` and every other condition
        come from the state alone, and `forward` is non-decreasing. So a value that
        qualifies here still qualifies once the window has more events."""
        cfg = self.cfg
        if st.level is None or UP not in cfg.directions:
            return None
        if cfg.transform == "log" and cfg.log_unit > 0 and st.unit is None:
            return None
        if st.streak_up + 1 < cfg.spike_persistence or not self._cool(st.last_up_ms, start_ms):
            return None
        if st.day != start_ms // DAY_MS:  # the feed would end a day first: on a copy
            st = DetectorState.from_json(st.to_json())
            self._roll(st, start_ms)
        unit = st.unit if cfg.transform == "log" and cfg.log_unit > 0 else None
        b = self._bars(st, start_ms, unit)
        if not math.isfinite(b.need_up):
            return None
        return SpikeBar(self, start_ms, b, unit)

    def _band(self, b: _Bars, unit: float | None) -> tuple[float | None, float | None]:
        """The values at which a window qualifies, from the bars alone: a spike at or
        above `upper`, a drop at or below `lower` (the conditions of `_step`)."""
        cfg = self.cfg
        upper = lower = None
        if UP in cfg.directions and math.isfinite(b.need_up):
            upper = self.inverse(b.exp_y + b.need_up * b.scale, unit)
            if cfg.transform == "count":
                upper = max(upper, cfg.min_volume)
        drop_ok = cfg.transform != "count" or self.inverse(b.exp_y) >= cfg.min_expected
        if DOWN in cfg.directions and math.isfinite(b.need_down) and drop_ok:
            y = b.exp_y - b.need_down * b.scale
            if cfg.transform == "share" or y >= self.forward(0, unit):
                lower = self.inverse(y, unit)
        return upper, lower

    def _qualifies_up(self, b: _Bars, z: float, x: float) -> bool:
        cfg = self.cfg
        ok = z >= b.need_up and UP in cfg.directions
        return ok and (cfg.transform != "count" or x >= cfg.min_volume)

    def _roll(self, st: DetectorState, start_ms: int) -> None:
        """Start the day of `start_ms`: a day that ended leaves its extremes, if whole."""
        cfg = self.cfg
        day = start_ms // DAY_MS
        if st.day is None:
            st.day, st.partial_day = day, start_ms % DAY_MS != 0
        elif day != st.day:
            if not st.partial_day:
                st.maxima = [*st.maxima, st.day_max][-cfg.history_days :]
                st.minima = [*st.minima, st.day_min][-cfg.history_days :]
                if st.day_high is not None and st.day_low is not None:
                    st.highs = [*st.highs, st.day_high][-cfg.history_days :]
                    st.lows = [*st.lows, st.day_low][-cfg.history_days :]
                if cfg.burst_alpha > 0:
                    st.bursts = [*st.bursts, st.burst_max][-cfg.history_days :]
                st.medians = None
            st.day, st.day_max, st.day_min, st.partial_day = day, 0.0, 0.0, False
            st.day_high = st.day_low = None
            st.burst_max = 0.0

    def _bars(self, st: DetectorState, start_ms: int, unit: float | None) -> _Bars:
        """Expected value, scale and the z each rule needs, from the state alone (after
        `_roll`); infinite: the rule cannot qualify."""
        cfg = self.cfg
        assert st.level is not None
        day = start_ms // DAY_MS
        hour = (start_ms % DAY_MS) // HOUR_MS
        weekday = (day + 3) % 7  # 1970-01-01 was a Thursday
        exp_y = st.level + st.season[hour] + st.week[weekday]
        scale = max(st.scale, cfg.scale_floor)
        ready = len(st.maxima) >= cfg.min_history_days
        peak_up = peak_down = math.inf  # the typical daily extremes
        need_up = need_down = range_up = range_down = burst_up = math.inf
        if ready:
            med = st.medians
            if med is None:
                med = st.medians = (
                    _median(st.maxima),
                    _median(st.minima),
                    max(st.highs, default=-math.inf),
                    min(st.lows, default=math.inf),
                    _median(st.bursts) if st.bursts else math.inf,
                )
            peak_up = max(med[0], cfg.history_floor)
            peak_down = max(-med[1], cfg.history_floor)
            need_up = max(cfg.spike_ratio * peak_up, cfg.min_z)
            need_down = max(cfg.drop_ratio * peak_down, cfg.min_z)
            if cfg.range_margin > 0 and len(st.highs) >= cfg.range_days:
                margin = cfg.range_margin * (med[2] - med[3])
                if margin > 0:
                    high, low = med[2] + margin, med[3] - margin
                    range_up = (self.forward(high, unit) - exp_y) / scale
                    range_up = max(range_up, cfg.range_min_z)
                    if low >= 0 or cfg.transform == "share":  # counts and rates end at 0
                        range_down = (exp_y - self.forward(low, unit)) / scale
                        range_down = max(range_down, cfg.range_min_z)
            if cfg.burst_alpha > 0 and math.isfinite(med[4]):
                # at least what two windows at the history floor make of the mean
                typical = max(med[4], 2 * cfg.burst_alpha * cfg.history_floor)
                a = cfg.burst_alpha
                burst_up = max(
                    (cfg.burst_ratio * typical - (1 - a) * st.burst) / a, cfg.burst_min_z
                )
        up = _lowest((need_up, PEAK), (range_up, RANGE), (burst_up, BURST))
        down = _lowest((need_down, PEAK), (range_down, RANGE))
        return _Bars(
            hour, weekday, exp_y, scale, up[0], up[1], down[0], down[1], peak_up, peak_down
        )

    def _describe(
        self,
        start_ms: int,
        x: float,
        exp_y: float,
        z: float,
        typical: float,
        scale: float,
        need: float,
        unit: float | None,
        alert: str | None,
        rule: str,
    ) -> Step:
        """What a step shows: expected value, score, the value that would qualify;
        `typical` is the daily extreme deviation of its sign (infinite before the
        history), `need` the smallest |z| any rule qualifies at."""
        cfg = self.cfg
        ready = math.isfinite(typical)
        ratio = z / typical if ready else 0.0
        y_need = exp_y + (need if z >= 0 else -need) * scale
        # None: no value would qualify (no history yet, or a drop below zero: an
        # empty window on a quiet series, a zero rate where zeros are usual)
        reachable = math.isfinite(need) and (
            z >= 0 or cfg.transform == "share" or y_need >= self.forward(0, unit)
        )
        threshold = self.inverse(y_need, unit) if reachable else None
        severity = "critical" if abs(z) >= cfg.critical_ratio * need else "warning"
        return Step(
            start_ms, x, self.inverse(exp_y, unit), z, ratio, _score(abs(z), need), alert,
            threshold, typical if ready else 0.0, severity, rule,
        )  # fmt: skip

    def _learn(
        self,
        st: DetectorState,
        hour: int,
        weekday: int,
        y: float,
        resid: float,
        scale: float,
        z: float,
        start_ms: int,
    ) -> None:
        cfg = self.cfg
        assert st.level is not None  # set by the first step
        # Learn from the clipped residual: a spike moves the baseline by at most `clip`.
        r = max(-cfg.clip * scale, min(cfg.clip * scale, resid))
        st.level += self.a_level * r
        season = st.season
        season[hour] += self.a_season * r
        mean = sum(season) / 24.0
        if mean:
            st.season = [s - mean for s in season]  # the level carries the mean
        if cfg.week_alpha > 0:
            week = st.week
            week[weekday] += self.a_week * r
            mean = sum(week) / 7.0
            if mean:
                st.week = [w - mean for w in week]
        st.scale += self.a_scale * (min(abs(resid), cfg.clip * scale) * 1.2533 - st.scale)
        st.day_max, st.day_min = max(st.day_max, z), min(st.day_min, z)
        if cfg.burst_alpha > 0:
            # bounded, so one huge spike does not hold the mean up for days
            bound = 3 * cfg.clip
            mean_z = (1 - cfg.burst_alpha) * st.burst + cfg.burst_alpha * z
            st.burst = max(-bound, min(bound, mean_z))
            st.burst_max = max(st.burst_max, st.burst)
        st.last_start_ms = start_ms

    def _cool(self, last_ms: int | None, start_ms: int) -> bool:
        return last_ms is None or start_ms - last_ms >= self.cfg.cooldown_s * 1000

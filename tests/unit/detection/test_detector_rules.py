"""pipeline.detection.detector: the range and burst rules, day-of-week offsets, rates with
zeros, and the contract every rule keeps: the value a window must reach is known
before the window, and the decision is monotone in it.

Series come from test_detector's deterministic builders (5-minute windows from a
UTC midnight that is a Monday).
"""

from __future__ import annotations

import random
from dataclasses import replace

import pytest

from pipeline.detection.detector import (
    BURST,
    DOWN,
    PEAK,
    RANGE,
    UP,
    Detector,
    DetectorSettings,
    DetectorState,
    Step,
)
from pipeline.detection.settings import KINDS
from tests.unit.detection.test_detector import (
    PER_DAY,
    START_MS,
    STEP_S,
    alerts,
    at,
    clone,
    poisson,
    rhythm,
    run,
    scaled,
    traffic,
)

# -- the value a window must reach ------------------------------------------------

# Every qualifying window alerts: no persistence, cooldown or volume floor in the way.
EAGER = {
    "spike_persistence": 1,
    "drop_persistence": 1,
    "cooldown_s": 0,
    "min_volume": 0.0,
    "min_expected": 0.0,
}


def stepped(days: int, seed: int) -> list[float]:
    """Counts that rise to 1.8 times the rhythm for three hours on two days: a burst."""
    values = traffic(days, base=20.0, amp=0.3, seed=seed)
    for day in (4, 6):
        for i in range(at(day, 10), at(day, 13)):
            values[i] = float(round(1.8 * rhythm(i, 20.0, 0.3)))
    return values


def uniform(days: int, seed: int) -> list[float]:
    """A level as a share kind has it: uniform noise, with a jump on day 6."""
    rng = random.Random(seed)
    out = [rng.uniform(10, 20) for _ in range(days * PER_DAY)]
    for i in range(at(6, 9), at(6, 10)):
        out[i] += 12.0
    return out


CASES = [
    ("count", scaled(traffic(8, seed=11), 4.0, [at(5, 9), at(6, 15)])),
    ("count", stepped(8, seed=2)),
    ("share", uniform(8, seed=4)),
    ("rate", [v / 1000 for v in traffic(8, base=50.0, seed=12)]),
]


@pytest.mark.parametrize(("kind", "values"), CASES, ids=["counts", "burst", "level", "rate"])
def test_every_rule_qualifies_exactly_from_the_threshold_known_before_the_window(
    kind: str, values: list[float]
) -> None:
    """At windows across the series: whatever the window's value, the threshold of
    its direction is the same number (known before the value), a value just past it
    alerts, anything short of it does not, and anything further also alerts."""
    cfg = replace(DetectorSettings(**KINDS[kind]), **EAGER)
    det = Detector(cfg, STEP_S)
    state = DetectorState()
    rules: set[str] = set()
    checked = 0
    for i, v in enumerate(values):
        t = START_MS + i * STEP_S * 1000
        if i >= at(3) and i % 7 == 0:
            expected = det.step(clone(state), t, v).expected
            for direction, probe_value in ((UP, expected * 1.001 + 1e-9), (DOWN, expected * 0.999)):
                threshold = det.step(clone(state), t, probe_value).threshold
                if threshold is None:
                    continue
                eps = max(abs(threshold) * 1e-6, 1e-9)
                past, short = (
                    (threshold + eps, threshold - eps)
                    if direction == UP
                    else (threshold - eps, threshold + eps)
                )
                further = threshold + (abs(threshold) + 1) * (2 if direction == UP else -2)
                hit = det.step(clone(state), t, past)
                assert hit.alert == direction and hit.threshold == pytest.approx(threshold), (
                    i,
                    hit,
                )
                miss = det.step(clone(state), t, short)
                assert miss.alert is None, (i, miss)
                if direction == UP or further >= 0 or kind == "share":
                    assert det.step(clone(state), t, further).alert == direction
                rules.add(hit.rule)
                checked += 1
        det.step(state, t, v)
    assert checked > 100
    # the series were built so that each rule sets the bar somewhere
    assert rules & {PEAK, RANGE, BURST}


def test_the_cases_above_reach_every_rule() -> None:
    seen: set[str] = set()
    for kind, values in CASES:
        cfg = replace(DetectorSettings(**KINDS[kind]), **EAGER)
        seen |= {s.rule for s in run(values, cfg) if s.alert}
    assert seen == {PEAK, RANGE, BURST}


# -- the burst rule -----------------------------------------------------------------


@pytest.mark.parametrize("seed", [2, 3, 5, 6])
def test_a_sustained_moderate_rise_alerts_as_a_burst_where_no_window_reaches_the_peak_bar(
    seed: int,
) -> None:
    """1.8 times the usual count for three hours: about 3.5 scales a window, below
    the peak rule's bar (4.5 here), every window of it."""
    values = traffic(8, base=20.0, amp=0.3, seed=seed)
    rise = range(at(6, 10), at(6, 13))
    for i in rise:
        values[i] = float(round(1.8 * rhythm(i, 20.0, 0.3)))
    cfg = DetectorSettings(range_margin=0.0)  # the burst rule on its own
    steps = run(values, cfg)
    found = [(i, s) for i, s in enumerate(steps) if s.alert and i >= at(3)]
    assert len(found) == 1
    i, s = found[0]
    assert i in rise and i > rise[0] + 1  # it takes a few windows to build up
    assert (s.alert, s.rule) == (UP, BURST)
    peak_only = run(values, replace(cfg, burst_alpha=0.0))
    assert alerts(peak_only) == []
    assert all(st.z < 4.5 for st in peak_only[rise[0] : rise[-1] + 1])
    # the burst's threshold is below the value the peak rule would need
    assert s.threshold is not None and peak_only[i].threshold is not None
    assert s.threshold < peak_only[i].threshold


def test_the_burst_mean_is_bounded_and_persisted() -> None:
    values = traffic(6, seed=3)
    values[at(4, 9)] = 1e6  # one enormous window
    state = DetectorState()
    run(values[: at(4, 9) + 1], state=state)
    assert 0 < state.burst <= 3 * DetectorSettings().clip
    again = clone(state)
    assert (again.burst, again.burst_max, again.bursts) == (
        state.burst,
        state.burst_max,
        state.bursts,
    )
    assert len(state.bursts) == 4  # whole days 0 to 3


# -- day-of-week offsets ------------------------------------------------------------


def weekly(weeks: int, seed: int, weekend: float = 0.4) -> list[float]:
    """~100 a window on weekdays, 40% of that on Saturdays and Sundays."""
    rng = random.Random(seed)
    out = []
    for i in range(weeks * 7 * PER_DAY):
        factor = weekend if (i // PER_DAY) % 7 in (5, 6) else 1.0  # day 0 is a Monday
        out.append(poisson(rng, factor * rhythm(i, 100.0, 0.5)))
    return out


@pytest.mark.parametrize("seed", [2, 3])
def test_a_quiet_weekend_is_learned_and_raises_nothing(seed: int) -> None:
    values = weekly(4, seed)
    steps = run(values)
    assert [a for a in alerts(steps) if a[0] >= at(14)] == []
    saturday, friday = steps[at(26, 12)], steps[at(25, 12)]
    assert saturday.expected < 0.5 * friday.expected
    # Without them every Saturday is a drop and every Monday a spike.
    daily = run(values, DetectorSettings(week_alpha=0.0))
    late = [(i // PER_DAY % 7, d) for i, d in alerts(daily) if i >= at(14)]
    assert late == [(0, UP), (5, DOWN), (0, UP), (5, DOWN)]


def test_the_weekday_offsets_are_centred_and_persisted() -> None:
    state = DetectorState()
    run(weekly(2, seed=1), state=state)
    assert abs(sum(state.week)) < 1e-9
    assert min(state.week[5:]) < -1.0 < 1.0 < min(state.week[:5])  # in scales of sqrt
    assert clone(state).week == state.week


# -- rates with zeros ---------------------------------------------------------------


def test_a_rate_series_starts_at_its_first_positive_value_and_zero_stays_finite() -> None:
    cfg = DetectorSettings(**KINDS["rate"])
    det = Detector(cfg, STEP_S)
    rng = random.Random(8)
    values = [0.0] * 10 + [
        0.0 if rng.random() < 0.05 else rng.uniform(0.04, 0.06) for _ in range(5 * PER_DAY)
    ]
    state = DetectorState()
    steps: list[Step] = [
        det.step(state, START_MS + i * STEP_S * 1000, v) for i, v in enumerate(values)
    ]
    assert all(s.z == 0 and s.alert is None for s in steps[:10])  # not started
    assert state.unit == pytest.approx(0.1 * values[10])
    assert state.level is not None and -4.0 < state.level < -2.5  # log of about 0.05
    assert all(abs(s.z) < 200 for s in steps)
    # A zero is judged as a fall to a tenth of the first value, not to -27 logs; here
    # zeros come every day, so even a zero does not qualify as a drop: no threshold.
    zero = det.step(clone(state), START_MS + len(values) * STEP_S * 1000, 0.0)
    assert zero.expected == pytest.approx(0.05, rel=0.2)
    assert -30 < zero.z < -5 and zero.alert is None and zero.threshold is None
    # Where zeros are rare, a zero is a drop, and the threshold says from where.
    steady = DetectorState()
    for i in range(5 * PER_DAY):
        det.step(steady, START_MS + i * STEP_S * 1000, rng.uniform(0.04, 0.06))
    drop = det.step(clone(steady), START_MS + 5 * PER_DAY * STEP_S * 1000, 0.0)
    assert drop.threshold is not None and 0 < drop.threshold < drop.expected
    assert drop.z < -5


def test_a_state_saved_before_the_new_fields_still_loads() -> None:
    state = DetectorState()
    run(traffic(4, seed=2), state=state)
    old = state.to_json()[:18]  # the fields of the previous release
    loaded = DetectorState.from_json(old)
    assert loaded.level == state.level and loaded.maxima == state.maxima
    assert (loaded.week, loaded.unit, loaded.burst, loaded.bursts) == ([0.0] * 7, None, 0.0, [])
    # and it goes on from there
    Detector(DetectorSettings(), STEP_S).step(loaded, START_MS + at(4) * STEP_S * 1000, 100.0)

"""pipeline.detection.detector: the band a full step describes (Step.upper, Step.lower)
is exactly where a window starts to qualify, for each kind of series."""

from __future__ import annotations

import math
import random

import pytest

from pipeline.detection.detector import DOWN, UP, Detector, DetectorSettings, DetectorState
from pipeline.detection.series import in_episode
from pipeline.detection.settings import DetectionSettings

START_MS = 1_704_067_200_000  # 2024-01-01T00:00:00Z, a midnight
STEP_MS = 300_000
PER_DAY = 288


def history(kind: str, days: int = 4) -> tuple[Detector, DetectorState, int]:
    """A detector of `kind` fed `days` of noisy daily rhythm; returns the next start."""
    cfg = DetectionSettings().settings_for_kind(kind)
    det, st, rng = Detector(cfg, 300), DetectorState(), random.Random(5)
    base = {"count": 60.0, "rate": 0.05, "share": 0.3}[kind]
    start = START_MS
    for i in range(days * PER_DAY):
        rhythm = 1 + 0.3 * math.sin(2 * math.pi * i / PER_DAY)
        det.step(st, start, max(0.0, base * rhythm * rng.uniform(0.85, 1.15)))
        start += STEP_MS
    return det, st, start


def fed(det: Detector, st: DetectorState, start: int, x: float) -> DetectorState:
    """The state after feeding `x`, on a copy."""
    copy = DetectorState.from_json(st.to_json())
    det.step(copy, start, x)
    return copy


@pytest.mark.parametrize("kind", ["count", "rate", "share"])
def test_the_band_is_where_a_window_starts_to_qualify(kind: str) -> None:
    det, st, start = history(kind)
    probe = DetectorState.from_json(st.to_json())
    step = det.step(probe, start, det.inverse(st.level or 0.0, st.unit))
    assert step.upper is not None and step.lower is not None
    assert step.lower < step.expected < step.upper
    # at the band it qualifies (a streak starts), just inside it does not
    assert fed(det, st, start, step.upper * (1 + 1e-6)).streak_up == 1
    assert fed(det, st, start, step.upper * (1 - 1e-3)).streak_up == 0
    assert fed(det, st, start, step.lower * (1 - 1e-6)).streak_down == 1
    assert fed(det, st, start, step.lower * (1 + 1e-3)).streak_down == 0
    # the band comes from the state alone: any value fed gives the same band
    other = det.step(DetectorState.from_json(st.to_json()), start, step.upper * 3)
    assert (other.upper, other.lower) == (step.upper, step.lower)
    # a feed (the fast path) describes nothing, and moves the state alike
    quick = DetectorState.from_json(st.to_json())
    assert det.feed(quick, start, step.expected) is None
    assert quick.to_json() == fed(det, st, start, step.expected).to_json()


def test_no_band_without_history_or_for_a_direction_not_judged() -> None:
    det, st = Detector(DetectorSettings(), 300), DetectorState()
    first = det.step(st, START_MS, 10.0)
    assert (first.upper, first.lower) == (None, None)  # no whole day seen yet
    ups = DetectionSettings().settings_for(None, "mentions")  # spikes only
    assert ups.directions == (UP,)
    det = Detector(ups, 300)
    st = DetectorState()
    for i in range(3 * PER_DAY):
        det.step(st, START_MS + i * STEP_MS, 40.0 + (i % 7))
    step = det.step(st, START_MS + 3 * PER_DAY * STEP_MS, 40.0)
    assert step.upper is not None and step.lower is None
    assert DOWN not in ups.directions


def test_a_count_spike_needs_the_volume_floor_too() -> None:
    cfg = DetectorSettings(min_volume=1_000.0)
    det, st = Detector(cfg, 300), DetectorState()
    for i in range(3 * PER_DAY):
        det.step(st, START_MS + i * STEP_MS, 5.0 + (i % 3))
    step = det.step(DetectorState.from_json(st.to_json()), START_MS + 3 * PER_DAY * STEP_MS, 5.0)
    assert step.upper == 1_000.0
    assert step.lower is None  # expected below min_expected: no drop is judged


def test_an_alert_episode_lasts_while_the_run_that_alerted_goes_on() -> None:
    size, start = STEP_MS, START_MS + 10 * STEP_MS
    # alerted one window ago, and this window qualified too: the same run
    assert in_episode(DetectorState(streak_up=2, last_up_ms=start - size), start, size)
    # a run of two that began after an older alert (a cooldown keeps it silent)
    assert not in_episode(DetectorState(streak_up=2, last_up_ms=start - 5 * size), start, size)
    # the run ended: this window did not qualify
    assert not in_episode(DetectorState(streak_up=0, last_up_ms=start - size), start, size)
    assert in_episode(DetectorState(streak_down=3, last_down_ms=start - 2 * size), start, size)
    assert not in_episode(DetectorState(streak_down=1), start, size)  # qualified, no alert

"""pipeline.detection.nab: NAB scoring of detections against labeled windows, checked by hand."""

from __future__ import annotations

import json
import math
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from pipeline.detection.nab import (
    PROFILES,
    FileScore,
    Profile,
    labels_for,
    load_labels,
    normalized,
    probation_rows,
    scaled_sigmoid,
    score_file,
    window_rows,
)

STANDARD, LOW_FP, LOW_FN = PROFILES
SIG_MINUS_1 = 2 / (1 + math.exp(-5.0)) - 1  # sig(-1) = 0.98661...


def hits(n: int, *rows: int) -> list[bool]:
    out = [False] * n
    for i in rows:
        out[i] = True
    return out


def test_profiles_in_order_with_their_weights() -> None:
    assert [(p.name, p.a_tp, p.a_fn, p.a_fp) for p in PROFILES] == [
        ("standard", 1.0, 1.0, 0.11),
        ("reward_low_FP_rate", 1.0, 1.0, 0.22),
        ("reward_low_FN_rate", 1.0, 2.0, 0.11),
    ]


def test_scaled_sigmoid() -> None:
    assert scaled_sigmoid(0.0) == 0.0
    assert scaled_sigmoid(-1.0) == pytest.approx(0.98661429815)
    assert scaled_sigmoid(3.0) == pytest.approx(-0.99999939)  # 3 itself is not past 3
    assert scaled_sigmoid(3.0) != -1.0
    assert scaled_sigmoid(3.000001) == -1.0
    assert scaled_sigmoid(1e6) == -1.0  # no overflow far out


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, 0), (6, 0), (7, 1), (20, 3), (100, 15), (4999, 749), (5000, 750), (100_000, 750)],
)
def test_probation_is_15_percent_floored_capped_at_750(n: int, expected: int) -> None:
    assert probation_rows(n) == expected


# N = 20: probation is rows 0..2; the window is rows 5..9 (width 5).
def test_detection_on_the_first_row_of_a_window_earns_exactly_a_tp() -> None:
    got = score_file(hits(20, 5), [(5, 9)], STANDARD)
    assert got == FileScore(
        score=1.0, true_positives=1, false_positives=0, false_negatives=0, windows=1
    )


def test_detection_on_the_last_row_of_a_window_earns_almost_nothing() -> None:
    got = score_file(hits(20, 9), [(5, 9)], STANDARD)
    expected = (2 / (1 + math.exp(-1.0)) - 1) / SIG_MINUS_1  # sig(-1/5) / sig(-1)
    assert got.score == pytest.approx(expected)
    assert got.score == pytest.approx(0.468387, abs=1e-6)
    assert (got.true_positives, got.false_negatives) == (1, 0)


def test_only_the_best_detection_of_a_window_counts() -> None:
    assert score_file(hits(20, 5, 7, 9), [(5, 9)], STANDARD).score == 1.0
    got = score_file(hits(20, 7, 8), [(5, 9)], STANDARD)
    # the detection at 7 (3 rows to go of 5) counts, the one at 8 does not add
    assert got.score == pytest.approx(0.917429, abs=1e-6)
    assert (got.true_positives, got.false_positives) == (1, 0)


@pytest.mark.parametrize(("profile", "expected"), [(STANDARD, -1.0), (LOW_FN, -2.0)])
def test_a_missed_window_costs_a_fn(profile: Profile, expected: float) -> None:
    got = score_file(hits(20), [(5, 9)], profile)
    assert got.score == expected
    assert (got.true_positives, got.false_negatives, got.windows) == (0, 1, 1)


@pytest.mark.parametrize(("profile", "expected"), [(STANDARD, 0.89), (LOW_FP, 0.78)])
def test_a_false_positive_before_the_first_window_costs_a_fp(
    profile: Profile, expected: float
) -> None:
    got = score_file(hits(20, 4, 10), [(10, 14)], profile)
    assert got.score == pytest.approx(expected)
    assert got.false_positives == 1


def test_false_positives_with_no_window_at_all_each_cost_a_fp() -> None:
    got = score_file(hits(100, 20, 50, 99), [], STANDARD)
    assert got.score == pytest.approx(-0.33)
    assert (got.false_positives, got.windows) == (3, 0)


# N = 100: probation is rows 0..14; the window is rows 20..29 (width 10).
def test_a_false_positive_right_after_a_window_costs_little() -> None:
    got = score_file(hits(100, 20, 30), [(20, 29)], STANDARD)
    # 0.11 * sig((30 - 29) / (10 - 1)) = 0.11 * (2 / (1 + e^(5/9)) - 1) = -0.029793
    fp = 0.11 * (2 / (1 + math.exp(5 / 9)) - 1)
    assert fp == pytest.approx(-0.029793, abs=1e-6)
    assert got.score == pytest.approx(1.0 + fp)
    assert got.false_positives == 1


def test_a_false_positive_far_after_a_window_costs_a_fp() -> None:
    # (57 - 29) / 9 = 3.11 > 3: sig is -1
    got = score_file(hits(100, 20, 57), [(20, 29)], STANDARD)
    assert got.score == pytest.approx(1.0 - 0.11)


def test_false_positives_are_scored_from_the_window_just_before_them() -> None:
    # after the second window (60..64, width 5): 0.11 * sig((66 - 64) / 4) = 0.11 * sig(0.5);
    # measured from the first window (20..29) it would be a full -0.11
    windows = [(20, 29), (60, 64)]
    got = score_file(hits(100, 20, 60, 66), windows, STANDARD)
    fp = 0.11 * (2 / (1 + math.exp(2.5)) - 1)
    assert fp == pytest.approx(-0.093311, abs=1e-6)
    assert got.score == pytest.approx(2.0 + fp)
    # between the windows: from the first one, (31 - 29) / 9
    got = score_file(hits(100, 20, 31, 60), windows, STANDARD)
    assert got.score == pytest.approx(2.0 + 0.11 * (2 / (1 + math.exp(10 / 9)) - 1))


def test_every_false_positive_counts() -> None:
    got = score_file(hits(100, 20, 70, 71, 72), [(20, 29)], STANDARD)
    assert got.false_positives == 3
    assert got.score == pytest.approx(1.0 - 3 * 0.11)


def test_a_false_positive_after_a_one_row_window_costs_a_fp() -> None:
    got = score_file(hits(100, 20, 21), [(20, 20)], STANDARD)
    assert got.score == pytest.approx(1.0 - 0.11)


def test_detections_in_probation_are_ignored() -> None:
    # N = 100: rows 0..14 are probation; the window 10..19 straddles its end
    only_probation = score_file(hits(100, 5, 12, 14), [(10, 19)], STANDARD)
    assert only_probation == FileScore(
        score=-1.0, true_positives=0, false_positives=0, false_negatives=1, windows=1
    )
    # the first detection after probation counts, by its place in the whole window
    got = score_file(hits(100, 12, 17), [(10, 19)], STANDARD)
    assert got.score == pytest.approx((2 / (1 + math.exp(-1.5)) - 1) / SIG_MINUS_1)
    assert got.score == pytest.approx(0.643766, abs=1e-6)


def test_probation_ends_exactly_at_its_row_count() -> None:
    assert score_file(hits(100, 14), [], STANDARD).false_positives == 0
    assert score_file(hits(100, 15), [], STANDARD).false_positives == 1
    # capped at 750 rows for long series (15% of 10,000 would be 1,500)
    assert score_file(hits(10_000, 749), [], STANDARD).false_positives == 0
    assert score_file(hits(10_000, 750), [], STANDARD).score == pytest.approx(-0.11)


@pytest.mark.parametrize(
    "windows",
    [
        [(5, 25)],  # past the last row
        [(-1, 3)],
        [(9, 5)],
        [(10, 12), (5, 8)],  # out of order
        [(5, 10), (10, 12)],  # overlapping
    ],
)
def test_score_file_rejects_bad_windows(windows: list[tuple[int, int]]) -> None:
    with pytest.raises(ValueError, match="window"):
        score_file(hits(20), windows, STANDARD)


# two files, 3 windows: A has 20..29 and 40..49 (N = 100), B has 30..39 (N = 100)
WINDOWS_A = [(20, 29), (40, 49)]
WINDOWS_B = [(30, 39)]


@pytest.mark.parametrize("profile", PROFILES)
def test_normalized_never_firing_is_0_and_perfect_is_100(profile: Profile) -> None:
    never = [score_file(hits(100), WINDOWS_A, profile), score_file(hits(100), WINDOWS_B, profile)]
    assert normalized(never, profile) == 0.0
    perfect = [
        score_file(hits(100, 20, 40), WINDOWS_A, profile),
        score_file(hits(100, 30), WINDOWS_B, profile),
    ]
    assert normalized(perfect, profile) == 100.0


@pytest.mark.parametrize(
    ("profile", "expected"),
    [(STANDARD, 52.304026), (LOW_FP, 50.470692), (LOW_FN, 57.091573)],
)
def test_normalized_mixed(profile: Profile, expected: float) -> None:
    # A: first row of 20..29 (1), last row of 40..49 (sig(-1/10) / sig(-1) = 0.248242),
    #    a false positive at 90, (90 - 49) / 9 > 3 past the window (-A_FP);
    # B: missed (-A_FN). W = 3.
    # standard: S = 1 + 0.248242 - 0.11 - 1 = 0.138242; 100 * (S + 3) / (3 + 3) = 52.304
    scores = [
        score_file(hits(100, 20, 49, 90), WINDOWS_A, profile),
        score_file(hits(100), WINDOWS_B, profile),
    ]
    tp_last = (2 / (1 + math.exp(-0.5)) - 1) / SIG_MINUS_1
    s = 1.0 + tp_last - profile.a_fp - profile.a_fn
    by_formula = 100 * (s + profile.a_fn * 3) / (profile.a_tp * 3 + profile.a_fn * 3)
    assert normalized(scores, profile) == pytest.approx(by_formula)
    assert normalized(scores, profile) == pytest.approx(expected, abs=1e-5)


def test_normalized_without_windows_is_an_error() -> None:
    with pytest.raises(ValueError, match="no labeled windows"):
        normalized([score_file(hits(100, 50), [], STANDARD)], STANDARD)
    with pytest.raises(ValueError, match="no labeled windows"):
        normalized([], STANDARD)


T0 = datetime(2015, 3, 1, 12, 0, 0)
MIN = timedelta(minutes=1)
SECOND = timedelta(seconds=1)
# rows every 5 minutes: row k at T0 + 5k minutes, k = 0..9
TIMESTAMPS = [T0 + 5 * k * MIN for k in range(10)]


@pytest.mark.parametrize(
    ("window", "expected"),
    [
        ((T0 + 10 * MIN, T0 + 20 * MIN), [(2, 4)]),  # both bounds on rows: inclusive
        ((T0 + 10 * MIN - SECOND, T0 + 20 * MIN + SECOND), [(2, 4)]),  # just outside rows
        ((T0 + 10 * MIN + SECOND, T0 + 20 * MIN - SECOND), [(3, 3)]),  # just inside
        ((T0 + 15 * MIN, T0 + 15 * MIN), [(3, 3)]),  # an instant on a row
        ((T0 - 60 * MIN, T0 + 500 * MIN), [(0, 9)]),  # past both ends of the series
        ((T0 + 11 * MIN, T0 + 14 * MIN), []),  # between two rows: dropped
        ((T0 - 60 * MIN, T0 - SECOND), []),  # before the series
        ((T0 + 45 * MIN + SECOND, T0 + 90 * MIN), []),  # after it
    ],
)
def test_window_rows(window: tuple[datetime, datetime], expected: list[tuple[int, int]]) -> None:
    assert window_rows(TIMESTAMPS, [window]) == expected


def test_window_rows_keeps_order_and_drops_only_empty_windows() -> None:
    windows = [
        (T0, T0 + 5 * MIN),
        (T0 + 11 * MIN, T0 + 14 * MIN),
        (T0 + 30 * MIN, T0 + 35 * MIN),
    ]
    assert window_rows(TIMESTAMPS, windows) == [(0, 1), (6, 7)]


def write_json(path: Path, content: Any) -> Path:
    path.write_text(json.dumps(content), encoding="utf-8")
    return path


def test_load_labels(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "windows.json",
        {
            "a.csv": [
                ["2015-03-09 01:02:53.000000", "2015-03-10 10:02:53.000000"],
                ["2015-03-03 04:37:53.000000", "2015-03-04 13:37:53.000000"],
            ],
            "b.csv": [["2015-03-05 03:22:53", "2015-03-05 03:22:53"]],
            "c.csv": [],
        },
    )
    labels = load_labels(path)
    assert labels == {
        "a.csv": [  # sorted by start
            (datetime(2015, 3, 3, 4, 37, 53), datetime(2015, 3, 4, 13, 37, 53)),
            (datetime(2015, 3, 9, 1, 2, 53), datetime(2015, 3, 10, 10, 2, 53)),
        ],
        "b.csv": [(datetime(2015, 3, 5, 3, 22, 53), datetime(2015, 3, 5, 3, 22, 53))],
        "c.csv": [],
    }
    assert labels_for(labels, tmp_path / "data" / "b.csv") == labels["b.csv"]
    with pytest.raises(KeyError, match=r"no labels for 'd\.csv'.*a\.csv, b\.csv, c\.csv"):
        labels_for(labels, tmp_path / "d.csv")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ([["2015-03-03 04:37:53", "2015-03-04 13:37:53"]], "expected an object"),
        ({"a.csv": "2015-03-03 04:37:53"}, "expected a list"),
        ({"a.csv": [["2015-03-03 04:37:53"]]}, r"a\.csv\[0\]: expected \[start, end\]"),
        ({"a.csv": [["2015-03-03", "2015-03-04"]]}, "bad timestamp '2015-03-03'"),
        ({"a.csv": [["2015-03-03 04:37:53", "tomorrow"]]}, "bad timestamp 'tomorrow'"),
        ({"a.csv": [[1425357473, 1425457473]]}, "bad timestamp 1425357473"),
        ({"a.csv": [["2015-03-04 13:37:53", "2015-03-03 04:37:53"]]}, "before it starts"),
        (
            {
                "a.csv": [
                    ["2015-03-03 00:00:00", "2015-03-04 00:00:00"],
                    ["2015-03-04 00:00:00", "2015-03-05 00:00:00"],
                ]
            },
            "overlap",
        ),
    ],
)
def test_load_labels_rejects_bad_content(tmp_path: Path, content: Any, message: str) -> None:
    path = write_json(tmp_path / "windows.json", content)
    with pytest.raises(ValueError, match=message):
        load_labels(path)


def test_load_labels_rejects_what_is_not_json(tmp_path: Path) -> None:
    path = tmp_path / "windows.json"
    path.write_text("{'a.csv': []}", encoding="utf-8")
    with pytest.raises(ValueError, match="not JSON"):
        load_labels(path)


def test_labels_to_score_end_to_end(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "windows.json",
        {"s.csv": [["2015-03-01 13:00:00.000000", "2015-03-01 13:45:00.000000"]]},
    )
    timestamps = [T0 + 5 * k * MIN for k in range(40)]  # 12:00 .. 15:15; probation 6 rows
    rows = window_rows(timestamps, labels_for(load_labels(path), tmp_path / "s.csv"))
    assert rows == [(12, 21)]
    got = score_file(hits(40, 12), rows, STANDARD)
    assert (got.score, got.true_positives) == (1.0, 1)

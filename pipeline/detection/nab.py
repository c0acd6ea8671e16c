"""Scoring of anomaly detections by the rules of the Numenta Anomaly Benchmark (NAB).

A detector is judged on labeled series the way it runs live: one pass, in order.
NAB rewards the earliest detection in each labeled window, charges each missed
window, and charges false positives less when they fall just after a window
(the anomaly's tail) than elsewhere; the normalized score puts a detector that
never fires at 0 and a perfect one at 100, so results are comparable across
series and profiles.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import pairwise
from pathlib import Path

# the labels' format; CSV-style timestamps without the fraction are also taken
TIMESTAMP_FORMATS = ("%Y-%m-%d %H:%M:%S.%f", "%Y-%m-%d %H:%M:%S")
PROBATION_FRACTION_PERCENT = 15
PROBATION_MAX_ROWS = 750

Windows = list[tuple[datetime, datetime]]


@dataclass(frozen=True)
class Profile:
    """Weights of a true positive, a false negative and a false positive."""

    name: str
    a_tp: float
    a_fn: float
    a_fp: float


PROFILES: tuple[Profile, ...] = (
    Profile("standard", 1.0, 1.0, 0.11),
    Profile("reward_low_FP_rate", 1.0, 1.0, 0.22),
    Profile("reward_low_FN_rate", 1.0, 2.0, 0.11),
)


@dataclass(frozen=True)
class FileScore:
    """One series' raw score; true positives and false negatives count windows,
    false positives count detections."""

    score: float
    true_positives: int
    false_positives: int
    false_negatives: int
    windows: int


def scaled_sigmoid(y: float) -> float:
    """2 / (1 + e^(5y)) - 1: 1 at y = -inf, 0 at y = 0, and exactly -1 past y = 3."""
    if y > 3.0:
        return -1.0
    return 2.0 / (1.0 + math.exp(5.0 * y)) - 1.0


def probation_rows(n: int) -> int:
    """min(floor(0.15 n), 750), in integers: 0.15 as a float is slightly below 0.15."""
    return min(n * PROBATION_FRACTION_PERCENT // 100, PROBATION_MAX_ROWS)


def _parse_timestamp(value: object, where: str) -> datetime:
    if isinstance(value, str):
        for fmt in TIMESTAMP_FORMATS:
            try:
                return datetime.strptime(value, fmt)
            except ValueError:
                continue
    raise ValueError(f"{where}: bad timestamp {value!r} (expected 'YYYY-MM-DD HH:MM:SS[.ffffff]')")


def load_labels(path: Path) -> dict[str, Windows]:
    """{file name: [(start, end), ...]} from a NAB-style windows JSON file.

    Each file's windows are returned sorted by start; a window ending before it
    starts, or windows of one file that overlap, are errors (ValueError), as is
    anything that is not {name: [[start, end], ...]}."""
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise ValueError(f"{path}: not JSON: {exc}") from exc
    if not isinstance(raw, dict):
        raise ValueError(f"{path}: expected an object of file name -> windows")
    labels: dict[str, Windows] = {}
    for name, entries in raw.items():
        if not isinstance(entries, list):
            raise ValueError(f"{path}: {name}: expected a list of [start, end] windows")
        windows: Windows = []
        for k, entry in enumerate(entries):
            where = f"{path}: {name}[{k}]"
            if not isinstance(entry, list) or len(entry) != 2:
                raise ValueError(f"{where}: expected [start, end]")
            start = _parse_timestamp(entry[0], where)
            end = _parse_timestamp(entry[1], where)
            if end < start:
                raise ValueError(f"{where}: ends ({end}) before it starts ({start})")
            windows.append((start, end))
        windows.sort()
        for (_, prev_end), (start, _) in pairwise(windows):
            if start <= prev_end:
                raise ValueError(f"{path}: {name}: windows overlap at {start}")
        labels[name] = windows
    return labels


def labels_for(labels: Mapping[str, Windows], series_path: Path) -> Windows:
    """The windows of a series, matched by file name (labels carry no directories)."""
    try:
        return labels[series_path.name]
    except KeyError:
        known = ", ".join(sorted(labels)) or "none"
        raise KeyError(f"no labels for {series_path.name!r}; labeled files: {known}") from None


def window_rows(
    timestamps: Sequence[datetime], windows: Sequence[tuple[datetime, datetime]]
) -> list[tuple[int, int]]:
    """(first row, last row) inside each window, both bounds inclusive; windows that
    hold no row are dropped. Rows are taken in file order, so a repeated or backwards
    timestamp (a daylight-saving repeat) falls where it stands."""
    rows: list[tuple[int, int]] = []
    for start, end in windows:
        inside = [i for i, t in enumerate(timestamps) if start <= t <= end]
        if inside:
            rows.append((inside[0], inside[-1]))
    return rows


def _check_windows(windows: Sequence[tuple[int, int]], n: int) -> None:
    prev_right = -1
    for left, right in windows:
        if not 0 <= left <= right < n:
            raise ValueError(f"window ({left}, {right}) is not within rows 0..{n - 1}")
        if left <= prev_right:
            raise ValueError(f"window ({left}, {right}) is out of order or overlaps the previous")
        prev_right = right


def score_file(
    detections: Sequence[bool], windows: Sequence[tuple[int, int]], profile: Profile
) -> FileScore:
    """NAB score of one series' detections (one per row) against its windows given as
    (first row, last row), sorted and disjoint.

    Rows in probation are skipped whatever they hold, but every window counts: one
    whose only detections fall in probation is missed, and a detection after the
    probation in a window that straddles it scores by its position in the whole
    window. One pass over the rows with a pointer over the windows: O(rows + windows)."""
    n = len(detections)
    _check_windows(windows, n)
    probation = probation_rows(n)
    tp_scores: list[float | None] = [None] * len(windows)
    fp_total = 0.0
    false_positives = 0
    k = 0  # the first window that has not ended before row i
    for i, hit in enumerate(detections):
        while k < len(windows) and windows[k][1] < i:
            k += 1
        if not hit or i < probation:
            continue
        if k < len(windows) and windows[k][0] <= i:
            left, right = windows[k]
            if tp_scores[k] is None:  # the sigmoid falls across a window: the first is the best
                y = -(right - i + 1) / (right - left + 1)
                tp_scores[k] = profile.a_tp * scaled_sigmoid(y) / scaled_sigmoid(-1.0)
            continue
        false_positives += 1
        if k == 0:
            fp_total -= profile.a_fp
            continue
        prev_left, prev_right = windows[k - 1]
        width = prev_right - prev_left + 1
        if width == 1:  # no tail to be lenient about (and y would divide by zero)
            fp_total -= profile.a_fp
        else:
            fp_total += profile.a_fp * scaled_sigmoid((i - prev_right) / (width - 1))
    found = [s for s in tp_scores if s is not None]
    missed = len(windows) - len(found)
    return FileScore(
        score=sum(found) - profile.a_fn * missed + fp_total,
        true_positives=len(found),
        false_positives=false_positives,
        false_negatives=missed,
        windows=len(windows),
    )


def normalized(scores: Sequence[FileScore], profile: Profile) -> float:
    """100 * (S - S_null) / (S_perfect - S_null) over files holding W windows in all,
    with S_perfect = A_TP * W and S_null = -A_FN * W: never firing scores 0, perfect 100.

    Without any window the scale does not exist (0 / 0): ValueError, rather than a
    number that would hide every false positive."""
    total_windows = sum(s.windows for s in scores)
    if total_windows == 0:
        raise ValueError("no labeled windows: the normalized score is undefined")
    raw = sum(s.score for s in scores)
    perfect = profile.a_tp * total_windows
    null = -profile.a_fn * total_windows
    return 100.0 * (raw - null) / (perfect - null)

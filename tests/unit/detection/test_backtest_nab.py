"""The detector's regression test: NAB scores on five labeled real mention-volume series.

The detector runs with the defaults the `engagement backtest` command uses, over each
series of tests/data/nab in one pass, and its alerts are scored by the NAB rules with
every labeled window of the five files pooled."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.detection import backtest, nab
from pipeline.detection.detector import DetectorSettings
from pipeline.detection.settings import DetectionSettings

DATA = Path(__file__).resolve().parents[2] / "data" / "nab"
FILES = (
    "Twitter_volume_AAPL.csv",
    "Twitter_volume_AMZN.csv",
    "Twitter_volume_CRM.csv",
    "Twitter_volume_CVS.csv",
    "Twitter_volume_FB.csv",
)
WINDOWS = 16

# The README's figures, the current values rounded down to one decimal: they must not
# fall. Raise them when the detector improves; never lower them to make a change pass.
# (The defaults chosen by cross-validation over 53 series traded 4.5 points of the
# low-FP profile here for 1.1 standard, 2.8 low-FN and 16.6 standard on the 48 other
# series: a choice of the protocol, see README, not a change made to pass.)
FLOORS = {
    "standard": 78.5,
    "reward_low_FP_rate": 60.6,
    "reward_low_FN_rate": 85.7,
}


@pytest.fixture(scope="module")
def scores() -> dict[str, list[nab.FileScore]]:
    """Profile name -> one FileScore per file, in FILES order."""
    labels = nab.load_labels(DATA / "windows.json")
    assert sorted(labels) == sorted(FILES)
    cfg = DetectionSettings().settings_for(None, "engagement")  # what the command uses
    out: dict[str, list[nab.FileScore]] = {p.name: [] for p in nab.PROFILES}
    for name in FILES:
        path = DATA / name
        for profile, fs in score_series(path, nab.labels_for(labels, path), cfg).items():
            out[profile].append(fs)
    return out


def score_series(
    path: Path, windows: nab.Windows, cfg: DetectorSettings
) -> dict[str, nab.FileScore]:
    """One series' FileScore under each profile, as `engagement backtest --labels`."""
    series = backtest.read_series(path)
    detections = [s.alert is not None for s in backtest.run(series, cfg)]
    # The labels' timestamps are naive (UTC): compare like with like, as the command does.
    naive = [t.replace(tzinfo=None) for t in series.timestamps]
    rows = nab.window_rows(naive, windows)
    return {p.name: nab.score_file(detections, rows, p) for p in nab.PROFILES}


def test_every_labeled_window_is_scored(scores: dict[str, list[nab.FileScore]]) -> None:
    for file_scores in scores.values():
        assert sum(fs.windows for fs in file_scores) == WINDOWS  # none dropped by window_rows
        for fs in file_scores:
            assert fs.true_positives + fs.false_negatives == fs.windows


@pytest.mark.parametrize("profile", nab.PROFILES, ids=lambda p: p.name)
def test_normalized_scores_do_not_fall_below_the_readme_figures(
    scores: dict[str, list[nab.FileScore]], profile: nab.Profile
) -> None:
    got = nab.normalized(scores[profile.name], profile)
    detail = [
        (name, fs.true_positives, fs.windows, fs.false_positives)
        for name, fs in zip(FILES, scores[profile.name], strict=True)
    ]
    assert got >= FLOORS[profile.name], (got, detail)
    assert got <= 100.0

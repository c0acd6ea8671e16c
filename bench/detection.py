"""Detection quality by a protocol that cannot fit the files it is judged on.

Every labeled NAB series in tests/data (the five realTweets mention volumes and
the 48 series of every other category) is run through the live detector, with
the settings `engagement backtest --series KIND` uses for its kind, and scored
by NAB's rules. Then leave-one-category-out: for each category, the candidate
settings that score best (NAB standard, pooled) on all the other categories are
chosen and scored on the held-out one. The held-out scores, pooled, are the
cross-validated figures; the defaults' own scores are printed beside them.

    .venv/bin/python bench/detection.py            # the table (about a minute)
    .venv/bin/python bench/detection.py --json results.json
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
from collections.abc import Iterable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from pipeline.detection import backtest, nab
from pipeline.detection.detector import Detector, DetectorSettings, DetectorState
from pipeline.detection.settings import DetectionSettings

DATA = Path(__file__).resolve().parents[1] / "tests" / "data"
# NAB's artificial series with and without anomalies form one fold: the files
# without any anomaly have no window, so they cannot be scored alone.
FOLD_OF = {"artificialNoAnomaly": "artificial", "artificialWithAnomaly": "artificial"}
# Candidate settings around the defaults; every one is causal and bounded alike.
GRID: dict[str, Sequence[Any]] = {
    "spike_ratio": (1.25, 1.5, 2.0),
    # (range_margin, range_days): the rule "beyond the recent days' range", or none
    "range": ((0.0, 4), (0.02, 3), (0.02, 4), (0.02, 5), (0.05, 4)),
    "cooldown_s": (43_200, 86_400),
    "week_alpha": (0.0, 0.03),  # day-of-week offsets, or none
    "burst_alpha": (0.0, 0.05),  # the burst rule, or none
}


@dataclass(frozen=True)
class Labeled:
    fold: str
    name: str  # category/file.csv
    path: Path
    kind: str
    windows: nab.Windows


def corpus() -> list[Labeled]:
    """The five tweet series (counts) and the 48 others, each with its kind of
    series from tests/data/nab-extra/kinds.json (counts, rates, levels)."""
    out = []
    tweets = nab.load_labels(DATA / "nab" / "windows.json")
    for name, windows in sorted(tweets.items()):
        path = DATA / "nab" / name
        out.append(Labeled("realTweets", f"realTweets/{name}", path, "count", windows))
    extra = nab.load_labels(DATA / "nab-extra" / "windows.json")
    kinds = json.loads((DATA / "nab-extra" / "kinds.json").read_text())
    for name, windows in sorted(extra.items()):
        category = name.split("/")[0]
        fold = FOLD_OF.get(category, category)
        out.append(Labeled(fold, name, DATA / "nab-extra" / name, kinds[name], windows))
    return out


def candidates() -> list[dict[str, Any]]:
    keys = list(GRID)
    return [dict(zip(keys, values, strict=True)) for values in itertools.product(*GRID.values())]


def settings(kind: str, overrides: dict[str, Any]) -> DetectorSettings:
    values = dict(overrides)
    if "range" in values:
        values["range_margin"], values["range_days"] = values.pop("range")
    return replace(DetectionSettings().settings_for_kind(kind), **values)


def current(cfg: DetectorSettings) -> dict[str, Any]:
    """The grid point of the given settings."""
    point = {k: getattr(cfg, k) for k in GRID if k != "range"}
    point["range"] = (cfg.range_margin, cfg.range_days) if cfg.range_margin else (0.0, 4)
    return point


def score(files: Sequence[Labeled], overrides: dict[str, Any]) -> dict[str, list[nab.FileScore]]:
    """File name -> its FileScore under each profile (NAB's order)."""
    out = {}
    for f in files:
        series = backtest.read_series(f.path)
        det = Detector(settings(f.kind, overrides), backtest.step_seconds(series.timestamps))
        st = DetectorState()
        alerts = [
            det.feed(st, int(t.timestamp() * 1000), v) is not None
            for t, v in zip(series.timestamps, series.values, strict=True)
        ]
        naive = [t.replace(tzinfo=None) for t in series.timestamps]
        rows = nab.window_rows(naive, f.windows)
        out[f.name] = [nab.score_file(alerts, rows, p) for p in nab.PROFILES]
    return out


def pooled(scores: dict[str, list[nab.FileScore]], names: Iterable[str], profile: int = 0) -> float:
    return nab.normalized([scores[n][profile] for n in names], nab.PROFILES[profile])


def _score_job(args: tuple[list[Labeled], dict[str, Any]]) -> dict[str, list[nab.FileScore]]:
    return score(*args)


@dataclass(frozen=True)
class Protocol:
    """Every candidate's scores, and what leave-one-category-out made of them."""

    grid: list[dict[str, Any]]
    results: list[dict[str, list[nab.FileScore]]]  # per candidate: file -> its scores
    by_fold: dict[str, list[str]]
    chosen: dict[str, int]  # fold -> the candidate chosen on all the other folds
    held_out: dict[str, list[nab.FileScore]]  # file -> its scores under its fold's choice
    best: int  # the candidate best on every file: what the defaults should be


def cross_validate(
    files: Sequence[Labeled], grid: list[dict[str, Any]], workers: int = 2
) -> Protocol:
    with ProcessPoolExecutor(max_workers=workers) as pool:
        results = list(pool.map(_score_job, [(list(files), c) for c in grid]))
    folds = sorted({f.fold for f in files})
    by_fold = {fold: [f.name for f in files if f.fold == fold] for fold in folds}
    chosen: dict[str, int] = {}
    for fold in folds:
        train = [n for other, names in by_fold.items() if other != fold for n in names]
        chosen[fold] = max(range(len(grid)), key=lambda i: pooled(results[i], train))
    # Cross-validated: every file scored with the candidate chosen without its fold.
    held_out = {n: results[chosen[fold]][n] for fold, names in by_fold.items() for n in names}
    # The defaults: the candidate best on all of them (the held-out figures estimate
    # how such a choice does on series it has not seen).
    everything = [f.name for f in files]
    best = max(range(len(grid)), key=lambda i: pooled(results[i], everything))
    return Protocol(grid, results, by_fold, chosen, held_out, best)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--json", metavar="FILE", help="write the figures as JSON too")
    ap.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    args = ap.parse_args(argv)
    files = corpus()
    grid = candidates()
    defaults_index = grid.index(current(DetectorSettings()))
    start = time.monotonic()
    run = cross_validate(files, grid, args.workers)
    elapsed = time.monotonic() - start
    by_fold, chosen, held_out, best = run.by_fold, run.chosen, run.held_out, run.best
    folds = sorted(by_fold)
    defaults = run.results[defaults_index]

    rows = []
    groups = [(fold, by_fold[fold]) for fold in folds]
    tweets = by_fold["realTweets"]
    others = [n for fold, names in by_fold.items() if fold != "realTweets" for n in names]
    groups += [("the 48 other series", others), ("all 53", tweets + others)]
    for label, names in groups:
        windows = sum(defaults[n][0].windows for n in names)
        cv = [pooled(held_out, names, p) for p in range(3)]
        base = [pooled(defaults, names, p) for p in range(3)]
        pick = grid[chosen[label]] if label in chosen else None
        rows.append(
            {
                "group": label,
                "files": len(names),
                "windows": windows,
                "cross_validated": cv,
                "defaults": base,
                "chosen": pick,
            }
        )
    print(f"{len(files)} files, {len(grid)} candidate settings, scored in {elapsed:.0f} s")
    print("NAB scores: standard / low FP / low FN; held out = chosen on the other categories")
    print(f"{'group':24} {'files':>5} {'windows':>7}  {'held out':>20}  {'defaults':>20}  chosen")
    for r in rows:
        cv = " / ".join(f"{x:5.1f}" for x in r["cross_validated"])
        base = " / ".join(f"{x:5.1f}" for x in r["defaults"])
        pick = ", ".join(f"{k}={v}" for k, v in (r["chosen"] or {}).items())
        print(f"{r['group']:24} {r['files']:>5} {r['windows']:>7}  {cv:>20}  {base:>20}  {pick}")
    print(f"chosen on all {len(files)}: " + ", ".join(f"{k}={v}" for k, v in grid[best].items()))
    if best != defaults_index:
        print("note: the built-in defaults are not that choice")
    if args.json:
        Path(args.json).write_text(json.dumps({"grid": grid, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

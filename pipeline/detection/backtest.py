"""`engagement backtest`: the live detector, with the live defaults, over a CSV series.

Reads `timestamp,value` rows (timestamps as `YYYY-MM-DD HH:MM:SS[.ffffff]`,
RFC 3339 or epoch milliseconds, UTC) and writes
`timestamp,value,anomaly_score,alert`. Rows are fed as they are, in file order: a
missing row is not invented (the live worker feeds an empty window as 0, because
there it knows the window was empty; a file's gap may be an outage of the
export), and a repeated or backwards timestamp (a daylight-saving repeat, as real
exports have) is fed where it stands and counted in `Series.unordered`.
"""

from __future__ import annotations

import csv
import itertools
import math
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from pipeline.detection.detector import Detector, DetectorSettings, DetectorState, Step


class BacktestError(ValueError):
    """A file that cannot be read as a series; the message names the line."""


@dataclass(frozen=True, slots=True)
class Series:
    raw_timestamps: list[str]  # as written, echoed to the output
    raw_values: list[str]
    timestamps: list[datetime]
    values: list[float]
    unordered: int = 0  # rows whose timestamp is not after the previous row's


def _parse_ts(text: str) -> datetime:
    t = text.strip()
    if t.isdigit():
        return datetime.fromtimestamp(int(t) / 1000, tz=UTC)
    dt = datetime.fromisoformat(t.replace("Z", "+00:00"))
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def read_series(path: Path) -> Series:
    raw: list[str] = []
    raw_values: list[str] = []
    ts: list[datetime] = []
    values: list[float] = []
    unordered = 0
    try:
        with path.open(newline="", encoding="utf-8") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            if header is None or [h.strip() for h in header[:2]] != ["timestamp", "value"]:
                raise BacktestError(f"{path}: line 1: expected the header 'timestamp,value'")
            for line, row in enumerate(reader, start=2):
                if not row:
                    continue
                try:
                    t, v = _parse_ts(row[0]), float(row[1])
                except (ValueError, IndexError, OverflowError):
                    v = math.nan
                if not math.isfinite(v):  # one nan would silence every later window
                    raise BacktestError(f"{path}: line {line}: expected a timestamp and a number")
                if ts and t <= ts[-1]:
                    unordered += 1
                raw.append(row[0])
                raw_values.append(row[1].strip())
                ts.append(t)
                values.append(v)
    except OSError as exc:
        raise BacktestError(f"{path}: {exc.strerror or exc}") from None
    if len(ts) < 2:
        raise BacktestError(f"{path}: needs at least two rows")
    return Series(raw, raw_values, ts, values, unordered)


def step_seconds(timestamps: Sequence[datetime]) -> int:
    """The series' window size: the most common spacing of its rows."""
    gaps = [int((b - a).total_seconds()) for a, b in itertools.pairwise(timestamps)]
    return max(1, statistics.mode([g for g in gaps if g > 0] or [1]))


def run(series: Series, cfg: DetectorSettings | None = None) -> list[Step]:
    det = Detector(cfg or DetectorSettings(), step_seconds(series.timestamps))
    st = DetectorState()
    return [
        det.step(st, int(t.timestamp() * 1000), v)
        for t, v in zip(series.timestamps, series.values, strict=True)
    ]


def write_scored(path: Path, series: Series, steps: Sequence[Step]) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f, lineterminator="\n")
        w.writerow(["timestamp", "value", "anomaly_score", "alert"])
        rows = zip(series.raw_timestamps, series.raw_values, steps, strict=True)
        for raw, value, s in rows:
            w.writerow([raw, value, f"{s.score:.6f}", 1 if s.alert else 0])

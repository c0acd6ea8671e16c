"""pipeline.detection.plot: a PNG of a series, its alerts and windows, and the score."""

from __future__ import annotations

import struct
import sys
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from pipeline.detection.plot import plot

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2015, 3, 1, 12, 0, 0)
TIMESTAMPS = [T0 + timedelta(minutes=5 * k) for k in range(48)]
VALUES = [10.0 + (k % 7) for k in range(48)]
VALUES[30] = 80.0
SCORES = [0.1] * 48
SCORES[30] = 0.97
ALERTS = [k == 30 for k in range(48)]
WINDOWS = [(TIMESTAMPS[28], TIMESTAMPS[34])]


def test_writes_a_png_of_the_configured_size(tmp_path: Path) -> None:
    out = tmp_path / "backtest.png"
    plot(out, TIMESTAMPS, VALUES, SCORES, ALERTS, WINDOWS, title="series")
    data = out.read_bytes()
    assert data[:8] == PNG_MAGIC
    assert len(data) > 10_000  # something was drawn
    width, height = struct.unpack(">II", data[16:24])  # the IHDR chunk comes first
    assert (width, height) == (14 * 110, 6 * 110)


def test_no_alerts_and_no_windows_still_draw(tmp_path: Path) -> None:
    out = tmp_path / "quiet.png"
    plot(out, TIMESTAMPS, VALUES, SCORES, [False] * 48)
    assert out.read_bytes()[:8] == PNG_MAGIC


def test_lengths_must_agree(tmp_path: Path) -> None:
    out = tmp_path / "bad.png"
    with pytest.raises(ValueError, match="differ in length: 48, 48, 47, 48"):
        plot(out, TIMESTAMPS, VALUES, SCORES[:-1], ALERTS)
    assert not out.exists()


def test_without_matplotlib_the_error_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # makes `import matplotlib...` fail
    with pytest.raises(RuntimeError, match=r"pip install 'engagement-pipeline\[plot\]'"):
        plot(tmp_path / "x.png", TIMESTAMPS, VALUES, SCORES, ALERTS)

"""pipeline.detection.backtest and `engagement backtest`: reading a series, scoring it with the
live detector, writing and printing the results."""

from __future__ import annotations

import csv
import json
import math
import random
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.detection import backtest
from pipeline.detection.backtest import BacktestError, read_series, step_seconds, write_scored
from pipeline.detection.detector import UP, DetectorSettings
from pipeline.detection.settings import DetectionSettings

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
T0 = datetime(2015, 3, 1, tzinfo=UTC)
DAYS = 4
SPIKE = 3 * 288 + 100  # day 3, 08:20


def write(tmp_path: Path, text: str, name: str = "series.csv") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def synthetic_rows() -> list[tuple[str, float]]:
    """Four days of 5-minute Poisson-ish counts around 100 with a daily rhythm; ten
    times the traffic at SPIKE."""
    rng = random.Random(11)
    rows = []
    for i in range(DAYS * 288):
        t = T0 + timedelta(minutes=5 * i)
        lam = 100.0 * (1.0 + 0.5 * math.sin(2 * math.pi * i / 288))
        v = float(max(0, round(rng.gauss(lam, math.sqrt(lam)))))
        rows.append((t.strftime("%Y-%m-%d %H:%M:%S"), v * 10 if i == SPIKE else v))
    return rows


def synthetic(tmp_path: Path, name: str = "series.csv") -> Path:
    lines = ["timestamp,value"] + [f"{t},{v:g}" for t, v in synthetic_rows()]
    return write(tmp_path, "\n".join(lines) + "\n", name)


# -- read_series ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "line 1: expected the header 'timestamp,value'"),
        ("2015-03-01 00:00:00,1\n2015-03-01 00:05:00,2\n", "line 1: expected the header"),
        ("time,value\n2015-03-01 00:00:00,1\n", "line 1: expected the header"),
        (
            "timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,x\n",
            "line 3: expected a timestamp and a number",
        ),
        (
            "timestamp,value\n2015-03-01 00:00:00,1\n\n2015-03-01 00:05:00,1\nyesterday,4\n",
            "line 5: expected a timestamp and a number",  # blank lines still count
        ),
        (
            "timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00\n",
            "line 3: expected a timestamp and a number",
        ),
        ("timestamp,value\n", "needs at least two rows"),
        ("timestamp,value\n2015-03-01 00:00:00,1\n", "needs at least two rows"),
    ],
)
def test_a_bad_series_is_an_error_naming_the_file_and_line(
    tmp_path: Path, text: str, message: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(BacktestError) as err:
        read_series(path)
    assert str(err.value).startswith(f"{path}: ")
    assert message in str(err.value)


def test_a_missing_file_is_a_backtest_error(tmp_path: Path) -> None:
    path = tmp_path / "nope.csv"
    with pytest.raises(BacktestError) as err:
        read_series(path)
    assert str(err.value).startswith(f"{path}: ")


def test_a_backtest_error_is_a_value_error() -> None:
    assert issubclass(BacktestError, ValueError)


def test_timestamp_forms_all_parse_as_utc(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,value\n"
        "2015-03-01 00:00:00,1\n"
        "2015-03-01T00:05:00Z,2\n"
        "2015-03-01T01:10:00+01:00,3\n"
        f"{int((T0 + timedelta(minutes=15)).timestamp() * 1000)},4\n"
        "2015-03-01 00:20:00.500000,5.5\n",
    )
    s = read_series(path)
    assert s.timestamps == [
        T0,
        T0 + timedelta(minutes=5),
        T0 + timedelta(minutes=10),
        T0 + timedelta(minutes=15),
        T0 + timedelta(minutes=20, milliseconds=500),
    ]
    assert all(t.tzinfo is not None and t.utcoffset() == timedelta(0) for t in s.timestamps)
    assert s.values == [1.0, 2.0, 3.0, 4.0, 5.5]
    assert s.raw_timestamps[1:3] == ["2015-03-01T00:05:00Z", "2015-03-01T01:10:00+01:00"]


def test_extra_columns_and_blank_lines_are_ignored(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,value,note\n2015-03-01 00:00:00,1,a\n\n2015-03-01 00:05:00,2,b\n",
    )
    s = read_series(path)
    assert s.values == [1.0, 2.0]


def test_the_step_is_the_most_common_spacing() -> None:
    ts = [T0 + timedelta(minutes=m) for m in (0, 5, 10, 15, 30, 35, 36)]
    assert step_seconds(ts) == 300
    assert step_seconds([T0, T0 + timedelta(seconds=60)]) == 60


@pytest.mark.parametrize("value", ["nan", "inf"])
def test_a_value_that_is_not_a_finite_number_is_an_error(tmp_path: Path, value: str) -> None:
    path = write(
        tmp_path,
        f"timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,{value}\n"
        "2015-03-01 00:10:00,1\n",
    )
    with pytest.raises(BacktestError, match="line 3"):
        read_series(path)


# -- run and write_scored ---------------------------------------------------------


def test_run_is_the_detector_with_the_given_settings(tmp_path: Path) -> None:
    s = read_series(synthetic(tmp_path))
    steps = backtest.run(s)
    assert len(steps) == len(s.values) == DAYS * 288
    assert [i for i, st in enumerate(steps) if st.alert] == [SPIKE]
    assert steps[SPIKE].alert == UP
    assert [st.start_ms for st in steps[:2]] == [
        int(T0.timestamp() * 1000),
        int(T0.timestamp() * 1000) + 300_000,
    ]
    assert not any(st.alert for st in backtest.run(s, DetectorSettings(min_volume=1e9)))


def test_write_scored_echoes_timestamps_and_values(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "timestamp,value\n2015-03-01T00:00:00Z,1\n1425168300000,2.5\n2015-03-01 00:10:00,3\n",
    )
    s = read_series(path)
    steps = backtest.run(s)
    out = tmp_path / "scored.csv"
    write_scored(out, s, steps)
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert rows[0] == ["timestamp", "value", "anomaly_score", "alert"]
    assert [r[0] for r in rows[1:]] == [
        "2015-03-01T00:00:00Z",
        "1425168300000",
        "2015-03-01 00:10:00",
    ]
    assert [r[1] for r in rows[1:]] == ["1", "2.5", "3"]
    assert [float(r[2]) for r in rows[1:]] == pytest.approx([st.score for st in steps], abs=1e-6)
    assert [r[3] for r in rows[1:]] == ["0", "0", "0"]


def test_write_scored_keeps_every_digit_of_a_value(tmp_path: Path) -> None:
    path = write(
        tmp_path, "timestamp,value\n2015-03-01 00:00:00,1234567\n2015-03-01 00:05:00,0.1234567\n"
    )
    s = read_series(path)
    out = tmp_path / "scored.csv"
    write_scored(out, s, backtest.run(s))
    with out.open(newline="", encoding="utf-8") as f:
        rows = list(csv.reader(f))
    assert [float(r[1]) for r in rows[1:]] == s.values


# -- the command ------------------------------------------------------------------


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ENGAGEMENT_* variable of the developer's shell reaches the command."""
    import os

    for var in list(os.environ):
        if var.startswith("ENGAGEMENT_"):
            monkeypatch.delenv(var)
    return monkeypatch


def scored_rows(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.reader(f))


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
def test_backtest_writes_one_row_per_input_row_alerting_as_the_detector(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = synthetic(tmp_path)
    out = tmp_path / "scored.csv"
    assert cli.main(["backtest", str(series), "--out", str(out)]) == 0
    rows = scored_rows(out)
    assert rows[0] == ["timestamp", "value", "anomaly_score", "alert"]
    body = rows[1:]
    assert len(body) == DAYS * 288
    assert {r[3] for r in body} <= {"0", "1"}
    assert all(0.0 <= float(r[2]) <= 1.0 for r in body)
    assert [r[0] for r in body] == [t for t, _ in synthetic_rows()]
    # The alert column is the detector's own decision, with the live defaults.
    s = read_series(series)
    steps = backtest.run(s, DetectionSettings().settings_for(None, "engagement"))
    assert [r[3] == "1" for r in body] == [st.alert is not None for st in steps]
    assert [float(r[2]) for r in body] == pytest.approx([st.score for st in steps], abs=1e-6)
    assert sum(r[3] == "1" for r in body) == 1
    assert capsys.readouterr().out == f"{DAYS * 288} rows, 1 alerts written to {out}\n"


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
def test_backtest_uses_the_configured_detection_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = write(tmp_path, "[detection]\nmin_volume = 1e9\n", "c.toml")
    monkeypatch.setenv("ENGAGEMENT_CONFIG", str(config))
    out = tmp_path / "scored.csv"
    assert cli.main(["backtest", str(synthetic(tmp_path)), "--out", str(out)]) == 0
    assert {r[3] for r in scored_rows(out)[1:]} == {"0"}


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
def test_backtest_prints_nab_scores_with_labels(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    series = synthetic(tmp_path)
    start = (T0 + timedelta(minutes=5 * SPIKE)).strftime("%Y-%m-%d %H:%M:%S.%f")
    end = (T0 + timedelta(minutes=5 * SPIKE + 60)).strftime("%Y-%m-%d %H:%M:%S.%f")
    labels = write(tmp_path, json.dumps({"series.csv": [[start, end]]}), "windows.json")
    out = tmp_path / "scored.csv"
    assert cli.main(["backtest", str(series), "--out", str(out), "--labels", str(labels)]) == 0
    lines = capsys.readouterr().out.splitlines()
    # The only alert is on the first row of the window: a perfect score in every profile.
    assert lines[1:] == [
        f"NAB {name}: 100.0 (raw 1.000; 1 of 1 windows detected, 0 false positives)"
        for name in ("standard", "reward_low_FP_rate", "reward_low_FN_rate")
    ]


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
def test_backtest_draws_a_png_with_plot(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out, png = tmp_path / "scored.csv", tmp_path / "plot.png"
    argv = ["backtest", str(synthetic(tmp_path)), "--out", str(out), "--plot", str(png)]
    assert cli.main(argv) == 0
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert capsys.readouterr().out.splitlines()[-1] == f"plot written to {png}"


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
@pytest.mark.parametrize(
    ("series_text", "labels_text", "message"),
    [
        ("timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,x\n", None, "line 3"),
        ("time,value\n", None, "line 1"),
        (None, None, "nope.csv"),
        ("timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,2\n", "{", "not JSON"),
        (
            "timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,2\n",
            '{"other.csv": []}',
            "no labels for 'series.csv'",
        ),
    ],
)
def test_backtest_on_a_bad_file_exits_2_with_a_message(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    series_text: str | None,
    labels_text: str | None,
    message: str,
) -> None:
    series = tmp_path / ("series.csv" if series_text is not None else "nope.csv")
    if series_text is not None:
        series.write_text(series_text, encoding="utf-8")
    out = tmp_path / "scored.csv"
    argv = ["backtest", str(series), "--out", str(out)]
    if labels_text is not None:
        argv += ["--labels", str(write(tmp_path, labels_text, "windows.json"))]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("engagement backtest: ")
    assert message in err
    assert not out.exists()


def test_repeated_or_backwards_timestamps_are_counted_and_kept_in_file_order(
    tmp_path: Path,
) -> None:
    text = (
        "timestamp,value\n2015-03-01 00:00:00,1\n2015-03-01 00:05:00,2\n"
        "2015-03-01 00:05:00,3\n2015-03-01 00:02:00,4\n2015-03-01 00:10:00,5\n"
    )
    s = read_series(write(tmp_path, text))
    assert s.unordered == 2 and s.values == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert step_seconds(s.timestamps) == 300  # spacings that are not forward are ignored
    assert len(backtest.run(s)) == 5


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
def test_backtest_warns_about_unordered_rows_and_scores_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rows = synthetic_rows()
    rows.insert(500, rows[499])  # a daylight-saving-like repeat
    series = write(tmp_path, "timestamp,value\n" + "".join(f"{t},{v}\n" for t, v in rows))
    out = tmp_path / "scored.csv"
    assert cli.main(["backtest", str(series), "--out", str(out)]) == 0
    assert len(scored_rows(out)) == len(rows) + 1
    err = capsys.readouterr().err
    assert "warning: 1 rows have a timestamp not after the previous row's" in err


@pytest.mark.usefixtures("no_signal_handlers", "clean_env")
@pytest.mark.parametrize(
    "kind,transform", [("count", "count"), ("rate", "log"), ("share", "share")]
)
def test_backtest_series_kind_picks_the_workers_transform_and_floors(
    tmp_path: Path, kind: str, transform: str
) -> None:
    cfg = DetectionSettings().settings_for_kind(kind)
    assert cfg.transform == transform and cfg.directions == ("spike", "drop")
    worker_series = {"count": "engagement", "rate": "engagement_rate", "share": "negative_share"}
    worker = DetectionSettings().settings_for(None, worker_series[kind])
    assert (cfg.transform, cfg.scale_floor) == (worker.transform, worker.scale_floor)
    series, out = synthetic(tmp_path), tmp_path / "scored.csv"
    assert cli.main(["backtest", str(series), "--out", str(out), "--series", kind]) == 0
    steps = backtest.run(read_series(series), cfg)
    assert [r[3] == "1" for r in scored_rows(out)[1:]] == [st.alert is not None for st in steps]

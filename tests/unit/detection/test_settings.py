"""The [detection] settings: defaults per series, per-account overrides, every problem named."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipeline.config import load as config_load
from pipeline.config.settings import Settings, SettingsError
from pipeline.detection.detector import DOWN, UP, Detector, DetectorSettings, DetectorState
from pipeline.detection.settings import SERIES, DetectionSettings, parse


def parsed(raw: Any) -> DetectionSettings:
    problems: list[tuple[str, str]] = []
    got = parse(raw, problems)
    assert problems == []
    assert got is not None
    return got


def problems_of(raw: Any) -> list[tuple[str, str]]:
    problems: list[tuple[str, str]] = []
    assert parse(raw, problems) is None
    assert problems
    return problems


def load(tmp_path: Path, text: str) -> Settings:
    f = tmp_path / "c.toml"
    f.write_text(text, encoding="utf-8")
    return config_load.load(f, env={})


def test_no_table_gives_the_defaults() -> None:
    d = parse(None, [])
    assert d == DetectionSettings()
    assert d is not None
    assert d.window_s == 300
    assert d.series == tuple(SERIES)
    assert (d.defaults, d.accounts, d.competitors) == ({}, {}, {})
    assert d.settings_for(None, "engagement") == DetectorSettings()
    assert d.settings_for("anyone", "engagement") == DetectorSettings()


def test_an_empty_table_is_the_defaults_too() -> None:
    assert parsed({}) == DetectionSettings()


@pytest.mark.parametrize(
    ("series", "transform", "directions"),
    [
        ("engagement", "count", (UP, DOWN)),
        ("engagement_rate", "log", (UP, DOWN)),
        ("mentions", "count", (UP,)),
        ("negative_share", "share", (UP,)),
        ("share_of_voice", "share", (DOWN,)),
    ],
)
def test_each_series_has_its_own_defaults(
    series: str, transform: str, directions: tuple[str, ...]
) -> None:
    cfg = DetectionSettings().settings_for(None, series)
    assert (cfg.transform, cfg.directions) == (transform, directions)
    if transform != "count":
        assert cfg.scale_floor < DetectorSettings().scale_floor  # in a share's or a log's units


def test_account_overrides_apply_on_top_of_the_series_defaults() -> None:
    d = parsed(
        {
            "spike_ratio": 2.0,
            "accounts": {
                "brand_x": {"spike_ratio": 3, "cooldown_s": 600},
                "brand_y": {"directions": ["spike", "drop"]},
            },
        }
    )
    x = d.settings_for("brand_x", "mentions")
    assert x.directions == (UP,)  # the series' default, not overridden
    assert x.spike_ratio == 3.0 and isinstance(x.spike_ratio, float)
    assert x.cooldown_s == 600
    y = d.settings_for("brand_y", "mentions")
    assert y.directions == (UP, DOWN)
    assert y.spike_ratio == 2.0  # the table's default for every account
    other = d.settings_for("brand_z", "mentions")
    assert (other.directions, other.spike_ratio, other.cooldown_s) == ((UP,), 2.0, 43_200)
    assert d.settings_for(None, "mentions") == other
    rate = d.settings_for("brand_x", "engagement_rate")
    assert (rate.transform, rate.scale_floor, rate.spike_ratio) == ("log", 0.05, 3.0)


def test_top_level_values_and_competitors_are_kept() -> None:
    d = parsed(
        {
            "window_s": 60,
            "series": ["engagement", "share_of_voice"],
            "min_events": 10,
            "negative_below": -0.5,
            "forget_after_s": 3600,
            "min_z": 5,
            "competitors": {"brand_x": ["rival_a", "rival_b"]},
        }
    )
    assert d.window_s == 60
    assert d.series == ("engagement", "share_of_voice")
    assert (d.min_events, d.negative_below, d.forget_after_s) == (10, -0.5, 3600)
    assert d.defaults == {"min_z": 5.0}
    assert d.competitors == {"brand_x": ("rival_a", "rival_b")}


@pytest.mark.parametrize(
    ("raw", "path", "reason"),
    [
        (5, "detection", "must be a table"),
        ({"nope": 1}, "detection.nope", "unknown key"),
        ({"accounts": {"a": {"nope": 1}}}, "detection.accounts.a.nope", "unknown key"),
        ({"spike_ratio": "2"}, "detection.spike_ratio", "non-negative number"),
        ({"spike_ratio": True}, "detection.spike_ratio", "non-negative number"),
        ({"spike_ratio": -1.0}, "detection.spike_ratio", "non-negative number"),
        ({"history_days": 1.5}, "detection.history_days", "non-negative integer"),
        ({"cooldown_s": -1}, "detection.cooldown_s", "non-negative integer"),
        ({"cooldown_s": True}, "detection.cooldown_s", "non-negative integer"),
        ({"transform": "sqrt"}, "detection.transform", "count, log, share"),
        ({"accounts": {"a": {"transform": 1}}}, "detection.accounts.a.transform", "one of"),
        ({"directions": ["up"]}, "detection.directions", "'spike' and/or 'drop'"),
        ({"directions": []}, "detection.directions", "'spike' and/or 'drop'"),
        ({"directions": "spike"}, "detection.directions", "'spike' and/or 'drop'"),
        ({"level_alpha": 0}, "detection.level_alpha", "(0, 1)"),
        ({"season_alpha": 1}, "detection.season_alpha", "(0, 1)"),
        ({"scale_alpha": 1.5}, "detection.scale_alpha", "(0, 1)"),
        ({"accounts": {"a": {"level_alpha": 2}}}, "detection.accounts.a.level_alpha", "(0, 1)"),
        ({"competitors": {"a": "b"}}, "detection.competitors", "account = [accounts]"),
        ({"competitors": {"a": []}}, "detection.competitors", "account = [accounts]"),
        ({"competitors": {"a": [1]}}, "detection.competitors", "account = [accounts]"),
        ({"competitors": ["a"]}, "detection.competitors", "account = [accounts]"),
        ({"accounts": {"a": 1}}, "detection.accounts", "table of account tables"),
        ({"accounts": ["a"]}, "detection.accounts", "table of account tables"),
        ({"series": ["engagement", "likes"]}, "detection.series", "must be a list of"),
        ({"series": "engagement"}, "detection.series", "must be a list of"),
        ({"window_s": 0}, "detection.window_s", "positive integer"),
        ({"min_events": 2.5}, "detection.min_events", "positive integer"),
        ({"forget_after_s": "1d"}, "detection.forget_after_s", "positive integer"),
        ({"negative_below": 2}, "detection.negative_below", "[-1, 1]"),
        ({"negative_below": "low"}, "detection.negative_below", "[-1, 1]"),
        ({"range_margin": -0.1}, "detection.range_margin", "non-negative number"),
        ({"range_days": 2.5}, "detection.range_days", "non-negative integer"),
        ({"burst_alpha": 1.0}, "detection.burst_alpha", "must be in [0, 1)"),
        ({"week_alpha": 1.5}, "detection.week_alpha", "must be in [0, 1)"),
        ({"range_min_z": -1}, "detection.range_min_z", "non-negative number"),
        ({"log_unit": "tenth"}, "detection.log_unit", "non-negative number"),
    ],
)
def test_each_problem_is_named(raw: Any, path: str, reason: str) -> None:
    problems = problems_of(raw)
    assert any(p == path and reason in r for p, r in problems), problems


def test_every_problem_is_reported_at_once() -> None:
    problems = problems_of(
        {
            "window_s": -5,
            "transform": "sqrt",
            "accounts": {"a": {"clip": "x"}, "b": {"oops": 1}},
            "competitors": {"a": "b"},
        }
    )
    assert {p for p, _ in problems} == {
        "detection.window_s",
        "detection.transform",
        "detection.accounts.a.clip",
        "detection.accounts.b.oops",
        "detection.competitors",
    }


def test_a_problem_leaves_the_callers_list_growing_not_replaced() -> None:
    problems = [("elsewhere", "already there")]
    assert parse({"nope": 1}, problems) is None
    assert problems == [("elsewhere", "already there"), ("detection.nope", "unknown key")]
    # A good table after earlier problems elsewhere is still parsed.
    assert parse({"min_z": 3}, problems) is not None


def test_load_reads_the_detection_table(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[detection]\nwindow_s = 60\nseries = ["mentions"]\nspike_ratio = 2.5\n'
        '[detection.accounts.brand_x]\ndirections = ["spike", "drop"]\nmin_z = 6\n'
        '[detection.competitors]\nbrand_x = ["rival_a"]\n',
    )
    d = s.detection
    assert (d.window_s, d.series) == (60, ("mentions",))
    assert d.competitors == {"brand_x": ("rival_a",)}
    x = d.settings_for("brand_x", "mentions")
    assert (x.directions, x.min_z, x.spike_ratio) == ((UP, DOWN), 6.0, 2.5)
    assert d.settings_for("brand_y", "mentions").directions == (UP,)


def test_load_without_a_detection_table_keeps_the_defaults(tmp_path: Path) -> None:
    assert load(tmp_path, 'broker = "kafka://k:9092"\n').detection == DetectionSettings()


def test_load_reports_detection_problems_with_the_others(tmp_path: Path) -> None:
    with pytest.raises(SettingsError) as err:
        load(tmp_path, "colour = 1\n[detection]\nspike_ratio = -2\n[detection.accounts.a]\nx = 1\n")
    assert {p for p, _ in err.value.problems} == {
        "colour",
        "detection.spike_ratio",
        "detection.accounts.a.x",
    }


@pytest.mark.parametrize(
    ("raw", "series"),
    [({"scale_floor": 0}, "negative_share"), ({"history_days": 0}, "engagement")],
)
def test_a_table_parse_accepts_gives_a_detector_that_runs_in_bounded_memory(
    raw: dict[str, Any], series: str
) -> None:
    problems: list[tuple[str, str]] = []
    d = parse(raw, problems)
    if d is None:  # rejecting the value is a fix too
        return
    det = Detector(d.settings_for(None, series), 3_600)
    st = DetectorState()
    for i in range(30 * 24):
        det.step(st, i * 3_600_000, 0.1 + 0.01 * (i % 3))
    assert len(st.maxima) <= DetectorSettings().history_days


def test_the_rules_and_weekday_offsets_can_be_turned_off() -> None:
    problems: list[tuple[str, str]] = []
    raw = {"range_margin": 0, "burst_alpha": 0, "week_alpha": 0.0, "accounts": {"a": {}}}
    d = parse(raw, problems)
    assert problems == [] and d is not None
    cfg = d.settings_for("a", "engagement")
    assert (cfg.range_margin, cfg.burst_alpha, cfg.week_alpha) == (0.0, 0.0, 0.0)
    # and such a detector judges by the peak rule alone
    steps = [Detector(cfg, 300).step(DetectorState(), 0, 10.0)]
    assert steps[0].rule == "peak" and steps[0].alert is None

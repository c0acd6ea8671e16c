"""The [responses] and [calendars] settings: every problem reported, defaults kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.config import load as config_load
from pipeline.config.settings import Settings, SettingsError
from pipeline.responses.settings import DEFAULT_SLA, ResponseSettings, SlaRule

ROOT = Path(__file__).resolve().parents[3]


def load(tmp_path: Path, text: str) -> Settings:
    f = tmp_path / "c.toml"
    f.write_text(text, encoding="utf-8")
    return config_load.load(f, env={})


def test_defaults_time_by_priority_without_calendars() -> None:
    r = ResponseSettings()
    assert r.sla == DEFAULT_SLA
    assert [r.sla_s("a", "dm", p) for p in ("urgent", "high", "normal", "low")] == [
        900,
        3600,
        14400,
        86400,
    ]
    assert r.calendar("a") is None


def test_first_matching_rule_wins_and_no_match_means_no_sla(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[responses]\nsla = [{ sla_s = 60, accounts = ["vip"], kinds = ["dm"] },'
        ' { sla_s = 600, priorities = ["urgent"] }]\n',
    )
    r = s.responses
    assert r.sla == (SlaRule(60, ("vip",), ("dm",)), SlaRule(600, priorities=("urgent",)))
    assert r.sla_s("vip", "dm", "urgent") == 60
    assert r.sla_s("other", "dm", "urgent") == 600
    assert r.sla_s("other", "dm", "normal") is None


def test_calendar_assigned_to_an_account(tmp_path: Path) -> None:
    s = load(
        tmp_path,
        '[responses.calendar_by_account]\nacme = "emea"\n'
        '[calendars.emea]\ntimezone = "Europe/Berlin"\nmon = ["09:00-17:00"]\n',
    )
    cal = s.responses.calendar("acme")
    assert cal is not None and cal.tz == "Europe/Berlin"
    assert s.responses.calendar("globex") is None


@pytest.mark.parametrize(
    ("text", "path", "reason"),
    [
        ("[responses]\nwarning_fraction = 1.5\n", "responses.warning_fraction", "(0, 1)"),
        ("[responses]\nhorizon_s = 0\n", "responses.horizon_s", "positive integer"),
        ("[responses]\nnope = 1\n", "responses.nope", "unknown key"),
        ('[responses]\ninbound_kinds = ["reply"]\n', "responses.inbound_kinds", "unknown"),
        ('[responses]\nsla = [{ kinds = ["dm"] }]\n', "responses.sla[0].sla_s", "required"),
        ("[responses]\nsla = [{ sla_s = 5, oops = 1 }]\n", "responses.sla[0].oops", "unknown"),
        ("[responses]\nsla = 5\n", "responses.sla", "array of tables"),
        (
            "[responses]\ndegradation_step_s = 700\n",
            "responses.degradation_window_s",
            "multiple",
        ),
        (
            '[responses.calendar_by_account]\nacme = "nope"\n',
            "responses.calendar_by_account.acme",
            "no calendar named 'nope'",
        ),
        (
            '[calendars.x]\ntimezone = "Nowhere/Land"\nmon = ["09:00-17:00"]\n',
            "calendars.x.timezone",
            "unknown time zone",
        ),
    ],
)
def test_each_problem_is_named(tmp_path: Path, text: str, path: str, reason: str) -> None:
    with pytest.raises(SettingsError) as err:
        load(tmp_path, text)
    assert any(p == path and reason in r for p, r in err.value.problems), err.value.problems


def test_the_example_config_parses_with_its_calendar() -> None:
    s = config_load.load(ROOT / "deploy" / "config.example.toml", env={})
    assert s.responses.calendar("acme") is not None
    assert s.responses.sla_s("anyone", "dm", "high") == 1800

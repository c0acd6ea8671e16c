"""pipeline.responses.business_hours: calendar parsing, business time across DST, holidays and
midnight, and add_business_seconds as the minimal inverse of business_seconds."""

from __future__ import annotations

import math
import re
import tomllib
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.responses.business_hours import DAYS, Calendar, _day_spans, parse_calendar

H = 3600
DAY_MS = 86_400_000
BOUNDED = settings(max_examples=150, deadline=None)


def utc(text: str) -> int:
    """UTC epoch ms of an ISO time written in UTC, e.g. '2026-03-29T01:00'."""
    return round(datetime.fromisoformat(text).replace(tzinfo=UTC).timestamp() * 1000)


def local(text: str, tz: str) -> int:
    """UTC epoch ms of an unambiguous local wall time in `tz`."""
    return round(datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz)).timestamp() * 1000)


def make(**fields: Any) -> Calendar:
    """A calendar through parse_calendar: tz= (default Berlin), holidays=, mon=..sun=."""
    raw = {"timezone": fields.pop("tz", "Europe/Berlin"), **fields}
    raw["holidays"] = list(fields.get("holidays", ()))
    problems: list[tuple[str, str]] = []
    cal = parse_calendar("cal", raw, problems)
    assert problems == []
    assert cal is not None
    return cal


def problems_of(raw: object) -> dict[str, str]:
    problems: list[tuple[str, str]] = []
    assert parse_calendar("calendars.emea", raw, problems) is None
    found = dict(problems)
    assert len(found) == len(problems), "one problem per path"
    return found


WEEKDAYS_9_17 = {d: ["09:00-17:00"] for d in DAYS[:5]}
EXAMPLE = """
[calendars.emea]
timezone = "Europe/Berlin"
mon = ["09:00-17:00"]
tue = ["09:00-12:30", "13:30-17:00"]
wed = ["09:00-17:00"]
thu = ["09:00-17:00"]
fri = ["09:00-17:00"]
sat = []                      # omitted days are closed
sun = ["22:00-02:00"]         # crosses midnight into Monday
holidays = ["2026-12-25", "2026-12-26"]
"""
EMEA = make(
    **{d: ["09:00-17:00"] for d in ("mon", "wed", "thu", "fri")},
    tue=["09:00-12:30", "13:30-17:00"],
    sun=["22:00-02:00"],
    holidays=("2026-12-25", "2026-12-26"),
)
EMEA_WEEK_S = (4 * 8 + 7 + 4) * H


# -- parsing ------------------------------------------------------------------


def test_example_table_parses() -> None:
    problems: list[tuple[str, str]] = []
    raw = tomllib.loads(EXAMPLE)["calendars"]["emea"]
    cal = parse_calendar("calendars.emea", raw, problems)
    assert problems == []
    assert cal == Calendar(
        tz="Europe/Berlin",
        weekly=(
            ((540, 1020),),
            ((540, 750), (810, 1020)),
            ((540, 1020),),
            ((540, 1020),),
            ((540, 1020),),
            (),
            ((1320, 1560),),
        ),
        holidays=frozenset({date(2026, 12, 25), date(2026, 12, 26)}),
    )
    assert cal == EMEA


def test_toml_date_literals_and_omitted_keys() -> None:
    raw = tomllib.loads('timezone = "UTC"\nmon = ["08:00-09:00"]\nholidays = [2026-01-05]')
    cal = parse_calendar("c", raw, [])
    weekly = (((480, 540),), (), (), (), (), (), ())
    assert cal == Calendar("UTC", weekly, frozenset({date(2026, 1, 5)}))


@pytest.mark.parametrize(
    ("text", "span"),
    [
        ("00:00-24:00", (0, 1440)),
        ("22:00-24:00", (1320, 1440)),
        ("22:00-02:00", (1320, 1560)),
        ("23:59-00:00", (1439, 1440)),
        ("12:00-11:59", (720, 2159)),
        ("00:01-00:00", (1, 1440)),
    ],
)
def test_span_forms(text: str, span: tuple[int, int]) -> None:
    assert make(mon=[text]).weekly[0] == (span,)


def test_day_intervals_are_sorted() -> None:
    assert make(mon=["13:00-14:00", "09:00-10:00"]).weekly[0] == ((540, 600), (780, 840))


@pytest.mark.parametrize(
    "bad",
    [
        "9:00-17:00",
        "09:00 - 17:00",
        "09:00\u201317:00",  # an en dash
        "0900-1700",
        "24:00-02:00",
        "09:00-24:01",
        "09:00-25:00",
        "09:60-10:00",
        "-09:00-10:00",
        "",
        900,
        None,
        ["09:00", "17:00"],
    ],
)
def test_bad_span_text(bad: object) -> None:
    found = problems_of({"timezone": "UTC", "mon": [bad], "tue": ["09:00-10:00"]})
    assert found == {"calendars.emea.mon[0]": "must be 'HH:MM-HH:MM'"}


def test_zero_length_span() -> None:
    found = problems_of({"timezone": "UTC", "mon": ["09:00-17:00", "10:00-10:00"]})
    assert found == {"calendars.emea.mon[1]": "must have positive length"}


@pytest.mark.parametrize(
    ("days", "path", "other"),
    [
        ({"mon": ["09:00-12:00", "11:00-13:00"]}, "mon[1]", "mon[0]"),
        ({"mon": ["11:00-13:00", "09:00-12:00"]}, "mon[0]", "mon[1]"),
        ({"mon": ["09:00-17:00", "10:00-11:00"]}, "mon[1]", "mon[0]"),
        ({"mon": ["22:00-02:00"], "tue": ["01:00-09:00"]}, "tue[0]", "mon[0]"),
        ({"sun": ["22:00-02:00"], "mon": ["01:59-09:00"]}, "mon[0]", "sun[0]"),
        ({"sat": ["20:00-10:00"], "sun": ["09:00-10:00"]}, "sun[0]", "sat[0]"),
        ({"sun": ["22:00-02:00", "23:00-03:00"]}, "sun[1]", "sun[0]"),
    ],
)
def test_overlaps(days: dict[str, list[str]], path: str, other: str) -> None:
    found = problems_of({"timezone": "UTC", **days})
    assert found == {f"calendars.emea.{path}": f"overlaps {other}"}


def test_touching_spans_are_not_overlaps() -> None:
    cal = make(mon=["09:00-12:00", "12:00-13:00"], sun=["00:00-24:00"], sat=["22:00-24:00"], tue=[])
    assert cal.weekly[0] == ((540, 720), (720, 780))
    assert make(sun=["12:00-00:00"], mon=["00:00-01:00"]).weekly[6] == ((720, 1440),)
    assert make(sat=["00:00-24:00"], sun=["00:00-24:00"]).weekly[5:] == (((0, 1440),),) * 2


def test_full_week_of_24h_days() -> None:
    cal = make(tz="UTC", **{d: ["00:00-24:00"] for d in DAYS})
    start = utc("2026-01-01T05:00")
    assert cal.business_seconds(start, start + 14 * DAY_MS) == 14 * 24 * H
    assert cal.add_business_seconds(start, 10 * 24 * H) == start + 10 * DAY_MS


@pytest.mark.parametrize(
    ("tz", "reason"),
    [
        ("Europe/Berln", "unknown time zone 'Europe/Berln'"),
        ("America", "unknown time zone 'America'"),
        ("", "unknown time zone ''"),
        ("../etc/passwd", "unknown time zone '../etc/passwd'"),
        ("/etc/localtime", "unknown time zone '/etc/localtime'"),
        ("Europe/Berlin ", "unknown time zone 'Europe/Berlin '"),
        ("x" * 300, f"unknown time zone '{'x' * 300}'"),
        (3, "must be str, got int"),
    ],
)
def test_bad_timezone(tz: object, reason: str) -> None:
    assert problems_of({"timezone": tz, "mon": ["09:00-10:00"]}) == {
        "calendars.emea.timezone": reason
    }


def test_timezone_required() -> None:
    assert problems_of({"mon": ["09:00-10:00"]}) == {"calendars.emea.timezone": "required"}


@pytest.mark.parametrize("days", [{}, {d: [] for d in DAYS}])
def test_no_business_hours(days: dict[str, list[str]]) -> None:
    found = problems_of({"timezone": "UTC", **days})
    assert found == {"calendars.emea": "no business hours in the week"}


def test_week_emptied_by_bad_entries_reports_only_the_entries() -> None:
    found = problems_of({"timezone": "UTC", "mon": ["nine to five"]})
    assert found == {"calendars.emea.mon[0]": "must be 'HH:MM-HH:MM'"}


@pytest.mark.parametrize("bad", [["2026-13-01"], ["2026-2-01"], ["20261225"], [20261225]])
def test_bad_holiday(bad: list[object]) -> None:
    found = problems_of({"timezone": "UTC", "mon": ["09:00-10:00"], "holidays": bad})
    assert found == {"calendars.emea.holidays[0]": "must be a date 'YYYY-MM-DD'"}


def test_holiday_datetime_literal_is_rejected() -> None:
    raw = tomllib.loads('timezone = "UTC"\nmon = ["09:00-10:00"]\nholidays = [2026-01-05T00:00:00]')
    assert problems_of(raw) == {"calendars.emea.holidays[0]": "must be a date 'YYYY-MM-DD'"}


def test_structural_problems() -> None:
    assert problems_of(["not", "a", "table"]) == {"calendars.emea": "must be a table"}
    found = problems_of({"timezone": "UTC", "mon": "09:00-17:00", "holidays": "2026-12-25"})
    assert found == {
        "calendars.emea.mon": "must be a list of 'HH:MM-HH:MM' strings",
        "calendars.emea.holidays": "must be a list of dates 'YYYY-MM-DD'",
    }


def test_every_problem_is_collected_and_appended() -> None:
    problems: list[tuple[str, str]] = [("earlier", "kept")]
    raw = {
        "timezone": "Europe/Berln",
        "monday": ["09:00-17:00"],
        "mon": ["09:00-17:00", "9-5", "16:00-18:00"],
        "tue": ["10:00-10:00"],
        "holidays": ["2026-12-25", "Christmas"],
    }
    assert parse_calendar("calendars.emea", raw, problems) is None
    assert problems[0] == ("earlier", "kept")
    assert dict(problems[1:]) == {
        "calendars.emea.monday": "unknown key",
        "calendars.emea.timezone": "unknown time zone 'Europe/Berln'",
        "calendars.emea.mon[1]": "must be 'HH:MM-HH:MM'",
        "calendars.emea.mon[2]": "overlaps mon[0]",
        "calendars.emea.tue[0]": "must have positive length",
        "calendars.emea.holidays[1]": "must be a date 'YYYY-MM-DD'",
    }


# -- direct construction ------------------------------------------------------

CLOSED: tuple[tuple[tuple[int, int], ...], ...] = ((),) * 7


@pytest.mark.parametrize(
    ("tz", "weekly", "message"),
    [
        ("Mars/Olympus", (((540, 600),),) + ((),) * 6, "tz: unknown time zone 'Mars/Olympus'"),
        ("UTC", CLOSED, "weekly: no business hours in the week"),
        ("UTC", CLOSED[:6], "weekly: must have 7 entries"),
        ("UTC", (((600, 500),), *CLOSED[1:]), "mon[0]: must have positive length"),
        ("UTC", (((600, 600),), *CLOSED[1:]), "mon[0]: must have positive length"),
        ("UTC", (((0, 1441),), *CLOSED[1:]), "mon[0]: must not be longer than 24 h"),
        ("UTC", (((1440, 1500),), *CLOSED[1:]), "mon[0]: must start within its day"),
        ("UTC", (((-60, 60),), *CLOSED[1:]), "mon[0]: must start within its day"),
        ("UTC", (((0, 60),), *CLOSED[1:6], ((1380, 1500),)), "mon[0]: overlaps sun[0]"),
    ],
)
def test_constructor_validates(
    tz: str, weekly: tuple[tuple[tuple[int, int], ...], ...], message: str
) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        Calendar(tz, weekly)


def test_constructor_accepts_a_span_from_sunday_into_monday() -> None:
    cal = Calendar("UTC", (*CLOSED[:6], ((1380, 1500),)))
    assert cal.holidays == frozenset()


def test_calendar_is_hashable_and_frozen() -> None:
    twin = make(**WEEKDAYS_9_17)
    assert hash(twin) == hash(make(**WEEKDAYS_9_17))
    assert {twin: 1}[make(**WEEKDAYS_9_17)] == 1
    with pytest.raises(AttributeError):
        twin.tz = "UTC"  # type: ignore[misc]


# -- business_seconds: plain days -----------------------------------------------

BERLIN = "Europe/Berlin"


def b(text: str) -> int:
    return local(text, BERLIN)


@pytest.mark.parametrize(
    ("start", "end", "hours"),
    [
        ("2026-01-05T10:00", "2026-01-05T11:00", 1),  # inside an interval
        ("2026-01-05T08:00", "2026-01-05T18:00", 8),  # before open to after close
        ("2026-01-05T08:00", "2026-01-05T09:00", 0),  # closed, ends at opening
        ("2026-01-05T17:00", "2026-01-05T21:00", 0),  # closed, starts at closing
        ("2026-01-05T16:30", "2026-01-06T09:30", 1),  # overnight gap
        ("2026-01-06T12:00", "2026-01-06T14:00", 1),  # lunch break on Tuesday
        ("2026-01-09T16:00", "2026-01-12T10:00", 1 + 4 + 1),  # weekend + Sunday night
        ("2026-01-11T23:00", "2026-01-12T01:00", 2),  # inside a span across midnight
        ("2026-01-12T01:00", "2026-01-12T09:30", 1.5),  # Monday tail of Sunday's span
        ("2026-01-10T00:00", "2026-01-11T22:00", 0),  # Saturday and Sunday day: closed
        ("2026-01-05T00:00", "2026-01-12T00:00", 4 * 8 + 7 + 2 + 2),  # two Sunday halves
        ("2026-01-05T02:00", "2026-01-12T02:00", EMEA_WEEK_S / H),  # one whole week
        ("2026-01-05T02:00", "2026-01-26T02:00", 3 * EMEA_WEEK_S / H),  # three weeks
    ],
)
def test_business_seconds_plain(start: str, end: str, hours: float) -> None:
    assert EMEA.business_seconds(b(start), b(end)) == hours * H


def test_empty_and_reversed_ranges() -> None:
    t = b("2026-01-05T10:00")
    assert EMEA.business_seconds(t, t) == 0
    assert EMEA.business_seconds(t, t - 1) == 0
    assert EMEA.business_seconds(t, t + 1) == 0.001


def test_milliseconds_count() -> None:
    t = b("2026-01-05T16:59:59.250")
    assert EMEA.business_seconds(t, t + 10_000) == 0.75


def test_local_dates_far_from_utc() -> None:
    # Monday 09:00 in Auckland (NZST, +12) is Sunday 21:00 UTC.
    cal = make(tz="Pacific/Auckland", mon=["09:00-17:00"])
    assert cal.business_seconds(utc("2026-05-31T20:00"), utc("2026-05-31T22:00")) == H
    assert cal.add_business_seconds(utc("2026-05-30T00:00"), 60) == utc("2026-05-31T21:01")
    # Half-hour offsets: Kolkata is +05:30 all year.
    cal = make(tz="Asia/Kolkata", mon=["09:30-18:00"])
    assert cal.business_seconds(utc("2026-01-05T00:00"), utc("2026-01-05T05:00")) == 1 * H


# -- holidays -------------------------------------------------------------------


def test_holiday_removes_its_own_intervals() -> None:
    # 2026-12-25 is a Friday.
    assert EMEA.business_seconds(b("2026-12-24T00:00"), b("2026-12-27T00:00")) == 8 * H


def test_overnight_span_starting_on_a_holiday_does_not_count() -> None:
    cal = make(sun=["22:00-02:00"], mon=["09:00-10:00"], holidays=("2026-01-11",))
    # Sunday the 11th is a holiday: neither its evening nor Monday's tail counts.
    assert cal.business_seconds(b("2026-01-11T00:00"), b("2026-01-12T09:00")) == 0
    assert cal.business_seconds(b("2026-01-18T00:00"), b("2026-01-19T09:00")) == 4 * H


def test_overnight_span_into_a_holiday_counts() -> None:
    cal = make(sun=["22:00-02:00"], mon=["09:00-10:00"], holidays=("2026-01-12",))
    # Monday the 12th is a holiday: Sunday's span runs into it in full, Monday's own does not.
    assert cal.business_seconds(b("2026-01-11T00:00"), b("2026-01-13T00:00")) == 4 * H
    assert cal.business_seconds(b("2026-01-12T00:00"), b("2026-01-12T02:00")) == 2 * H


def test_holidays_in_a_three_week_span() -> None:
    start, end = b("2026-12-14T02:00"), b("2027-01-04T02:00")
    # Friday the 25th loses 8 h; Saturday the 26th was closed anyway.
    assert EMEA.business_seconds(start, end) == 3 * EMEA_WEEK_S - 8 * H
    no_holidays = Calendar(EMEA.tz, EMEA.weekly)
    assert no_holidays.business_seconds(start, end) == 3 * EMEA_WEEK_S


# -- DST ------------------------------------------------------------------------

DAILY_1_4 = {d: ["01:00-04:00"] for d in DAYS}


@pytest.mark.parametrize(
    ("tz", "day", "hours"),
    [
        ("Europe/Berlin", "2026-03-29", 2),  # 02:00 -> 03:00
        ("Europe/Berlin", "2026-10-25", 4),  # 03:00 -> 02:00
        ("Europe/Berlin", "2026-03-28", 3),
        ("America/New_York", "2026-03-08", 2),  # 02:00 -> 03:00
        ("America/New_York", "2026-11-01", 4),  # 02:00 -> 01:00
        ("America/New_York", "2026-11-02", 3),
        ("Australia/Lord_Howe", "2026-10-04", 2.5),  # 02:00 -> 02:30
        ("Australia/Lord_Howe", "2026-04-05", 3.5),  # 02:00 -> 01:30
    ],
)
def test_interval_on_dst_days(tz: str, day: str, hours: float) -> None:
    cal = make(tz=tz, **DAILY_1_4)
    zone = ZoneInfo(tz)
    midnight = datetime.fromisoformat(day).replace(tzinfo=zone)
    start = int(midnight.timestamp() * 1000)
    end = int((midnight + timedelta(days=1)).timestamp() * 1000)  # next local midnight
    assert cal.business_seconds(start, end) == hours * H
    assert cal.add_business_seconds(start, hours * H) == local(f"{day}T04:00", tz)


def test_nonexistent_local_time_maps_to_end_of_gap() -> None:
    cal = make(sun=["02:30-05:00"], mon=["09:00-10:00"])
    # Berlin 2026-03-29: 02:30 does not exist; the gap ends at 03:00 CEST = 01:00 UTC.
    assert _day_spans(cal, date(2026, 3, 29)) == (
        (utc("2026-03-29T01:00"), utc("2026-03-29T03:00")),
    )
    assert cal.business_seconds(utc("2026-03-28T12:00"), utc("2026-03-29T01:00")) == 0
    assert cal.add_business_seconds(utc("2026-03-28T12:00"), 1) == utc("2026-03-29T01:00:01")
    ny = make(tz="America/New_York", sun=["02:30-05:00"])
    assert ny.business_seconds(utc("2026-03-08T00:00"), utc("2026-03-09T00:00")) == 2 * H
    assert ny.add_business_seconds(utc("2026-03-08T00:00"), 0.001) == utc("2026-03-08T07:00:00.001")


def test_end_in_gap_and_interval_wholly_in_gap() -> None:
    cal = make(sun=["00:00-02:30"], sat=["02:10-02:50"])
    # Sunday 00:00 CET to the end of the gap (03:00 CEST): 2 real hours.
    assert cal.business_seconds(utc("2026-03-28T12:00"), utc("2026-03-29T12:00")) == 2 * H
    # On an ordinary Saturday 02:10-02:50 is 40 minutes; no Saturday has a gap in Berlin.
    assert cal.business_seconds(utc("2026-03-21T00:00"), utc("2026-03-21T03:00")) == 40 * 60
    gap_only = make(sun=["02:10-02:50"], mon=["09:00-10:00"])
    assert _day_spans(gap_only, date(2026, 3, 29)) == ()
    assert gap_only.business_seconds(b("2026-03-28T00:00"), b("2026-03-30T00:00")) == 0
    assert gap_only.business_seconds(b("2026-03-21T00:00"), b("2026-03-23T00:00")) == 40 * 60


def test_ambiguous_local_time_uses_first_occurrence() -> None:
    cal = make(sun=["02:30-03:30"], mon=["09:00-10:00"])
    # Berlin 2026-10-25: 02:30 happens at 00:30 UTC (CEST) and 01:30 UTC (CET); the
    # first counts. 03:30 CET is 02:30 UTC, so the span is 2 real hours.
    assert _day_spans(cal, date(2026, 10, 25)) == (
        (utc("2026-10-25T00:30"), utc("2026-10-25T02:30")),
    )
    assert cal.add_business_seconds(utc("2026-10-25T00:00"), 1) == utc("2026-10-25T00:30:01")
    ny = make(tz="America/New_York", sun=["01:30-03:00"])
    # 01:30 EDT is 05:30 UTC; 03:00 EST is 08:00 UTC.
    assert ny.business_seconds(utc("2026-11-01T00:00"), utc("2026-11-02T00:00")) == 2.5 * H


@pytest.mark.parametrize(("night", "hours"), [("2026-03-28", 5), ("2026-10-24", 7)])
def test_overnight_span_across_a_dst_change(night: str, hours: int) -> None:
    cal = make(sat=["22:00-04:00"])
    start = b(f"{night}T12:00")
    assert cal.business_seconds(start, start + DAY_MS) == hours * H


def test_span_from_winter_to_summer_time() -> None:
    cal = make(**WEEKDAYS_9_17)
    # Friday 12:00 CET to Monday 12:00 CEST: 71 real hours, 8 business hours.
    start, end = utc("2026-03-27T11:00"), utc("2026-03-30T10:00")
    assert end - start == 71 * H * 1000
    assert cal.business_seconds(start, end) == 8 * H
    assert cal.add_business_seconds(utc("2026-03-27T15:00"), 2 * H) == utc("2026-03-30T08:00")
    # And back in autumn: Friday 16:00 CEST + 2h is Monday 10:00 CET.
    assert cal.add_business_seconds(utc("2026-10-23T14:00"), 2 * H) == utc("2026-10-26T09:00")


def test_changes_at_midnight() -> None:
    # Sao Paulo 2018-11-04 (Sun): 00:00 -03 jumped to 01:00 -02, so midnight did not exist.
    cal = make(tz="America/Sao_Paulo", sun=["00:00-02:00"], sat=["23:00-24:00"])
    assert cal.business_seconds(utc("2018-11-03T12:00"), utc("2018-11-04T12:00")) == 2 * H
    assert _day_spans(cal, date(2018, 11, 4)) == (
        (utc("2018-11-04T03:00"), utc("2018-11-04T04:00")),
    )
    # 2019-02-17 00:00 -02 fell back to 2019-02-16 23:00 -03: Saturday 23:00-24:00 happened
    # twice; it starts at the first 23:00 and ends at the (single) midnight: 2 real hours.
    assert _day_spans(cal, date(2019, 2, 16)) == (
        (utc("2019-02-17T01:00"), utc("2019-02-17T03:00")),
    )
    # Starting in the repeated hour, whose local date is still the 16th.
    start = utc("2019-02-17T02:30")
    assert cal.business_seconds(start, utc("2019-02-17T03:30")) == 3600
    assert cal.add_business_seconds(start, 3600) == utc("2019-02-17T03:30")


def test_fall_back_across_midnight() -> None:
    # Goose Bay 2005-10-30 (Sun) 00:01 ADT fell back to 2005-10-29 23:01 AST (03:01 UTC).
    # Sunday 00:00-01:00 starts at the first 00:00 (03:00 UTC) and ends at 01:00 AST.
    cal = make(tz="America/Goose_Bay", sun=["00:00-01:00"])
    assert _day_spans(cal, date(2005, 10, 30)) == (
        (utc("2005-10-30T03:00"), utc("2005-10-30T05:00")),
    )
    # 03:30 UTC reads as Saturday 23:30 (the second time), yet Sunday's span has begun.
    end = utc("2005-10-30T03:30")
    assert datetime.fromtimestamp(end / 1000, ZoneInfo(cal.tz)).date() == date(2005, 10, 29)
    assert cal.business_seconds(utc("2005-10-29T12:00"), end) == 1800
    assert cal.business_seconds(end, utc("2005-10-30T12:00")) == 1.5 * H
    assert cal.add_business_seconds(end, 60) == end + 60_000


def test_a_skipped_calendar_day() -> None:
    # Samoa skipped 2011-12-30 (-10 -> +14): that day's hours collapse to nothing.
    cal = make(tz="Pacific/Apia", **{d: ["09:00-17:00"] for d in DAYS})
    assert _day_spans(cal, date(2011, 12, 30)) == ()
    start, end = (
        local("2011-12-29T00:00", "Pacific/Apia"),
        local("2012-01-01T00:00", "Pacific/Apia"),
    )
    assert cal.business_seconds(start, end) == 16 * H
    assert cal.add_business_seconds(local("2011-12-29T16:00", "Pacific/Apia"), 2 * H) == local(
        "2011-12-31T10:00", "Pacific/Apia"
    )


def test_weeks_containing_dst_changes_have_full_office_hours() -> None:
    for tz, monday in [("America/New_York", "2026-03-02"), ("America/New_York", "2026-10-26")]:
        cal = make(tz=tz, **WEEKDAYS_9_17)
        for weeks in (1, 2, 3):
            start = local(f"{monday}T00:00", tz)
            end = local((date.fromisoformat(monday) + timedelta(weeks=weeks)).isoformat(), tz)
            assert cal.business_seconds(start, end) == weeks * 40 * H


# -- add_business_seconds -------------------------------------------------------


@pytest.mark.parametrize(
    ("start", "seconds", "deadline"),
    [
        ("2026-01-05T10:00", H, "2026-01-05T11:00"),
        ("2026-01-05T09:00", 8 * H, "2026-01-05T17:00"),  # ends exactly at close
        ("2026-01-05T16:00", 2 * H, "2026-01-06T10:00"),  # rolls to the next morning
        ("2026-01-06T12:00", 1 * H, "2026-01-06T14:00"),  # skips lunch
        ("2026-01-09T16:00", 2 * H, "2026-01-11T23:00"),  # into Sunday's late span
        ("2026-01-09T16:00", 6 * H, "2026-01-12T10:00"),  # through it to Monday
        ("2026-01-12T01:00", 1800, "2026-01-12T01:30"),  # inside Sunday's span, on Monday
        ("2026-01-10T12:00", 1, "2026-01-11T22:00:01"),  # from closed time
        ("2026-01-05T10:00", 0.0001, "2026-01-05T10:00:00.001"),  # rounds up to 1 ms
        ("2026-01-05T10:00", 1.0005, "2026-01-05T10:00:01.001"),
        ("2026-12-24T16:00", 2 * H, "2026-12-27T23:00"),  # over two holidays
        ("2026-01-05T02:00", 3 * EMEA_WEEK_S, "2026-01-26T02:00"),  # three weeks exactly
    ],
)
def test_add_business_seconds(start: str, seconds: float, deadline: str) -> None:
    assert EMEA.add_business_seconds(b(start), seconds) == b(deadline)


@pytest.mark.parametrize("seconds", [0, 0.0, -1, -1e9])
def test_non_positive_seconds_return_start(seconds: float) -> None:
    t = b("2026-01-10T12:00")  # closed: still start, not the next opening
    assert EMEA.add_business_seconds(t, seconds) == t


@pytest.mark.parametrize("seconds", [math.inf, -math.inf, math.nan])
def test_non_finite_seconds_are_rejected(seconds: float) -> None:
    with pytest.raises(ValueError, match="finite"):
        EMEA.add_business_seconds(0, seconds)


def test_a_year_of_business_time() -> None:
    cal = make(tz="UTC", **WEEKDAYS_9_17)
    start = utc("2026-01-05T09:00")
    deadline = cal.add_business_seconds(start, 52 * 40 * H)
    assert deadline == utc("2027-01-01T17:00")
    assert cal.business_seconds(start, deadline) == 52 * 40 * H


# -- cost -----------------------------------------------------------------------


def test_business_seconds_looks_up_each_date_once() -> None:
    cal = make(tz="America/New_York", **WEEKDAYS_9_17, holidays=("2026-07-03",))
    _day_spans.cache_clear()
    start = utc("2026-06-15T13:37")
    total = cal.business_seconds(start, start + 30 * DAY_MS)
    info = _day_spans.cache_info()
    assert info.misses <= 33 and info.hits == 0  # 31 dates and one either side
    assert cal.business_seconds(start, start + 30 * DAY_MS) == total
    assert _day_spans.cache_info().misses == info.misses  # all cached now


def test_add_business_seconds_is_linear_in_days() -> None:
    cal = make(tz="Europe/Berlin", **WEEKDAYS_9_17)
    _day_spans.cache_clear()
    cal.add_business_seconds(utc("2026-01-05T08:00"), 52 * 40 * H)
    assert _day_spans.cache_info().misses <= 366 + 3


# -- properties -----------------------------------------------------------------


def _transition_days(tz: str) -> list[int]:
    """Noon UTC of each 2026 day whose next day has another UTC offset."""
    zone = ZoneInfo(tz)
    noons = [datetime(2026, 1, 1, 12, tzinfo=UTC) + timedelta(days=n) for n in range(366)]
    offsets = [n.astimezone(zone).utcoffset() for n in noons]
    return [int(noons[i].timestamp() * 1000) for i in range(365) if offsets[i] != offsets[i + 1]]


# Intervals at DST-edge times (01:00-04:00, 02:30, 00:00-24:00) are deliberate here.
CALENDARS = [
    EMEA,
    make(
        tz="America/New_York",
        mon=["01:00-04:00", "08:00-12:00", "20:00-00:30"],
        sat=["02:30-03:30"],
        sun=["01:00-04:00"],
        holidays=("2026-03-09", "2026-11-01"),
    ),
    make(tz="Pacific/Auckland", **{d: ["08:30-17:30"] for d in DAYS[:6]}, sun=["02:00-03:30"]),
    make(tz="Australia/Lord_Howe", sun=["01:45-02:15"], sat=["00:00-24:00"]),
    make(tz="Asia/Kolkata", **{d: ["09:30-18:00"] for d in DAYS[:5]}, holidays=("2026-01-26",)),
]
# Every start and end on a 15-minute grid, none at an ambiguous or missing local time,
# so a brute-force wall-clock reference agrees with the UTC model.
REFERENCE_CALENDARS = [
    EMEA,
    make(sat=["22:00-01:00"], sun=["01:00-04:00", "23:45-00:15"], holidays=("2026-10-24",)),
    make(tz="America/New_York", sat=["20:00-00:30"], sun=["00:30-04:00"], mon=["08:00-12:00"]),
    make(tz="Pacific/Auckland", **{d: ["08:30-17:30"] for d in DAYS[:6]}, sun=["01:00-04:00"]),
    make(tz="Australia/Lord_Howe", sat=["22:00-03:00"], sun=["03:00-03:45"]),
    make(tz="Asia/Kolkata", **{d: ["09:30-18:00"] for d in DAYS[:5]}),
]
NEAR_CHANGES = sorted({t for c in CALENDARS for t in _transition_days(c.tz)})
assert len(NEAR_CHANGES) >= 6  # two per zone with DST, some on the same day

instants = st.one_of(
    st.integers(utc("2025-01-01T00:00"), utc("2027-12-31T00:00")),
    st.builds(
        lambda t, d: t + d, st.sampled_from(NEAR_CHANGES), st.integers(-5 * DAY_MS, 2 * DAY_MS)
    ),
)
durations = st.one_of(
    st.floats(min_value=0.0, max_value=21 * 86_400.0, allow_nan=False),
    st.integers(0, 21 * 86_400).map(float),
    st.sampled_from([0.0005, 0.001, 0.0015, 1e-9]),
)


@BOUNDED
@given(st.sampled_from(CALENDARS), instants, durations)
def test_add_is_the_minimal_inverse(cal: Calendar, start: int, seconds: float) -> None:
    deadline = cal.add_business_seconds(start, seconds)
    assert deadline >= start
    got = cal.business_seconds(start, deadline)
    assert seconds <= got <= seconds + 0.001
    if seconds > 0:
        assert cal.business_seconds(start, deadline - 1) < seconds
    else:
        assert deadline == start


@BOUNDED
@given(
    st.sampled_from(CALENDARS), instants, st.integers(0, 10 * DAY_MS), st.integers(0, 10 * DAY_MS)
)
def test_business_seconds_is_additive(cal: Calendar, a: int, ab: int, bc: int) -> None:
    whole = cal.business_seconds(a, a + ab + bc)
    parts = cal.business_seconds(a, a + ab), cal.business_seconds(a + ab, a + ab + bc)
    assert round(whole * 1000) == round(parts[0] * 1000) + round(parts[1] * 1000)
    assert 0 <= parts[0] <= ab / 1000


def reference_seconds(cal: Calendar, start_ms: int, end_ms: int, step_min: int = 15) -> int:
    """Brute force: walk UTC in 15-minute steps and ask the local wall clock."""
    zone = ZoneInfo(cal.tz)
    open_min = 0
    for t in range(start_ms, end_ms, step_min * 60_000):
        wall = datetime.fromtimestamp(t / 1000, zone)
        minute = wall.hour * 60 + wall.minute
        for back in (0, 1):  # today's intervals, or yesterday's running past midnight
            day = wall.date() - timedelta(days=back)
            m = minute + back * 1440
            if day not in cal.holidays and any(s <= m < e for s, e in cal.weekly[day.weekday()]):
                open_min += step_min
                break
    return open_min * 60


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(REFERENCE_CALENDARS), instants, st.integers(0, 4 * 96))
def test_matches_a_wall_clock_reference(cal: Calendar, start: int, quarters: int) -> None:
    start -= start % (15 * 60_000)
    end = start + quarters * 15 * 60_000
    assert cal.business_seconds(start, end) == reference_seconds(cal, start, end)

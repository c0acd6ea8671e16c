"""Business-time arithmetic for response-time SLAs.

Model. A `Calendar` has an IANA time zone, weekly opening hours and holidays. Each
weekday (Mon..Sun) has local intervals (start_minute, end_minute); an end past 1440
runs into the next calendar day (22:00-02:00 is (1320, 1560)). On every local date
the intervals of its weekday are turned into UTC instants *for that date*, so DST is
exact: on Berlin's spring-forward day 01:00-04:00 is 2 real hours, on fall-back 4.

Documented choices:
- A local time that does not exist (in a DST gap) maps to the instant the gap ends;
  an ambiguous one (repeated by a fall-back) maps to its first occurrence (fold=0).
  The mapping never goes backwards, so intervals that do not overlap in local time
  do not overlap in UTC; an interval wholly inside a gap is empty that day.
- A holiday removes the intervals that START on that local date, including the part
  of an overnight interval that runs into the next day. An overnight interval that
  started the evening before a holiday (a working day) still counts in full.
- Business time is counted in whole milliseconds: business_seconds returns ms / 1000,
  and add_business_seconds is exactly its minimal inverse on that grid.

Cost: O(calendar days) in the span, or until the deadline; each date's UTC intervals
are cached (module-level lru_cache keyed by (calendar, date)).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_DAY_MIN = 1440
_WEEK_MIN = 7 * _DAY_MIN
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_SPAN = re.compile(r"(\d\d):(\d\d)-(\d\d):(\d\d)")
_DATE = re.compile(r"\d{4}-\d\d-\d\d")


@dataclass(frozen=True, slots=True)
class Calendar:
    """Business hours in one time zone. Hashable: it keys the per-date cache."""

    tz: str
    weekly: tuple[tuple[tuple[int, int], ...], ...]
    holidays: frozenset[date] = frozenset()

    def __post_init__(self) -> None:
        # Checked here as well as in parse_calendar: an empty week would make
        # add_business_seconds loop forever, and overlaps would count twice.
        found: list[tuple[str, str]] = []
        if (why := _zone_problem(self.tz)) is not None:
            found.append(("tz", why))
        if len(self.weekly) != 7:
            found.append(("weekly", "must have 7 entries, Mon..Sun"))
        else:
            entries = [
                (d, i, s, e) for d, day in enumerate(self.weekly) for i, (s, e) in enumerate(day)
            ]
            for d, i, why in _span_problems(entries):
                found.append((f"{DAYS[d]}[{i}]" if d >= 0 else "weekly", why))
        if found:
            raise ValueError("; ".join(f"{p}: {r}" for p, r in found))

    def business_seconds(self, start_ms: int, end_ms: int) -> float:
        """Business seconds in [start_ms, end_ms) (UTC epoch ms); 0 when end <= start."""
        if end_ms <= start_ms:
            return 0.0
        total, zone = 0, ZoneInfo(self.tz)
        # Margins: the day before's overnight intervals reach into the first date, and a
        # fall-back across midnight (e.g. 00:01 -> 23:01) can put the next date's first
        # instants before end_ms while end_ms still reads as the earlier date.
        first = _local_date(zone, start_ms) - timedelta(days=1)
        last = _local_date(zone, end_ms) + timedelta(days=1)
        for n in range((last - first).days + 1):
            day = first + timedelta(days=n)
            for a, b in _day_spans(self, day):
                lo, hi = max(a, start_ms), min(b, end_ms)
                if hi > lo:
                    total += hi - lo
        return total / 1000

    def add_business_seconds(self, start_ms: int, seconds: float) -> int:
        """The earliest UTC epoch ms t >= start_ms with business_seconds(start_ms, t)
        >= seconds: the deadline. seconds <= 0 returns start_ms."""
        if not math.isfinite(seconds):
            raise ValueError(f"seconds must be finite, got {seconds!r}")
        if seconds <= 0:
            return start_ms
        # The fewest whole ms whose float seconds reach `seconds`, so that the answer
        # agrees exactly with business_seconds' own comparison.
        need = math.ceil(seconds * 1000)
        while need / 1000 < seconds:
            need += 1
        while (need - 1) / 1000 >= seconds:
            need -= 1
        # Day by day: a week-sized skip would need a per-week total that DST and
        # holidays change; a year of days is a few hundred cached look-ups.
        day = _local_date(ZoneInfo(self.tz), start_ms) - timedelta(days=1)
        while True:
            for a, b in _day_spans(self, day):
                a = max(a, start_ms)
                if b > a:
                    if b - a >= need:
                        return a + need
                    need -= b - a
            day += timedelta(days=1)


def _local_date(zone: ZoneInfo, ms: int) -> date:
    return (_EPOCH + timedelta(milliseconds=ms)).astimezone(zone).date()


def _to_utc_ms(zone: ZoneInfo, day: date, minute: int) -> int:
    """UTC epoch ms of local wall time `minute` minutes after midnight starting `day`."""
    wall = datetime.combine(day, time()) + timedelta(minutes=minute)
    utc = wall.replace(tzinfo=zone).astimezone(UTC)  # fold=0: first occurrence
    if utc.astimezone(zone).replace(tzinfo=None) == wall:
        return (utc - _EPOCH) // timedelta(milliseconds=1)
    # In a gap: fold=0 used the offset before the change (an instant after it),
    # fold=1 the offset after (an instant before it). Bisect for the change itself;
    # tzdata transitions fall on whole seconds.
    lo = int(wall.replace(tzinfo=zone, fold=1).timestamp())
    hi = int(utc.timestamp())
    after = utc.astimezone(zone).utcoffset()
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if datetime.fromtimestamp(mid, zone).utcoffset() == after:
            hi = mid
        else:
            lo = mid
    return hi * 1000


@lru_cache(maxsize=8192)
def _day_spans(cal: Calendar, day: date) -> tuple[tuple[int, int], ...]:
    """UTC ms intervals [a, b) of the business intervals that start on local `day`."""
    if day in cal.holidays:
        return ()
    zone = ZoneInfo(cal.tz)
    spans = []
    for s, e in sorted(cal.weekly[day.weekday()]):
        a, b = _to_utc_ms(zone, day, s), _to_utc_ms(zone, day, e)
        if b > a:  # empty when the whole interval falls in a DST gap
            spans.append((a, b))
    return tuple(spans)


def _zone_problem(name: str) -> str | None:
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        return f"unknown time zone {name!r}"
    return None


def _span_problems(entries: list[tuple[int, int, int, int]]) -> list[tuple[int, int, str]]:
    """Problems of (day, index, start, end) intervals as (day, index, reason); day -1
    is the whole week. Overlaps are checked on the week as a circle (Sun into Mon)."""
    found: list[tuple[int, int, str]] = []
    placed: list[tuple[int, int, int, int]] = []  # (week_start, week_end, day, index)
    for d, i, s, e in entries:
        if not 0 <= s < _DAY_MIN:
            found.append((d, i, "must start within its day (00:00 to 23:59)"))
        elif e <= s:
            found.append((d, i, "must have positive length"))
        elif e - s > _DAY_MIN:
            found.append((d, i, "must not be longer than 24 h"))
        else:
            a = d * _DAY_MIN + s
            placed.append((a, a + e - s, d, i))
            if a + e - s > _WEEK_MIN:  # wraps from Sunday into Monday
                placed.append((a - _WEEK_MIN, a + e - s - _WEEK_MIN, d, i))
    if not entries:
        found.append((-1, -1, "no business hours in the week"))
    placed.sort()
    reach: tuple[int, int, int] | None = None  # (end, day, index) reaching furthest
    overlaps: dict[tuple[int, int], str] = {}  # one per interval: wrapped copies recur
    for a, b, d, i in placed:
        if reach is not None and a < reach[0]:
            overlaps.setdefault((d, i), f"overlaps {DAYS[reach[1]]}[{reach[2]}]")
        if reach is None or b > reach[0]:
            reach = (b, d, i)
    return found + [(d, i, why) for (d, i), why in overlaps.items()]


def _parse_span(text: object) -> tuple[int, int] | None:
    m = _SPAN.fullmatch(text) if isinstance(text, str) else None
    if m is None:
        return None
    h1, m1, h2, m2 = (int(g) for g in m.groups())
    if h1 > 23 or m1 > 59 or m2 > 59 or h2 > 24 or (h2 == 24 and m2 != 0):
        return None
    s, e = h1 * 60 + m1, h2 * 60 + m2
    return (s, e + _DAY_MIN) if e < s else (s, e)  # an earlier end crosses midnight


def _parse_date(value: object) -> date | None:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value  # a TOML date literal
    if not (isinstance(value, str) and _DATE.fullmatch(value)):
        return None  # fromisoformat alone would also take "20261225" or "2026-W52-5"
    try:
        return date.fromisoformat(value)
    except ValueError:  # e.g. month 13
        return None


def parse_calendar(path: str, raw: object, problems: list[tuple[str, str]]) -> Calendar | None:
    """A Calendar from a TOML table at `path`, or None after appending every problem
    found to `problems` as (f"{path}.{key}", reason)."""
    if not isinstance(raw, dict):
        problems.append((path, "must be a table"))
        return None
    n_before = len(problems)
    for key in raw:
        if key not in (*DAYS, "timezone", "holidays"):
            problems.append((f"{path}.{key}", "unknown key"))
    tz = raw.get("timezone")
    if not isinstance(tz, str):
        why = "required" if tz is None else f"must be str, got {type(tz).__name__}"
        problems.append((f"{path}.timezone", why))
    elif (why_tz := _zone_problem(tz)) is not None:
        problems.append((f"{path}.timezone", why_tz))
    weekly: list[tuple[tuple[int, int], ...]] = []
    entries: list[tuple[int, int, int, int]] = []
    bad_days = False
    for d, day in enumerate(DAYS):
        items = raw.get(day, [])  # an omitted day is closed
        if not isinstance(items, list):
            problems.append((f"{path}.{day}", "must be a list of 'HH:MM-HH:MM' strings"))
            items, bad_days = [], True
        spans = []
        for i, item in enumerate(items):
            span = _parse_span(item)
            if span is None:
                problems.append((f"{path}.{day}[{i}]", "must be 'HH:MM-HH:MM'"))
                bad_days = True
            else:
                spans.append(span)
                entries.append((d, i, *span))
        weekly.append(tuple(sorted(spans)))
    for d, i, why in _span_problems(entries):
        if d >= 0:
            problems.append((f"{path}.{DAYS[d]}[{i}]", why))
        elif not bad_days:  # a week emptied by bad entries is reported through them
            problems.append((path, why))
    holidays: set[date] = set()
    raw_hol = raw.get("holidays", [])
    if not isinstance(raw_hol, list):
        problems.append((f"{path}.holidays", "must be a list of dates 'YYYY-MM-DD'"))
        raw_hol = []
    for i, value in enumerate(raw_hol):
        if (day_off := _parse_date(value)) is None:
            problems.append((f"{path}.holidays[{i}]", "must be a date 'YYYY-MM-DD'"))
        else:
            holidays.add(day_off)
    if len(problems) > n_before or not isinstance(tz, str):
        return None
    return Calendar(tz=tz, weekly=tuple(weekly), holidays=frozenset(holidays))

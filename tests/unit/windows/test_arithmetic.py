"""pipeline.windows.arithmetic: tumbling-window range arithmetic, finality and
RFC 3339 rendering."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.windows.arithmetic import is_final, rfc3339, window_bounds, window_start

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SEC, MIN, HOUR, DAY = 1000, 60_000, 3_600_000, 86_400_000
# Sizes the settings accept: positive divisors of a day (in ms)
DAY_DIVISORS_MS = [s * SEC for s in (1, 5, 10, 15, 30, 60, 90, 120, 300, 900, 3600, 86400)]
# The alert/window schemas' timestamp pattern
UTC_TS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")

ts_ms_st = st.integers(min_value=0, max_value=4_102_444_800_000)
size_ms_st = st.sampled_from(DAY_DIVISORS_MS)
BOUNDED = settings(max_examples=200, deadline=None)


def ms(*args: int) -> int:
    """Epoch milliseconds of a UTC datetime (an oracle independent of the module)."""
    return (datetime(*args, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)


@pytest.mark.parametrize(
    ("ts_ms", "size_ms", "expected_start"),
    [
        (0, MIN, 0),
        (1, MIN, 0),
        (MIN - 1, MIN, 0),
        (MIN, MIN, MIN),
        (MIN + 1, MIN, MIN),
        (ms(2026, 11, 21, 10, 3, 27) + 500, MIN, ms(2026, 11, 21, 10, 3)),
        (ms(2026, 11, 21, 10, 3, 27) + 500, 5 * MIN, ms(2026, 11, 21, 10, 0)),
        (ms(2026, 11, 21, 10, 4, 59) + 999, 5 * MIN, ms(2026, 11, 21, 10, 0)),
        (ms(2026, 11, 21, 10, 5), 5 * MIN, ms(2026, 11, 21, 10, 5)),
        (ms(2026, 11, 21, 23, 59, 59) + 999, DAY, ms(2026, 11, 21)),
        (ms(2024, 2, 29, 12, 0, 45), 90 * SEC, ms(2024, 2, 29, 12, 0)),
        (ms(2024, 2, 29, 12, 1, 31), 90 * SEC, ms(2024, 2, 29, 12, 1, 30)),
        (ms(2026, 1, 1, 0, 59, 59), HOUR, ms(2026, 1, 1, 0)),
        (-1, MIN, -MIN),  # before the epoch still floors, never rounds toward zero
        (-MIN, MIN, -MIN),
    ],
)
def test_window_start_and_bounds_table(ts_ms: int, size_ms: int, expected_start: int) -> None:
    assert window_start(ts_ms, size_ms) == expected_start
    assert window_bounds(ts_ms, size_ms) == (expected_start, expected_start + size_ms)


@pytest.mark.parametrize(
    ("end_ms", "watermark_ms", "grace_ms", "expected"),
    [
        (MIN, None, 0, False),  # nothing seen yet: nothing is final
        (MIN, None, 5 * SEC, False),
        (MIN, MIN - 1, 0, False),
        (MIN, MIN, 0, True),  # the end is exclusive: watermark at the end closes it
        (MIN, MIN + 1, 0, True),
        (MIN, MIN + 4_999, 5 * SEC, False),  # still within grace
        (MIN, MIN + 5_000, 5 * SEC, True),
        (MIN, 10 * MIN, 5 * SEC, True),
        (5 * MIN, 4 * MIN, 0, False),
    ],
)
def test_is_final_table(
    end_ms: int, watermark_ms: int | None, grace_ms: int, expected: bool
) -> None:
    assert is_final(end_ms, watermark_ms, grace_ms) is expected


@pytest.mark.parametrize(
    ("ts_ms", "expected"),
    [
        (0, "1970-01-01T00:00:00.000Z"),
        (1, "1970-01-01T00:00:00.001Z"),
        (999, "1970-01-01T00:00:00.999Z"),
        (1000, "1970-01-01T00:00:01.000Z"),
        (ms(2026, 11, 21, 10), "2026-11-21T10:00:00.000Z"),
        (ms(2026, 11, 21, 10, 5, 7) + 42, "2026-11-21T10:05:07.042Z"),
        (ms(2024, 2, 29, 23, 59, 59) + 999, "2024-02-29T23:59:59.999Z"),
        (ms(2000, 1, 1), "2000-01-01T00:00:00.000Z"),
        (4_102_444_800_000 - 1, "2099-12-31T23:59:59.999Z"),
        (-1, "1969-12-31T23:59:59.999Z"),
    ],
)
def test_rfc3339_table(ts_ms: int, expected: str) -> None:
    assert rfc3339(ts_ms) == expected


@BOUNDED
@given(ts_ms_st, size_ms_st)
def test_window_contains_ts_and_is_aligned(ts_ms: int, size_ms: int) -> None:
    start, end = window_bounds(ts_ms, size_ms)
    assert start == window_start(ts_ms, size_ms)
    assert start <= ts_ms < end
    assert end - start == size_ms
    assert start % size_ms == 0


@BOUNDED
@given(ts_ms_st, size_ms_st)
def test_consecutive_windows_tile_without_gaps(ts_ms: int, size_ms: int) -> None:
    start, end = window_bounds(ts_ms, size_ms)
    # the instant at the end opens the next window; the one before the start closes the previous
    assert window_bounds(end, size_ms) == (end, end + size_ms)
    assert window_bounds(start - 1, size_ms) == (start - size_ms, start)
    # every instant inside the window maps to the same window
    for inside in (start, start + size_ms // 2, end - 1):
        assert window_bounds(inside, size_ms) == (start, end)


@BOUNDED
@given(ts_ms_st, size_ms_st, size_ms_st)
def test_smaller_window_nests_in_a_larger_multiple(ts_ms: int, a: int, b: int) -> None:
    small, large = sorted((a, b))
    if large % small:
        return
    s_start, s_end = window_bounds(ts_ms, small)
    l_start, l_end = window_bounds(ts_ms, large)
    assert l_start <= s_start < s_end <= l_end


@BOUNDED
@given(ts_ms_st, size_ms_st)
def test_day_windows_align_to_utc_calendar(ts_ms: int, size_ms: int) -> None:
    """Sizes that divide a day start at the same wall-clock offsets every UTC day."""
    start = window_start(ts_ms, size_ms)
    dt = EPOCH + timedelta(milliseconds=start)
    midnight = dt.replace(hour=0, minute=0, second=0, microsecond=0)
    assert ((dt - midnight) // timedelta(milliseconds=1)) % size_ms == 0


@BOUNDED
@given(
    st.integers(min_value=0, max_value=10 * DAY),
    st.integers(min_value=0, max_value=10 * DAY),
    st.integers(min_value=0, max_value=10 * DAY),
    st.integers(min_value=0, max_value=MIN),
)
def test_is_final_is_monotone_in_watermark(end_ms: int, wm1: int, wm2: int, grace_ms: int) -> None:
    lo, hi = sorted((wm1, wm2))
    if is_final(end_ms, lo, grace_ms):
        assert is_final(end_ms, hi, grace_ms)
    # and a larger grace never makes a window final sooner
    if is_final(end_ms, lo, grace_ms + 1):
        assert is_final(end_ms, lo, grace_ms)


@BOUNDED
@given(ts_ms_st)
def test_rfc3339_round_trips_through_the_stdlib_parser(ts_ms: int) -> None:
    text = rfc3339(ts_ms)
    assert UTC_TS.match(text)
    assert len(text) == len("2026-11-21T10:00:00.000Z")
    parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    assert parsed == EPOCH + timedelta(milliseconds=ts_ms)

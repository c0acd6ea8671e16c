"""pipeline.windows.watermark: lateness, monotonicity and idle advance relative to
the last event."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.windows.watermark import Watermark, WatermarkState

SEC = 1000
LATENESS = 10 * SEC
IDLE = 10 * SEC
T0 = 1_795_000_000_000  # an event time in 2026
WALL0 = 1_800_000_000_000  # wall clock, unrelated to event time


def wm(lateness_ms: int = LATENESS, idle_after_ms: int = IDLE) -> Watermark:
    return Watermark(lateness_ms, idle_after_ms)


def test_no_events_no_watermark() -> None:
    w = wm()
    assert w.current(WALL0) is None
    assert w.advance(WALL0 + 3_600 * SEC) is None


def test_watermark_is_max_event_time_minus_lateness() -> None:
    w = wm()
    w.observe(T0, WALL0)
    assert w.current(WALL0) == T0 - LATENESS
    w.observe(T0 + 7 * SEC, WALL0 + 1)
    assert w.current(WALL0 + 1) == T0 + 7 * SEC - LATENESS


def test_zero_lateness_watermark_equals_max_event_time() -> None:
    w = wm(lateness_ms=0)
    w.observe(T0, WALL0)
    assert w.current(WALL0) == T0


def test_older_events_never_move_the_watermark_back() -> None:
    w = wm()
    w.observe(T0 + 30 * SEC, WALL0)
    w.observe(T0, WALL0 + 1)
    w.observe(T0 - 3_600 * SEC, WALL0 + 2)
    assert w.current(WALL0 + 2) == T0 + 30 * SEC - LATENESS
    assert w.state.max_event_ms == T0 + 30 * SEC


def test_no_idle_advance_before_idle_after() -> None:
    w = wm()
    w.observe(T0, WALL0)
    assert w.current(WALL0 + IDLE - 1) == T0 - LATENESS
    assert w.advance(WALL0 + IDLE - 1) == T0 - LATENESS


def test_idle_advance_by_the_wall_time_elapsed_since_the_last_event() -> None:
    w = wm()
    w.observe(T0, WALL0)
    assert w.current(WALL0 + IDLE) == T0 - LATENESS + IDLE
    assert w.current(WALL0 + 60 * SEC) == T0 - LATENESS + 60 * SEC


def test_replay_of_year_old_data_advances_by_idle_time_not_to_now() -> None:
    year_ago = T0 - 365 * 86_400 * SEC
    w = wm()
    w.observe(year_ago, WALL0)
    got = w.advance(WALL0 + 60 * SEC)
    assert got == year_ago - LATENESS + 60 * SEC
    assert got < WALL0  # nowhere near the wall clock


def test_idle_is_measured_from_the_last_event_not_the_first() -> None:
    w = wm()
    w.observe(T0, WALL0)
    w.observe(T0 + SEC, WALL0 + 50 * SEC)  # a quiet 50 s, then one event
    # 5 s after the last event: not idle, so only lateness applies (plus the floor
    # left by the idle stretch before that event, which is lower here)
    assert w.current(WALL0 + 55 * SEC) == T0 - LATENESS + 50 * SEC
    # 60 s after the last event: idle advance counts from it, not from the first event
    assert w.current(WALL0 + 110 * SEC) == T0 + SEC - LATENESS + 60 * SEC


def test_never_backwards_after_idle_advance_then_older_events() -> None:
    w = wm()
    w.observe(T0, WALL0)
    advanced = w.advance(WALL0 + 120 * SEC)
    assert advanced == T0 - LATENESS + 120 * SEC
    # activity resumes with events older than the advanced watermark
    w.observe(T0 + 5 * SEC, WALL0 + 120 * SEC)
    assert w.current(WALL0 + 120 * SEC) == advanced
    assert w.current(WALL0 + 121 * SEC) == advanced
    # once events pass it again, it follows them
    w.observe(T0 + 200 * SEC, WALL0 + 125 * SEC)
    assert w.current(WALL0 + 125 * SEC) == T0 + 200 * SEC - LATENESS


def test_idle_advance_seen_only_through_current_is_kept_when_an_event_arrives() -> None:
    """observe() records the watermark just before the new events as the floor."""
    w = wm()
    w.observe(T0, WALL0)
    before = w.current(WALL0 + 30 * SEC)
    w.observe(T0 + SEC, WALL0 + 30 * SEC)
    assert w.current(WALL0 + 30 * SEC) == before == T0 - LATENESS + 30 * SEC


def test_live_resume_after_quiet_spell_does_not_overshoot() -> None:
    """A live source quiet for 30 s resumes with an event 30 s newer: the watermark must
    not count the quiet spell twice (once in the event time, once as idle time)."""
    w = wm()
    w.observe(T0, WALL0)
    w.observe(T0 + 30 * SEC, WALL0 + 30 * SEC)
    got = w.current(WALL0 + 30 * SEC)
    assert got == T0 + 30 * SEC - LATENESS
    # an event within the allowed lateness of the newest one is not behind the watermark
    assert got <= T0 + 25 * SEC


def test_wall_clock_going_backwards_neither_advances_nor_rewinds() -> None:
    w = wm()
    w.observe(T0, WALL0)
    high = w.advance(WALL0 + 30 * SEC)
    assert w.current(WALL0 - 30 * SEC) == high
    w.observe(T0, WALL0 - 30 * SEC)
    assert w.current(WALL0 - 29 * SEC) == high


def test_state_is_shared_and_restorable() -> None:
    state = WatermarkState()
    Watermark(LATENESS, IDLE, state).observe(T0, WALL0)
    again = Watermark(LATENESS, IDLE, state)
    assert again.current(WALL0) == T0 - LATENESS
    # a restored state with only a floor reports the floor
    restored = Watermark(LATENESS, IDLE, WatermarkState(floor_ms=T0))
    assert restored.current(WALL0) == T0
    restored.observe(T0 - 60 * SEC, WALL0)
    assert restored.current(WALL0) == T0


# -- properties ---------------------------------------------------------------

op_st = st.one_of(
    st.tuples(
        st.just("observe"),
        st.integers(min_value=-120 * SEC, max_value=120 * SEC),  # event ts offset from T0
        st.integers(min_value=0, max_value=40 * SEC),  # wall time step
    ),
    st.tuples(st.just("advance"), st.just(0), st.integers(min_value=0, max_value=40 * SEC)),
    st.tuples(st.just("current"), st.just(0), st.integers(min_value=0, max_value=40 * SEC)),
)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(op_st, min_size=1, max_size=40),
    st.integers(min_value=0, max_value=20 * SEC),
    st.integers(min_value=1, max_value=20 * SEC),
)
def test_watermark_never_decreases_and_stays_within_bounds(
    ops: list[tuple[str, int, int]], lateness_ms: int, idle_after_ms: int
) -> None:
    """For any observations with a non-decreasing wall clock:

    * the reported watermark never decreases;
    * it is at least max_ts - lateness (+ idle time since the last event, when idle);
    * it never exceeds the highest value the rule allowed at any instant so far: just
      before each event, previous max - lateness + idle time; or now, max - lateness +
      idle time since the last event.
    """

    def idle(gap: int) -> int:
        return gap if gap >= idle_after_ms else 0

    w = Watermark(lateness_ms, idle_after_ms)
    wall = WALL0
    max_ts: int | None = None
    last_wall: int | None = None
    allowed: int | None = None  # highest value permitted at any earlier instant
    previous: int | None = None
    for op, ts_off, step in ops:
        wall += step
        if op == "observe":
            if max_ts is not None and last_wall is not None:
                before = max_ts - lateness_ms + idle(wall - last_wall)
                allowed = before if allowed is None else max(allowed, before)
            ts = T0 + ts_off
            w.observe(ts, wall)
            max_ts = ts if max_ts is None else max(max_ts, ts)
            last_wall = wall
            got = w.current(wall)
        elif op == "advance":
            got = w.advance(wall)
        else:
            got = w.current(wall)
        if max_ts is None:
            assert got is None
            continue
        assert got is not None and last_wall is not None
        now_value = max_ts - lateness_ms + idle(wall - last_wall)
        bound = now_value if allowed is None else max(allowed, now_value)
        assert got >= now_value
        assert got <= bound
        if previous is not None:
            assert got >= previous
        previous = got


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.integers(min_value=-600 * SEC, max_value=600 * SEC), min_size=1, max_size=30),
    st.integers(min_value=0, max_value=60 * SEC),
)
def test_without_idle_the_watermark_is_exactly_max_minus_lateness(
    offsets: list[int], lateness_ms: int
) -> None:
    w = Watermark(lateness_ms, IDLE)
    for i, off in enumerate(offsets):
        w.observe(T0 + off, WALL0 + i)  # 1 ms apart: never idle
        assert w.current(WALL0 + i) == T0 + max(offsets[: i + 1]) - lateness_ms

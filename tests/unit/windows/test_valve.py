"""The watermark valve over input partitions: explicit ACTIVE/IDLE status, the minimum
over ACTIVE ones, the all-idle rule, and agreement with a reference recomputed from
the whole report history."""

from __future__ import annotations

from dataclasses import dataclass

from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.windows.valve import TRUSTED_MS, InputStatus, Sources
from pipeline.windows.watermark import BLOCKED, Watermark, WatermarkState

SEC = 1000
DAY = 86_400 * SEC
LATE = 10 * SEC
IDLE = 5 * SEC
STALE = 40 * SEC
T0 = 1_511_740_800_000  # 2017-11-27: a replay of old data
WALL = 1_800_000_000_000  # the wall clock, unrelated to event time


def wm(s: Sources, wall: int) -> int | None:
    return s.watermark(wall, LATE, IDLE)


def status(s: Sources, src: str, wall: int) -> InputStatus:
    return s.view(s.reports[src], wall, LATE, IDLE).status


def test_idle_after_idle_after_without_backlog_and_active_again_with_its_next_event() -> None:
    s = Sources(STALE)
    s.update({"a:0": [T0, 0]}, WALL)
    assert status(s, "a:0", WALL + IDLE - 1) is InputStatus.ACTIVE
    s.update({"a:0": [T0, 0]}, WALL + IDLE)  # keepalive, same position
    assert status(s, "a:0", WALL + IDLE) is InputStatus.IDLE
    s.update({"a:0": [T0 + SEC, 0]}, WALL + IDLE + 1)  # its next event
    assert status(s, "a:0", WALL + IDLE + 1) is InputStatus.ACTIVE


def test_a_backlog_an_unknown_lag_or_a_silent_router_keep_an_input_active() -> None:
    s = Sources(STALE)
    s.update({"a:0": [T0, 3], "a:1": [T0, None], "a:2": [T0, 0]}, WALL)
    s.update({"a:0": [T0, 3], "a:1": [T0, None]}, WALL + TRUSTED_MS + 1)
    later = WALL + TRUSTED_MS + 1
    assert status(s, "a:0", later) is InputStatus.ACTIVE
    assert status(s, "a:1", later) is InputStatus.ACTIVE
    assert status(s, "a:2", later) is InputStatus.ACTIVE  # quiet, but its report is old
    assert s.view(s.reports["a:2"], later, LATE, IDLE).reason.startswith("holding: no report")


def test_idle_inputs_do_not_hold_the_minimum_over_active_ones() -> None:
    """The customer-care replay: the DM partition's last event is a week before the
    end of the file; once it is IDLE only the busy partitions count."""
    s = Sources(STALE)
    s.update({"dms:0": [T0, 0], "mentions:0": [T0 + 7 * DAY, 0]}, WALL)
    s.update({"dms:0": [T0, 0], "mentions:0": [T0 + 7 * DAY + SEC, 0]}, WALL + IDLE)
    assert wm(s, WALL + IDLE - 1) == T0 - LATE  # both ACTIVE: the minimum
    assert wm(s, WALL + IDLE) == T0 + 7 * DAY + SEC - LATE  # dms:0 IDLE: no longer holds


def test_when_every_input_is_idle_the_newest_event_advances_by_wall_time() -> None:
    s = Sources(STALE)
    s.update({"a:0": [T0, 0], "a:1": [T0 + DAY, 0]}, WALL)
    s.update({"a:0": [T0, 0], "a:1": [T0 + DAY, 0]}, WALL + 2 * SEC)
    s.update({"a:0": [T0, 0], "a:1": [T0 + DAY, 0]}, WALL + 4 * SEC)
    # a:1's newest event was read at WALL; both are IDLE from WALL + IDLE on
    assert wm(s, WALL + IDLE) == T0 + DAY - LATE + IDLE
    assert wm(s, WALL + 6 * SEC) == T0 + DAY - LATE + 6 * SEC
    # never a jump to now: a year-old replay stays a year old
    got = wm(s, WALL + 6 * SEC)
    assert got is not None and got < WALL - 300 * DAY


def test_one_active_input_with_a_backlog_holds_even_when_all_others_are_idle() -> None:
    s = Sources(STALE)
    s.update({"a:0": [T0 + DAY, 0], "a:1": [T0, 500]}, WALL)
    s.update({"a:0": [T0 + DAY, 0], "a:1": [T0, 500]}, WALL + 30 * SEC)
    assert wm(s, WALL + 30 * SEC) == T0 - LATE
    s.update({"a:0": [T0 + DAY, 0], "a:1": [None, 500]}, WALL + 31 * SEC)
    assert wm(s, WALL + 31 * SEC) == T0 - LATE  # a newest time never moves back


def test_a_backlog_with_nothing_read_blocks_and_an_unreported_input_blocks() -> None:
    s = Sources(STALE)
    s.update({"a:0": [T0, 0], "a:1": [None, 7]}, WALL)
    assert wm(s, WALL + 20 * SEC) == BLOCKED
    req = Sources(STALE, required=True, expected=frozenset({"a:0", "a:1"}))
    req.update({"a:0": [T0, 0]}, WALL)
    assert wm(req, WALL + 20 * SEC) == BLOCKED
    described = req.describe(WALL + 20 * SEC, LATE, IDLE)
    assert described["a:1"]["holds"] and described["a:1"]["reason"] == "holding: not reported yet"


def test_after_a_restart_nothing_moves_until_every_router_was_heard() -> None:
    s = Sources(STALE, settle_until_ms=WALL + 5 * SEC)
    s.update({"a:0": [T0, 0]}, WALL)
    assert wm(s, WALL + 4 * SEC) == BLOCKED
    assert wm(s, WALL + 5 * SEC) == T0 - LATE + 5 * SEC  # idle since WALL


def test_describe_names_status_reason_and_which_input_holds() -> None:
    s = Sources(STALE)
    s.update({"a:0": [T0, 4], "a:1": [T0 + DAY, 0], "a:2": [T0 + 2 * DAY, 0]}, WALL)
    s.update({"a:0": [T0, 4], "a:1": [T0 + DAY, 0], "a:2": [T0 + 2 * DAY + 1, 0]}, WALL + IDLE)
    d = s.describe(WALL + IDLE, LATE, IDLE)
    assert d["a:0"] == {
        "status": "ACTIVE",
        "reason": "backlog of 4 messages",
        "newest_event_ms": T0,
        "lag": 4,
        "holds": True,
    }
    assert d["a:1"]["status"] == "IDLE" and not d["a:1"]["holds"]
    assert d["a:2"]["status"] == "ACTIVE" and not d["a:2"]["holds"]


def test_the_partition_watermark_never_moves_back_when_an_idle_input_wakes_up_behind() -> None:
    """An event on an IDLE input behind the watermark is late; the watermark stays."""
    s = Sources(STALE)
    state = WatermarkState()
    s.update({"a:0": [T0 + DAY, 0], "a:1": [T0, 0]}, WALL)
    state.source_ms = wm(s, WALL + IDLE)
    high = Watermark(LATE, IDLE, state).advance(WALL + IDLE)
    assert high == T0 + DAY - LATE + IDLE
    s.update({"a:1": [T0 + SEC, 0]}, WALL + IDLE + 1)  # a:1 ACTIVE again, far behind
    s.update({"a:0": [T0 + DAY, 0]}, WALL + IDLE + 1)
    state.source_ms = wm(s, WALL + IDLE + 1)
    assert state.source_ms == T0 + SEC - LATE
    assert Watermark(LATE, IDLE, state).advance(WALL + IDLE + 1) == high


# -- a reference recomputed from the whole history ----------------------------


@dataclass(frozen=True)
class Report:
    wall_ms: int
    source: str
    max_ts_ms: int | None
    lag: int | None


def reference(history: list[Report], wall_ms: int, stale_ms: int) -> int | None:
    """The rule read straight off the issue, over every report so far (no state kept
    between calls): status per input, minimum over ACTIVE, all-idle rule."""
    by_source: dict[str, list[Report]] = {}
    for r in history:
        by_source.setdefault(r.source, []).append(r)
    active: list[int | None] = []
    newest: tuple[int, int] | None = None  # (event time, wall time it was first read)
    for reports in by_source.values():
        last = reports[-1]
        age = wall_ms - last.wall_ms
        if age > stale_ms:
            continue
        seen = [r for r in reports if r.max_ts_ms is not None]
        top = max((r.max_ts_ms for r in seen), default=None)  # type: ignore[type-var]
        first_top = min((r.wall_ms for r in seen if r.max_ts_ms == top), default=None)
        if top is None and last.lag == 0:
            continue  # empty: IDLE
        if (
            top is not None
            and first_top is not None
            and (newest is None or (top, first_top) > newest)
        ):
            newest = (top, first_top)
        idle = (
            top is not None
            and first_top is not None
            and age <= TRUSTED_MS
            and last.lag == 0
            and wall_ms - first_top >= IDLE
        )
        if not idle:
            active.append(None if top is None else top - LATE)
    if active:
        if None in active:
            return BLOCKED
        return min(a for a in active if a is not None)
    if newest is None:
        return None
    return newest[0] - LATE + max(0, wall_ms - newest[1])


step_st = st.tuples(
    st.integers(min_value=0, max_value=4 * SEC),  # wall time step
    st.integers(min_value=0, max_value=3),  # which input partition reports
    st.one_of(st.none(), st.integers(min_value=-2 * DAY, max_value=2 * DAY)),  # newest ts
    st.one_of(st.none(), st.just(0), st.integers(min_value=1, max_value=50)),  # lag
)


@settings(max_examples=300, deadline=None)
@given(st.lists(step_st, min_size=1, max_size=40), st.integers(min_value=1, max_value=4))
def test_the_valve_agrees_with_the_reference_for_random_layouts(
    steps: list[tuple[int, int, int | None, int | None]], n_inputs: int
) -> None:
    s = Sources(STALE)
    history: list[Report] = []
    wall = WALL
    for step, which, ts_off, lag in steps:
        wall += step
        source = f"t:{which % n_inputs}"
        ts = None if ts_off is None else T0 + ts_off
        s.update({source: [ts, lag]}, wall)
        history.append(Report(wall, source, ts, lag))
        for probe in (wall, wall + IDLE // 2, wall + IDLE, wall + TRUSTED_MS + 1):
            got = wm(s, probe)
            want = reference(history, probe, STALE)
            assert got == want, (probe - WALL, history)


@settings(max_examples=200, deadline=None)
@given(st.lists(step_st, min_size=1, max_size=40), st.integers(min_value=1, max_value=4))
def test_the_partition_watermark_is_monotonic_and_never_reaches_now(
    steps: list[tuple[int, int, int | None, int | None]], n_inputs: int
) -> None:
    s = Sources(STALE)
    state = WatermarkState()
    wall, previous = WALL, None
    for step, which, ts_off, lag in steps:
        wall += step
        s.update({f"t:{which % n_inputs}": [None if ts_off is None else T0 + ts_off, lag]}, wall)
        state.source_ms = wm(s, wall)
        got = Watermark(LATE, IDLE, state).advance(wall)
        if previous is not None:
            assert got is not None and got >= previous
        if got is not None:
            # at most the newest event plus the wall time of the whole run
            assert got <= T0 + 2 * DAY + (wall - WALL)
            previous = got

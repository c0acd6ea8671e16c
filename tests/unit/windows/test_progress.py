"""Input-partition progress: the watermark is the minimum over input partitions, so
it never overtakes one that is behind, and quiet accounts still close."""

from __future__ import annotations

from pipeline.windows.aggregator import Aggregator, PartitionState
from pipeline.windows.valve import TRUSTED_MS, Sources
from pipeline.windows.watermark import BLOCKED, Watermark, WatermarkState
from tests.unit.fixtures import BASE, MIN, SEC, WALL, cfg, ia

STALE = 40_000
LATE = 10 * SEC
IDLE = 5 * SEC


def wm(s: Sources, wall: int = WALL) -> int | None:
    return s.watermark(wall, LATE, IDLE)


def test_no_reports_means_no_source_watermark() -> None:
    assert wm(Sources(STALE)) is None


def test_minimum_over_input_partitions_minus_lateness() -> None:
    s = Sources(STALE)
    s.update(
        {"likes:0": [BASE + 5 * MIN, 10], "likes:1": [BASE + MIN, 3], "likes:2": [BASE, 0]}, WALL
    )
    assert wm(s) == BASE - LATE


def test_a_caught_up_quiet_partition_idle_advances_by_wall_time_since_its_last_event() -> None:
    s = Sources(STALE)
    s.update({"likes:0": [BASE, 0]}, WALL)
    assert wm(s, WALL + IDLE - 1) == BASE - LATE  # not yet idle
    s.update({"likes:0": [BASE, 0]}, WALL + 4 * SEC)  # keepalive: same position
    assert wm(s, WALL + 6 * SEC) == BASE - LATE + 6 * SEC  # relative to the last event
    s.update({"likes:0": [BASE + 2 * SEC, 0]}, WALL + 7 * SEC)  # a newer event
    assert wm(s, WALL + 7 * SEC) == BASE + 2 * SEC - LATE


def test_a_partition_with_a_backlog_never_idle_advances() -> None:
    s = Sources(STALE)
    s.update({"likes:0": [BASE, 5]}, WALL)
    s.update({"likes:0": [BASE, 5]}, WALL + 10 * SEC)
    assert wm(s, WALL + 10 * SEC) == BASE - LATE


def test_busy_partitions_advance_a_quiet_accounts_watermark() -> None:
    """Quiet accounts close as soon as the input as a whole has moved on."""
    agg = Aggregator(cfg(lateness_ms=0, grace_ms=0))
    st = PartitionState()
    agg.apply_batch(st, [ia("quiet", BASE + SEC, account="quiet")], 0, WALL)
    agg.apply_progress(st, {"likes:0": [BASE + 3 * MIN, 2], "likes:1": [BASE + 2 * MIN, 7]}, WALL)
    closed = agg.close_windows(st, WALL)
    assert [(fw.record["account_id"], fw.start_ms) for fw in closed] == [("quiet", BASE)]


def test_a_backlog_with_no_event_seen_yet_blocks() -> None:
    s = Sources(STALE)
    s.update({"likes:0": [BASE, 0], "dms:3": [None, 7]}, WALL)
    assert wm(s) == BLOCKED


def test_an_empty_input_partition_does_not_hold() -> None:
    s = Sources(STALE)
    s.update({"likes:0": [BASE, 0], "dms:3": [None, 0]}, WALL)
    assert wm(s) == BASE - LATE


def test_unknown_lag_holds_without_idle_advance() -> None:
    s = Sources(STALE)
    s.update({"likes:0": [BASE, None]}, WALL)
    s.update({"likes:0": [BASE, None]}, WALL + 30 * SEC)
    assert wm(s, WALL + 30 * SEC) == BASE - LATE


def test_a_router_that_stopped_reporting_holds_without_idle_advance_then_expires() -> None:
    s = Sources(STALE)
    s.update({"likes:0": [BASE, 0], "likes:1": [BASE + MIN, 0]}, WALL)
    s.update({"likes:1": [BASE + MIN, 0]}, WALL + 20 * SEC)  # likes:0's router is gone
    # likes:0 is no longer trusted to be idle: it holds at its last event
    assert wm(s, WALL + TRUSTED_MS + 1) == BASE - LATE
    assert wm(s, WALL + STALE) == BASE - LATE
    # after stale_ms it no longer counts; likes:1 is quiet but still reported, so it
    # idle-advances from its last event
    s.update({"likes:1": [BASE + MIN, 0]}, WALL + STALE)
    assert wm(s, WALL + STALE + 1) == BASE + MIN - LATE + STALE + 1
    assert "likes:0" not in s.reports


def test_newest_event_time_never_moves_back() -> None:
    s = Sources(STALE)
    s.update({"a:0": [BASE + MIN, 4]}, WALL)
    s.update({"a:0": [BASE, 4]}, WALL + 1)  # an older report arriving late
    assert wm(s, WALL + 1) == BASE + MIN - LATE
    s.update({"a:0": [None, 2]}, WALL + 2)  # a restarted router that has not read yet
    assert wm(s, WALL + 2) == BASE + MIN - LATE


def test_after_a_restart_the_watermark_holds_until_routers_have_reported() -> None:
    s = Sources(STALE, settle_until_ms=WALL + 5 * SEC)
    s.update({"a:0": [BASE, 0]}, WALL + 1)
    assert wm(s, WALL + 1) == BLOCKED
    assert wm(s, WALL + 5 * SEC) == BASE - LATE


def test_watermark_uses_the_source_watermark_when_known_and_never_moves_back() -> None:
    state = WatermarkState()
    w = Watermark(LATE, IDLE, state)
    w.observe(BASE + 10 * MIN, WALL)
    assert w.current(WALL) == BASE + 10 * MIN - LATE
    state.source_ms = BASE + 20 * MIN
    assert w.advance(WALL) == BASE + 20 * MIN
    state.source_ms = BASE  # lower than the floor: the floor wins
    assert w.current(WALL) == BASE + 20 * MIN
    state.source_ms = BLOCKED
    assert w.current(WALL) == BASE + 20 * MIN


def test_a_fast_partition_cannot_make_a_slow_ones_events_too_late() -> None:
    """The replay scenario: input partition 0 is read far ahead of partition 1."""
    agg = Aggregator(cfg(lateness_ms=0, grace_ms=0))
    st = PartitionState()
    agg.apply_progress(st, {"likes:0": [BASE, 0], "likes:1": [BASE, 500]}, WALL)
    agg.apply_batch(st, [ia("fast", BASE + 30 * MIN)], 0, WALL)
    agg.apply_progress(st, {"likes:0": [BASE + 30 * MIN, 0], "likes:1": [BASE, 500]}, WALL)
    assert agg.close_windows(st, WALL) == []  # held at partition 1's position
    slow = agg.apply_batch(st, [ia("slow", BASE + 30 * SEC)], 1, WALL)
    assert slow.too_late == [] and slow.delta is not None
    # partition 1 caught up (its later events went to other internal partitions)
    agg.apply_progress(st, {"likes:1": [BASE + 2 * MIN, 0]}, WALL)
    closed = agg.close_windows(st, WALL)
    first = [fw for fw in closed if fw.start_ms == BASE and fw.end_ms == BASE + MIN]
    assert len(first) == 1 and first[0].record["counts"]["like"] == 1


def test_in_a_worker_no_report_yet_holds_instead_of_using_the_partitions_own_events() -> None:
    """A worker always runs routers: before any report arrives the watermark holds,
    so a partition that happened to receive a fast input's events first cannot run
    ahead of the others."""
    assert wm(Sources(STALE, required=True, expected=frozenset({"likes:0"}))) == BLOCKED
    s = Sources(STALE, required=True, expected=frozenset({"likes:0"}))
    s.update({"likes:0": [None, 0]}, WALL)  # heard: an empty input partition
    assert wm(s) is None  # nothing constrains it; the partition's own events decide
    agg = Aggregator(cfg(lateness_ms=0, grace_ms=0))
    st = PartitionState(sources=Sources(STALE, required=True, expected=frozenset({"likes:0"})))
    agg.apply_batch(st, [ia("fast", BASE + 30 * MIN)], 0, WALL)
    assert agg.close_windows(st, WALL) == []
    assert agg.apply_batch(st, [ia("slow", BASE)], 1, WALL).too_late == []


def test_an_input_partition_nobody_reports_holds_the_watermark() -> None:
    """A restarted worker may own only some input partitions while the group still
    waits for a dead member: nobody reads the others, and their unread events must
    not become late. So every input partition must be reported before any advance."""
    both = frozenset({"likes:0", "likes:1"})
    s = Sources(STALE, required=True, expected=both)
    s.update({"likes:0": [BASE + 30 * MIN, 0]}, WALL)
    assert s.missing() == ["likes:1"]
    assert wm(s) == BLOCKED
    s.update({"likes:1": [BASE + MIN, 7]}, WALL)
    assert s.missing() == [] and wm(s) == BASE + MIN - LATE
    # its reader goes silent for longer than the stale limit: held again, not dropped
    s.update({"likes:0": [BASE + 31 * MIN, 0]}, WALL + STALE)
    assert wm(s, WALL + STALE + 1) == BLOCKED and s.missing() == ["likes:1"]


def test_unknown_input_partitions_hold() -> None:
    """Until the worker knows the input topics' partition counts nothing advances."""
    s = Sources(STALE, required=True)
    s.update({"likes:0": [BASE, 0]}, WALL)
    assert wm(s) == BLOCKED
    s.expected = frozenset({"likes:0"})
    assert wm(s) == BASE - LATE

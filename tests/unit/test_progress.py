"""Input-partition progress: the watermark never overtakes a partition with a backlog."""

from __future__ import annotations

from pipeline.aggregator import Aggregator, PartitionState
from pipeline.progress import Sources
from pipeline.watermark import BLOCKED, Watermark, WatermarkState
from tests.unit.test_aggregator import BASE, MIN, SEC, WALL, cfg, ia

STALE = 10_000


def test_no_reports_means_no_hold() -> None:
    assert Sources(STALE).hold(WALL) == (None, False)


def test_caught_up_partitions_do_not_hold() -> None:
    s = Sources(STALE)
    s.update({"social.likes:0": [BASE, 0], "social.likes:1": [BASE + MIN, 0]}, WALL)
    assert s.hold(WALL) == (None, False)


def test_hold_is_the_slowest_partition_with_a_backlog() -> None:
    s = Sources(STALE)
    s.update(
        {
            "social.likes:0": [BASE + 5 * MIN, 10],
            "social.likes:1": [BASE + MIN, 3],
            "social.likes:2": [BASE, 0],
        },
        WALL,
    )
    assert s.hold(WALL) == (BASE + MIN, True)


def test_a_backlog_with_no_event_seen_yet_blocks() -> None:
    s = Sources(STALE)
    s.update({"social.likes:0": [BASE, 0], "social.dms:3": [None, 7]}, WALL)
    assert s.hold(WALL) == (BLOCKED, True)


def test_unknown_lag_counts_as_a_backlog() -> None:
    s = Sources(STALE)
    s.update({"social.likes:0": [BASE, None]}, WALL)
    assert s.hold(WALL) == (BASE, True)


def test_stale_reports_expire() -> None:
    s = Sources(STALE)
    s.update({"social.likes:0": [BASE, 5]}, WALL)
    assert s.hold(WALL + STALE) == (BASE, True)
    assert s.hold(WALL + STALE + 1) == (None, False)
    assert s.reports == {}


def test_newest_event_time_never_moves_back_and_survives_a_report_without_one() -> None:
    s = Sources(STALE)
    s.update({"a:0": [BASE + MIN, 4]}, WALL)
    s.update({"a:0": [BASE, 4]}, WALL + 1)  # an older report arriving late
    assert s.hold(WALL + 1) == (BASE + MIN, True)
    s.update({"a:0": [None, 2]}, WALL + 2)  # a restarted router that has not read yet
    assert s.hold(WALL + 2) == (BASE + MIN, True)


def test_waiting_for_the_first_report_blocks_for_at_most_the_stale_time() -> None:
    s = Sources(STALE, waiting_since_ms=WALL)
    assert s.hold(WALL + 1) == (BLOCKED, True)
    assert s.hold(WALL + STALE) == (None, False)
    s2 = Sources(STALE, waiting_since_ms=WALL)
    s2.update({"a:0": [BASE, 0]}, WALL + 5)
    assert s2.hold(WALL + 6) == (None, False)


def test_watermark_respects_hold_and_skips_idle_advance_during_backlog() -> None:
    lateness = 10 * SEC
    state = WatermarkState()
    wm = Watermark(lateness, idle_after_ms=5 * SEC, state=state)
    state.hold_ms, state.backlog = BASE + 2 * MIN, True
    wm.observe(BASE + 10 * MIN, WALL)
    assert wm.current(WALL) == BASE + 2 * MIN - lateness
    assert wm.current(WALL + 60 * SEC) == BASE + 2 * MIN - lateness  # no idle advance
    state.hold_ms, state.backlog = None, False
    assert wm.current(WALL) == BASE + 10 * MIN - lateness
    assert wm.current(WALL + 60 * SEC) == BASE + 10 * MIN - lateness + 60 * SEC
    state.hold_ms = BLOCKED
    assert wm.current(WALL) == state.floor_ms


def test_a_fast_partition_cannot_make_a_slow_ones_events_too_late() -> None:
    """The replay scenario that motivated input progress: partition 0 is read ahead."""
    agg = Aggregator(cfg(lateness_ms=0, grace_ms=0))
    st = PartitionState()
    agg.apply_progress(st, {"likes:0": [BASE + 30 * MIN, 0], "likes:1": [BASE, 500]}, WALL)
    agg.apply_batch(st, [ia("fast", BASE + 30 * MIN)], 0, WALL)
    assert agg.close_windows(st, WALL) == []  # held at partition 1's position
    slow = agg.apply_batch(st, [ia("slow", BASE + 30 * SEC)], 1, WALL)
    assert slow.too_late == [] and slow.delta is not None
    agg.apply_progress(st, {"likes:1": [BASE + 30 * SEC, 0]}, WALL)  # partition 1 caught up
    closed = agg.close_windows(st, WALL)
    first = [fw for fw in closed if fw.start_ms == BASE and fw.end_ms == BASE + MIN]
    assert len(first) == 1 and first[0].record["counts"]["like"] == 1

"""pipeline.durability.processor beyond the crash protocol: what a restored
partition waits for, and how the processor describes a partition."""

from __future__ import annotations

from pipeline.detection.series import Detection
from pipeline.detection.settings import DetectionSettings
from pipeline.durability.processor import PartitionProcessor, Publish
from pipeline.durability.restore import Restored
from pipeline.responses.settings import ResponseSettings
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows import status
from pipeline.windows.aggregator import Aggregator, PartitionState
from pipeline.windows.valve import SETTLE_MS
from tests.unit.fixtures import BASE, MIN, SEC, WALL, cfg, ia

P = 1


def processor() -> PartitionProcessor:
    tracker = ResponseTracker(ResponseSettings())
    return PartitionProcessor(Aggregator(cfg()), tracker, Detection(DetectionSettings()), ())


def windows(step_effects: list[object]) -> list[Publish]:
    return [e for e in step_effects if isinstance(e, Publish) and e.topic == "window"]


def test_a_restored_worker_partition_holds_until_every_router_reported() -> None:
    proc, state = processor(), PartitionState()
    proc.restored(P, Restored(state), 0, wall_ms=WALL, inputs=frozenset({"likes:0", "likes:1"}))
    rows = [ia("a", BASE), ia("b", BASE + 3 * MIN)]  # a first minute long final by event time
    step = proc.batch(P, state, 0, rows, {"likes:0": [BASE + 3 * MIN, 0]}, WALL + SEC, 0.0)
    assert not windows(step.effects)
    view = proc.status(P, state, WALL + SEC)
    assert view["settling"] and "every router" in view["held_by"]
    # Settled, but likes:1 has never been heard from: it holds.
    late = WALL + SETTLE_MS + SEC
    assert not windows(proc.tick(P, state, late, 1.0).effects)
    assert "likes:1" in proc.status(P, state, late)["held_by"]
    step = proc.batch(P, state, 1, [], {"likes:1": [BASE + 3 * MIN, 0]}, late + SEC, 2.0)
    assert {e.key for e in windows(step.effects)} == {b"acme"}


def test_a_partition_outside_a_worker_closes_on_its_own_rows() -> None:
    proc, state = processor(), PartitionState()
    proc.restored(P, Restored(state), 0)  # no wall time: no routers to wait for
    step = proc.batch(P, state, 0, [ia("a", BASE), ia("b", BASE + 3 * MIN)], None, WALL, 0.0)
    assert windows(step.effects)


def test_lag_is_the_backlog_past_the_next_message_to_read() -> None:
    proc, state = processor(), PartitionState()
    assert proc.status(P, state, WALL, backlog_end=10)["lag"] is None  # nothing read yet
    proc.batch(P, state, 4, [ia("a", BASE)], None, WALL, 0.0)
    assert proc.status(P, state, WALL, backlog_end=10)["lag"] == 5
    assert proc.status(P, state, WALL, backlog_end=5)["lag"] == 0
    assert proc.status(P, state, WALL)["lag"] is None  # end offset unknown
    proc.drop(P)
    assert proc.status(P, state, WALL, backlog_end=10)["lag"] is None


def test_a_restore_still_catching_up_says_so() -> None:
    proc, state = processor(), PartitionState()
    proc.restored(P, Restored(state), backlog_end=3)
    view = proc.status(P, state, WALL, backlog_end=3)
    assert view["catching_up"] and view["held_by"] == "re-reading its backlog after a restore"
    proc.batch(P, state, 2, [], None, WALL, 0.0)  # the last message of the backlog
    assert not proc.status(P, state, WALL, backlog_end=3)["catching_up"]


def test_log_lines_name_counts_and_never_message_text() -> None:
    proc, state = processor(), PartitionState()
    row = ia("a", BASE, kind="comment")
    proc.batch(P, state, 0, [row], {"likes:0": [BASE, 0]}, WALL, 0.0)
    line = status.summary(proc.status(P, state, WALL))
    assert "open windows" in line and "0 of 1 input partitions IDLE" in line
    restored = Restored(state, deltas=1, marker=True)
    assert restored.summary().startswith("1 deltas, applied offset 0, 0 outputs to republish")


def test_internal_offsets_jumped_over_are_reported() -> None:
    proc, state = processor(), PartitionState()
    seen = [
        proc.batch(P, state, offset, [ia("a", BASE + offset * SEC)], None, WALL, 0.0).observed
        for offset in (5, 6, 9, 10)  # the first after a start is wherever the group was
    ]
    assert [o.skipped_offsets for o in seen] == [0, 0, 2, 0]
    # read again after a seek back (a rebalance): nothing was jumped over
    assert proc.batch(P, state, 7, [], None, WALL, 0.0).observed.skipped_offsets == 0

"""Rows too late for their window still feed response pairing: a late reply answers
its message, a late inbound message starts its SLA clock, and both survive a restore."""

from __future__ import annotations

from typing import Any

from pipeline.model import wire
from pipeline.responses.tracker import ResponseTracker
from pipeline.responses.views import account_view
from pipeline.windows.aggregator import Aggregator, PartitionState
from pipeline.windows.state import Delta
from tests import conversations as conv
from tests.unit.fixtures import cfg
from tests.unit.responses.test_tracker import CFG, MIN, START, dm, reply

SEC = 1000
WALL = 1_900_000_000_000


def step(
    agg: Aggregator,
    tracker: ResponseTracker,
    state: PartitionState,
    offset: int,
    *events: dict[str, Any],
) -> tuple[list[str], list[Delta], list[str]]:
    """Apply one batch as the worker does, close, and advance the response state:
    the ids dead-lettered as too late, the delta written, the alert types due."""
    applied = agg.apply_batch(state, [conv.row(e) for e in events], offset, WALL)
    deltas = []
    if applied.delta is not None:
        tracker.apply_rows(state.responses, applied.delta.response_rows())
        deltas.append(applied.delta)
    agg.close_windows(state, WALL)
    assert state.watermark.floor_ms is not None
    decided = tracker.advance(state.responses, state.watermark.floor_ms).decisions
    return [r[wire.I_ID] for r in applied.too_late], deltas, [x.type for x in decided]


def test_a_reply_too_late_for_its_window_still_answers_its_message() -> None:
    agg, tracker, state = Aggregator(cfg()), ResponseTracker(CFG), PartitionState()
    deltas: list[Delta] = []
    _, d, _ = step(agg, tracker, state, 0, dm("m1", START))
    deltas += d
    # the watermark moves an hour on: m1's windows, and the reply's, are final
    _, d, _ = step(agg, tracker, state, 1, dm("m2", START + 60 * MIN))
    deltas += d
    assert state.emitted_through_ms is not None and state.emitted_through_ms > START + 10 * MIN
    late, d, _ = step(agg, tracker, state, 2, reply("r1", START + 5 * MIN, "m1"))
    deltas += d
    assert late == ["r1"]  # dead-lettered for windows ...
    assert d and d[0].rows == [] and [r[wire.I_ID] for r in d[0].too_late] == ["r1"]
    view = account_view("acme", state.responses, state.watermark.floor_ms)
    assert view["first_response_seconds"]["count"] == 1  # ... and it answered m1
    assert view["first_response_seconds"]["p50"] is not None
    assert abs(view["first_response_seconds"]["p50"] - 300) < 300 * 0.02
    # a redelivery of the same reply is a duplicate now: neither a second dead letter
    # nor a subsequent response
    again = agg.apply_batch(state, [conv.row(reply("r1", START + 5 * MIN, "m1"))], 3, WALL)
    assert again.duplicates == 1 and again.too_late == [] and again.delta is None

    # restored from its deltas (round-tripped through JSON), the pairing is the same
    restored, fresh = PartitionState(), ResponseTracker(CFG)
    recs = [Delta.from_json(x.to_json()) for x in deltas]
    agg.restore(restored, recs, agg.marker(state))
    for x in recs:
        fresh.apply_rows(restored.responses, x.response_rows())
    fresh.advance(restored.responses, restored.watermark.floor_ms or 0)
    assert account_view("acme", restored.responses, None) == account_view(
        "acme", state.responses, None
    )
    redelivered = agg.apply_batch(restored, [conv.row(reply("r1", START + 5 * MIN, "m1"))], 9, WALL)
    assert redelivered.duplicates == 1 and redelivered.delta is None


def test_an_inbound_message_too_late_for_its_window_still_starts_its_sla_clock() -> None:
    agg, tracker, state = Aggregator(cfg()), ResponseTracker(CFG), PartitionState()
    step(agg, tracker, state, 0, dm("m0", START + 90 * MIN))
    late, d, due = step(agg, tracker, state, 1, dm("m1", START))  # 90 min behind: too late
    assert late == ["m1"] and d
    # its 30-minute DM SLA deadline is behind the watermark already: judged at once
    assert due == ["response_sla_warning", "response_sla_breach"]
    view = account_view("acme", state.responses, state.watermark.floor_ms)
    assert view["open"]["count"] == 2  # m0 and m1 both wait for a reply


def test_too_late_likes_are_not_kept() -> None:
    agg, tracker, state = Aggregator(cfg()), ResponseTracker(CFG), PartitionState()
    step(agg, tracker, state, 0, dm("m0", START + 90 * MIN))
    like: dict[str, Any] = {
        "event_id": "l1",
        "kind": "like",
        "channel": "x",
        "account_id": "acme",
        "ts": START,
    }
    late, d, _ = step(agg, tracker, state, 1, like)
    assert late == ["l1"] and d == []

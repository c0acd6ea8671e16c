"""Response-time pairing, tables and SLA decisions against an offline computation."""

from __future__ import annotations

import dataclasses
from datetime import date
from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.responses import alerts as response_alerts
from pipeline.responses import sketch
from pipeline.responses import snapshot as response_snapshot
from pipeline.responses import tracker as tracker_module
from pipeline.responses.business_hours import Calendar
from pipeline.responses.settings import ResponseSettings, SlaRule
from pipeline.responses.tracker import ResponseState, ResponseTracker
from pipeline.responses.views import account_view
from tests import conversations as conv
from tests.unit.fixtures import schema_validator

START = 1_795_000_000_000  # a Monday? no matter: calendars below say which day it is
MIN = 60_000
HOUR = 60 * MIN
LATENESS = 10 * MIN
CFG = ResponseSettings(
    sla=(
        SlaRule(1800, kinds=("dm",)),
        SlaRule(3600, priorities=("urgent", "high")),
        SlaRule(4 * 3600),
    ),
    orphan_wait_s=3600,
)


def run(
    tracker: ResponseTracker,
    events: list[dict[str, Any]],
    seed: int,
    final_wm: int,
    restore_at: int | None = None,
) -> tuple[ResponseState, list[dict[str, Any]]]:
    """Feed events in a shuffled order no event is late in, advancing the watermark as
    the worker does (newest event time minus the lateness); optionally snapshot and
    restore part-way."""
    order = conv.arrival_order(events, LATENESS, seed, lambda e: e["ts"])
    st = ResponseState()
    alerts: list[dict[str, Any]] = []
    newest = -1
    for i, batch in enumerate(conv.batches(order, seed)):
        tracker.apply_rows(st, [conv.row(e) for e in batch])
        newest = max(newest, *(e["ts"] for e in batch))
        alerts += [
            response_alerts.build(d) for d in tracker.advance(st, newest - LATENESS).decisions
        ]
        if i == restore_at:
            st = response_snapshot.restore(tracker, response_snapshot.snapshot(st, 0))
    alerts += [response_alerts.build(d) for d in tracker.advance(st, final_wm).decisions]
    return st, alerts


def check_against_truth(st: ResponseState, alerts: list[dict[str, Any]], truth: conv.Truth) -> None:
    for account, values in truth.first_s.items():
        view = account_view(account, st, None)
        first = view["first_response_seconds"]
        assert first["count"] == len(values), account
        values.sort()
        for q in (0.5, 0.9, 0.99):
            exact = values[int(q * (len(values) - 1))]  # the sketch's rank convention
            assert abs(first[f"p{round(q * 100)}"] - exact) <= 0.01 * exact + 1e-9, (account, q)
        assert abs(first["mean"] - sum(values) / len(values)) < 1e-6
        later = truth.subsequent_s.get(account, [])
        assert view["subsequent_response_seconds"]["count"] == len(later)
        assert view["unmatched_replies"] == truth.unmatched.get(account, 0)
        assert view["open"]["count"] == truth.open.get(account, 0)
    got = {(a["type"], a["event_id"]) for a in alerts}
    assert got == truth.alerts
    assert len({a["alert_id"] for a in alerts}) == len(alerts)  # once per inbound


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_any_interleaving_gives_the_offline_tables_and_alerts(seed: int) -> None:
    data = conv.generate(seed, start_ms=START, inbound=150)
    final = data.events[-1]["ts"] + 2 * HOUR  # past every orphan's wait
    st, alerts = run(ResponseTracker(CFG), data.events, seed, final)
    check_against_truth(st, alerts, conv.offline(data.events, CFG, final))


@settings(max_examples=10, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), restore_at=st.integers(0, 30))
def test_a_snapshot_and_restore_part_way_changes_nothing(seed: int, restore_at: int) -> None:
    data = conv.generate(seed, start_ms=START, inbound=120)
    final = data.events[-1]["ts"] + 2 * HOUR
    tracker = ResponseTracker(CFG)
    plain, plain_alerts = run(tracker, data.events, seed, final)
    restored, restored_alerts = run(tracker, data.events, seed, final, restore_at=restore_at)
    assert restored_alerts == [] or {a["alert_id"] for a in restored_alerts} == {
        a["alert_id"] for a in plain_alerts
    }
    for account in ("acme", "globex", "initech"):
        a, b = account_view(account, plain, None), account_view(account, restored, None)
        assert a == b
    check_against_truth(restored, restored_alerts, conv.offline(data.events, CFG, final))


def dm(event_id: str, ts: int, account: str = "acme", **kw: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "dm",
        "channel": "x",
        "account_id": account,
        "ts": ts,
        **kw,
    }


def reply(event_id: str, ts: int, to: str, account: str = "acme") -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "reply",
        "channel": "x",
        "account_id": account,
        "ts": ts,
        "in_reply_to": to,
    }


def feed(tracker: ResponseTracker, st: ResponseState, *events: dict[str, Any]) -> None:
    tracker.apply_rows(st, [conv.row(e) for e in events])


def test_a_snapshot_of_the_row_per_message_layout_still_restores() -> None:
    # Snapshots written before inbound messages were stored as columns.
    tracker, st = ResponseTracker(CFG), ResponseState()
    feed(tracker, st, dm("m1", START), dm("m2", START + MIN), reply("r1", START + 5 * MIN, "m1"))
    tracker.advance(st, START + 10 * MIN)
    doc = orjson.loads(b"".join(response_snapshot.snapshot(st, 7)))
    assert "inbound" not in doc
    doc["inbound"] = [
        [account, *row]
        for account, *columns in doc.pop("inbound_columns")
        for row in zip(*columns, strict=True)
    ]
    assert doc["inbound"][0][:4] == ["acme", "x", "m1", START]
    old = response_snapshot.restore(tracker, [orjson.dumps(doc)])
    new = response_snapshot.restore(tracker, response_snapshot.snapshot(st, 7))
    assert sorted(old.due) == sorted(new.due) and sorted(old.expiries) == sorted(st.expiries)
    for restored in (old, new):
        assert restored.snap_seq == 7 and restored.tracked == 2
        assert account_view("acme", restored, None) == account_view("acme", st, None)
        assert restored.inbound["acme"][("x", "m2")].replies is None


def test_first_response_waits_for_the_watermark_and_takes_the_earliest_reply() -> None:
    tracker, st = ResponseTracker(CFG), ResponseState()
    feed(tracker, st, dm("m1", START), reply("r2", START + 20 * MIN, "m1"))
    assert tracker.advance(st, START + 15 * MIN).first_responses == []
    feed(tracker, st, reply("r1", START + 12 * MIN, "m1"))  # earlier, arriving later
    settled = tracker.advance(st, START + 30 * MIN).first_responses
    assert settled == [("x", "dm", 720.0)]
    view = account_view("acme", st, START + 30 * MIN)
    assert view["first_response_seconds"]["count"] == 1
    assert view["subsequent_response_seconds"]["count"] == 1
    assert view["within_sla_ratio"] == 1.0
    feed(tracker, st, reply("r3", START + 40 * MIN, "m1"))  # after settling: subsequent
    assert account_view("acme", st, None)["subsequent_response_seconds"]["count"] == 2


def test_a_reply_before_its_message_waits_for_it_and_strays_are_counted() -> None:
    tracker, st = ResponseTracker(CFG), ResponseState()
    feed(tracker, st, reply("r1", START + 5 * MIN, "m1"), reply("r9", START, "nobody"))
    tracker.advance(st, START + 30 * MIN)
    feed(tracker, st, dm("m1", START))
    tracker.advance(st, START + 31 * MIN)
    view = account_view("acme", st, START + 31 * MIN)
    assert view["first_response_seconds"]["count"] == 1
    assert view["first_response_seconds"]["p50"] == sketch.quantile(
        sketch.merged([st.tables["acme"][("x", "dm", "normal", "")].first]), 0.5
    )
    assert view["unmatched_replies"] == 0  # still within the orphan wait
    tracker.advance(st, START + 2 * HOUR)
    assert account_view("acme", st, None)["unmatched_replies"] == 1


def test_sla_warning_then_breach_for_an_unanswered_dm_once_each() -> None:
    tracker, st = ResponseTracker(CFG), ResponseState()
    feed(tracker, st, dm("m1", START))
    assert tracker.advance(st, START + 24 * MIN).decisions == []  # 0.8 x 30 min not passed
    warn = tracker.advance(st, START + 24 * MIN + 1).decisions
    assert [d.type for d in warn] == ["response_sla_warning"]
    breach = tracker.advance(st, START + 31 * MIN).decisions
    assert [d.type for d in breach] == ["response_sla_breach"]
    assert tracker.advance(st, START + 5 * HOUR).decisions == []
    alert = response_alerts.build(breach[0])
    schema_validator("alert.v1.json").validate(alert)
    assert alert["event_id"] == "m1" and alert["severity"] == "critical"
    assert alert["window_start"].startswith("2026-") and alert["observed"] == 1800.0
    view = account_view("acme", st, START + 5 * HOUR)
    assert view["open"] == {"count": 1, "oldest_age_seconds": 5 * 3600.0}


def test_a_reply_at_the_deadline_is_in_time_and_one_after_is_not() -> None:
    tracker, st = ResponseTracker(CFG), ResponseState()
    feed(tracker, st, dm("a", START), reply("ra", START + 30 * MIN, "a"))
    feed(tracker, st, dm("b", START), reply("rb", START + 30 * MIN + 1, "b"))
    kinds = [(d.type, d.event_id) for d in tracker.advance(st, START + HOUR).decisions]
    assert kinds == [
        ("response_sla_warning", "a"),
        ("response_sla_warning", "b"),
        ("response_sla_breach", "b"),
    ] or sorted(kinds) == sorted(
        [("response_sla_warning", "a"), ("response_sla_warning", "b"), ("response_sla_breach", "b")]
    )
    assert account_view("acme", st, None)["within_sla_ratio"] == 0.5


def weekdays_9_to_17(tz: str) -> Calendar:
    day = ((9 * 60, 17 * 60),)
    return Calendar(tz=tz, weekly=(day, day, day, day, day, (), ()), holidays=frozenset())


def ms(iso: str) -> int:
    from datetime import datetime

    return int(datetime.fromisoformat(iso).timestamp() * 1000)


def test_business_hours_sla_runs_over_the_weekend_in_the_accounts_time_zone() -> None:
    cfg = dataclasses.replace(
        CFG,
        calendars={"emea": weekdays_9_to_17("Europe/Berlin")},
        calendar_by_account={"acme": "emea"},
        sla=(SlaRule(3600),),
    )
    tracker, st = ResponseTracker(cfg), ResponseState()
    friday = ms("2026-11-20T16:30:00+01:00")
    feed(tracker, st, dm("m1", friday), dm("m2", friday, account="globex"))
    decisions = tracker.advance(st, ms("2026-11-23T09:29:00+01:00")).decisions
    # globex has no calendar: warned and breached on Friday evening
    assert {(d.type, d.account) for d in decisions} == {
        ("response_sla_warning", "acme"),  # 48 business minutes: Fri 16:30-17:00 + Mon 9:00-9:18
        ("response_sla_warning", "globex"),
        ("response_sla_breach", "globex"),
    }
    breach = tracker.advance(st, ms("2026-11-23T09:30:01+01:00")).decisions
    assert [(d.type, d.end_ms) for d in breach] == [
        ("response_sla_breach", ms("2026-11-23T09:30:00+01:00"))
    ]
    assert breach[0].business
    feed(tracker, st, reply("r1", ms("2026-11-23T09:40:00+01:00"), "m1"))
    tracker.advance(st, ms("2026-11-23T10:00:00+01:00"))
    view = account_view("acme", st, None)
    assert view["first_response_business_seconds"]["count"] == 1
    assert abs(view["first_response_business_seconds"]["p50"] - 70 * 60) <= 0.01 * 70 * 60
    assert view["first_response_seconds"]["p50"] > 2 * 24 * 3600  # the weekend counts here
    assert view["within_sla_ratio"] == 0.0


def test_degradation_alerts_once_when_rolling_p90_passes_the_sla_and_again_after_recovery() -> None:
    cfg = dataclasses.replace(CFG, degradation_min_responses=5)
    tracker, st = ResponseTracker(cfg), ResponseState()
    decisions = []

    def hour_of(start: int, delay: int, tag: str) -> None:
        for i in range(10):
            ts = start + i * 5 * MIN
            feed(tracker, st, dm(f"{tag}{i}", ts), reply(f"{tag}r{i}", ts + delay, f"{tag}{i}"))

    hour_of(START, 45 * MIN, "slow")  # DM SLA is 30 min
    decisions += tracker.advance(st, START + 3 * HOUR).decisions
    hour_of(START + 3 * HOUR, 5 * MIN, "fast")
    decisions += tracker.advance(st, START + 6 * HOUR).decisions
    hour_of(START + 6 * HOUR, 50 * MIN, "slow2")
    decisions += tracker.advance(st, START + 9 * HOUR).decisions
    degraded = [d for d in decisions if d.type == "response_time_degradation"]
    assert len(degraded) == 2, [(d.start_ms - START, d.end_ms - START) for d in degraded]
    assert all(d.observed_s > 1800 and d.threshold_s == 1800 for d in degraded)
    alert = response_alerts.build(degraded[0])
    schema_validator("alert.v1.json").validate(alert)
    assert alert["channel"] is None and "event_id" not in alert


def test_tracking_is_bounded_oldest_first_and_counted() -> None:
    cfg = dataclasses.replace(CFG, max_tracked_per_partition=3)
    tracker, st = ResponseTracker(cfg), ResponseState()
    feed(tracker, st, *(dm(f"m{i}", START + i * MIN) for i in range(5)))
    assert st.tracked == 3
    assert set(st.inbound["acme"]) == {("x", "m2"), ("x", "m3"), ("x", "m4")}
    view = account_view("acme", st, None)
    assert view["evicted"] == 2 and view["open"]["count"] == 3
    feed(tracker, st, reply("r0", START + 10 * MIN, "m0"))  # its message was dropped
    tracker.advance(st, START + 3 * HOUR)
    assert account_view("acme", st, None)["unmatched_replies"] == 1


def test_the_schedule_stays_bounded_when_inbound_are_evicted(monkeypatch: Any) -> None:
    # Each evicted message left its warning and breach items behind until their
    # deadlines (hours of event time): memory grew past max_tracked_per_partition.
    monkeypatch.setattr(tracker_module, "MIN_DUE_LIMIT", 16)
    cfg = dataclasses.replace(CFG, max_tracked_per_partition=100)
    tracker, st = ResponseTracker(cfg), ResponseState()
    feed(tracker, st, *(dm(f"m{i}", START + i * 1000) for i in range(5000)))
    assert st.tracked == 100
    live = st.tracked  # one item each: the next deadline, the warning
    assert live <= len(st.due) <= live + live // 4 + 16


def test_tracked_messages_share_their_names_and_hold_no_empty_lists() -> None:
    # Up to max_tracked_per_partition messages are held: a copy of "acme", "x", "dm"
    # and "normal" in each (as parsed from its own message) was most of their memory.
    tracker, st = ResponseTracker(CFG), ResponseState()
    events = [
        dm(f"m{i}", START + i * 1000, channel="instagram", issue_type="billing") for i in range(3)
    ]
    rows = [conv.row(e) for e in events]
    copies = [[v if not isinstance(v, str) else "".join(list(v)) for v in r] for r in rows]
    tracker.apply_rows(st, copies)
    entries = list(st.inbound["acme"].values())
    assert all(e.replies is None for e in entries)
    for name in ("kind", "priority", "issue"):
        assert len({id(getattr(e, name)) for e in entries}) == 1, name
    assert len({id(channel) for channel, _ in st.inbound["acme"]}) == 1
    assert len({id(item[1]) for item in st.expiries}) == 1  # the account
    feed(tracker, st, {**reply("r1", START + MIN, "m1"), "channel": "instagram"})
    assert st.inbound["acme"][("instagram", "m1")].replies == [START + MIN]


@settings(max_examples=15, deadline=None)
@given(seed=st.integers(0, 2**32 - 1))
def test_compacting_the_schedule_changes_no_decision(seed: int) -> None:
    data = conv.generate(seed, start_ms=START, inbound=150)
    final = data.events[-1]["ts"] + 2 * HOUR
    tracker = ResponseTracker(dataclasses.replace(CFG, max_tracked_per_partition=40))
    plain, plain_alerts = run(tracker, data.events, seed, final)
    saved = tracker_module.MIN_DUE_LIMIT
    try:
        tracker_module.MIN_DUE_LIMIT = 4  # compacted after nearly every message
        compacted, compacted_alerts = run(tracker, data.events, seed, final)
    finally:
        tracker_module.MIN_DUE_LIMIT = saved

    def decided(alerts: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: v for k, v in a.items() if k != "emitted_at"} for a in alerts]

    assert decided(compacted_alerts) == decided(plain_alerts)
    for account in ("acme", "globex", "initech"):
        assert account_view(account, compacted, None) == account_view(account, plain, None)


def test_inbound_past_the_horizon_expire_and_are_counted() -> None:
    cfg = dataclasses.replace(CFG, horizon_s=3600, sla=())
    tracker, st = ResponseTracker(cfg), ResponseState()
    feed(tracker, st, dm("m1", START), dm("m2", START), reply("r2", START + MIN, "m2"))
    tracker.advance(st, START + HOUR + 1)
    assert st.tracked == 0 and st.open_counts[("x", "dm")] == 0
    view = account_view("acme", st, None)
    assert view["expired_unanswered"] == 1 and view["first_response_seconds"]["count"] == 1


def test_view_splits_by_channel_kind_priority_and_issue_type() -> None:
    tracker, st = ResponseTracker(CFG), ResponseState()
    feed(
        tracker,
        st,
        dm("m1", START, priority="urgent", issue_type="billing"),
        reply("r1", START + MIN, "m1"),
        {**dm("c1", START), "kind": "comment"},
        reply("rc", START + 3 * MIN, "c1"),
    )
    tracker.advance(st, START + HOUR)
    view = account_view("acme", st, START + HOUR)
    assert view["by_kind"]["dm"]["count"] == 1 and view["by_kind"]["comment"]["count"] == 1
    assert view["by_channel"]["x"]["count"] == 2
    assert view["by_priority"]["urgent"]["count"] == 1
    assert view["by_issue_type"] == {
        "billing": view["by_kind"]["dm"],
        "unspecified": view["by_kind"]["comment"],
    }
    assert view["open"] == {"count": 0, "oldest_age_seconds": None}
    assert date.fromisoformat(view["as_of"][:10])

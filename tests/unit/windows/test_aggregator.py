"""pipeline.windows.aggregator: exact window contents, dedup, lateness, closing,
restore, pruning."""

from __future__ import annotations

import itertools
import random
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.model import wire
from pipeline.model.events import KINDS
from pipeline.windows.aggregator import (
    Aggregator,
    AggregatorConfig,
    Delta,
    FinalWindow,
    PartitionState,
    dedup_key,
)
from tests.unit.fixtures import (
    BASE,
    FLUSH_ACCOUNT,
    MIN,
    SEC,
    WALL,
    WEIGHTS,
    Key,
    Run,
    cfg,
    counts,
    ex,
    ia,
    key,
    schema_validator,
)

# -- contents -----------------------------------------------------------------


def test_counts_by_kind_per_account_channel_and_size() -> None:
    r = Run()
    rows = [ia(f"l{i}", BASE + i * SEC) for i in range(3)]
    rows += [ia(f"c{i}", BASE + 10 * SEC + i, "comment") for i in range(2)]
    rows += [ia("s0", BASE + 20 * SEC, "share"), ia("m0", BASE + 21 * SEC, "mention")]
    rows += [ia("d0", BASE + 22 * SEC, "dm")]
    rows += [ia(f"r{i}", BASE + 59_999 - i, "reply") for i in range(2)]
    rows += [ia("ig", BASE + 5 * SEC, channel="ig"), ia("beta", BASE + 5 * SEC, account="beta")]
    rows += [ia("next", BASE + MIN)]  # first instant of the next minute
    r.apply(rows)
    got = r.flush()
    assert {k: v["counts"] for k, v in got.items()} == {
        ("acme", "x", 60, BASE): counts(like=3, comment=2, share=1, mention=1, dm=1, reply=2),
        ("acme", "x", 60, BASE + MIN): counts(like=1),
        ("acme", "x", 300, BASE): counts(like=4, comment=2, share=1, mention=1, dm=1, reply=2),
        ("acme", "ig", 60, BASE): counts(like=1),
        ("acme", "ig", 300, BASE): counts(like=1),
        ("beta", "x", 60, BASE): counts(like=1),
        ("beta", "x", 300, BASE): counts(like=1),
    }


def test_unique_actors_are_distinct_non_null_actor_ids_per_window() -> None:
    r = Run()
    r.apply(
        [
            ia("1", BASE + 1 * SEC, actor="ann"),
            ia("2", BASE + 2 * SEC, actor="ann"),
            ia("3", BASE + 3 * SEC, "comment", actor="bob"),
            ia("4", BASE + 4 * SEC, actor=None),
            ia("5", BASE + 5 * SEC, "reply", actor="agent-7"),
            ia("6", BASE + 65 * SEC, actor="ann"),
            ia("7", BASE + 66 * SEC),
            ia("8", BASE + 5 * SEC, channel="ig"),
        ]
    )
    got = r.flush()
    assert got[("acme", "x", 60, BASE)]["unique_actors"] == 3
    assert got[("acme", "x", 60, BASE + MIN)]["unique_actors"] == 1
    assert got[("acme", "x", 300, BASE)]["unique_actors"] == 3  # ann counted once
    assert got[("acme", "ig", 60, BASE)]["unique_actors"] == 0


def test_weighted_engagement_with_default_weights() -> None:
    r = Run()
    kinds = ["like"] * 3 + ["comment"] * 2 + ["share", "mention", "dm", "reply", "reply"]
    r.apply([ia(f"e{i}", BASE + i * SEC, k) for i, k in enumerate(kinds)])
    got = r.flush()
    # 3*1 + 2*2 + 1*3 + 1*2 + 1*1 + 2*0
    assert got[("acme", "x", 60, BASE)]["weighted_engagement"] == 13.0


def test_weighted_engagement_with_configured_weights_missing_kinds_weigh_zero() -> None:
    r = Run(cfg(weights={"like": 0.5, "share": 10.0}))
    kinds = ["like"] * 3 + ["comment", "share", "dm"]
    r.apply([ia(f"e{i}", BASE + i * SEC, k) for i, k in enumerate(kinds)])
    assert r.flush()[("acme", "x", 60, BASE)]["weighted_engagement"] == 11.5


EXPOSURES = [
    ex(BASE - 30 * SEC, "beta", followers=1000),
    ex(BASE + 30 * SEC, "beta", followers=2000),
    ex(BASE + 60 * SEC, "beta", followers=4000),  # at the end: belongs to the next minute
    ex(BASE + 10 * SEC, "beta", impressions=100, reach=50),
    ex(BASE + 40 * SEC, "beta", impressions=300, reach=150),
]


@pytest.mark.parametrize("order", ["in_order", "reversed", "one_per_batch_reversed"])
def test_rates_by_followers_reach_and_impressions(order: str) -> None:
    r = Run(cfg(lateness_ms=3_600 * SEC))  # nothing here may be too late
    likes = [ia(f"b{i}", BASE + (5 + i) * SEC, account="beta") for i in range(4)]
    likes.append(ia("bc", BASE + 50 * SEC, "comment", account="beta"))  # weighted 6
    if order == "in_order":
        r.apply(EXPOSURES + likes)
    elif order == "reversed":
        r.apply(list(reversed(EXPOSURES)) + likes)
    else:
        for row in reversed(EXPOSURES):
            r.apply([row])
        r.apply(likes)
    got = r.flush()

    first = got[("beta", "x", 60, BASE)]
    assert first["weighted_engagement"] == 6.0
    assert (first["followers"], first["impressions"], first["reach"]) == (2000, 400, 200)
    assert first["rate_by_followers"] == pytest.approx(6 / 2000)
    assert first["rate_by_reach"] == pytest.approx(6 / 200)
    assert first["rate_by_impressions"] == pytest.approx(6 / 400)
    assert first["rate_basis"] == "followers"  # beta uses the default basis
    assert first["engagement_rate"] == first["rate_by_followers"]

    before = got[("beta", "x", 60, BASE - MIN)]  # only the 1000-followers snapshot
    assert before["followers"] == 1000
    assert before["rate_by_followers"] == 0.0
    assert before["impressions"] is None and before["rate_by_impressions"] is None

    second = got[("beta", "x", 60, BASE + MIN)]  # the snapshot taken at the boundary
    assert second["counts"] == counts()
    assert second["followers"] == 4000
    assert second["reach"] is None and second["rate_by_reach"] is None

    five = got[("beta", "x", 300, BASE)]
    assert (five["followers"], five["impressions"], five["reach"]) == (4000, 400, 200)
    assert five["rate_by_followers"] == pytest.approx(6 / 4000)


def test_headline_rate_follows_the_configured_basis() -> None:
    r = Run(cfg(rate_basis={"acme": "impressions", "zed": "reach"}))
    rows = []
    for acct in ("acme", "zed", "beta"):
        rows += [
            ex(BASE + 1 * SEC, acct, followers=100, impressions=1000, reach=500),
            ia(f"{acct}-1", BASE + 2 * SEC, "share", account=acct),  # weighted 3
        ]
    rows.append(ex(BASE + 1 * SEC, "acme", "ig", followers=50))  # no impressions on ig
    rows.append(ia("acme-ig", BASE + 2 * SEC, account="acme", channel="ig"))
    r.apply(rows)
    got = r.flush()
    acme, zed, beta = (got[(a, "x", 60, BASE)] for a in ("acme", "zed", "beta"))
    assert (acme["rate_basis"], acme["engagement_rate"]) == ("impressions", pytest.approx(0.003))
    assert (zed["rate_basis"], zed["engagement_rate"]) == ("reach", pytest.approx(0.006))
    assert (beta["rate_basis"], beta["engagement_rate"]) == ("followers", pytest.approx(0.03))
    acme_ig = got[("acme", "ig", 60, BASE)]
    assert acme_ig["rate_by_followers"] == pytest.approx(1 / 50)
    assert acme_ig["engagement_rate"] is None  # its basis (impressions) is unknown


def test_zero_denominators_give_no_rate() -> None:
    r = Run()
    r.apply(
        [
            ex(BASE + 1 * SEC, "beta", followers=0, impressions=0, reach=0),
            ia("1", BASE + 2 * SEC, account="beta"),
        ]
    )
    got = r.flush()[("beta", "x", 60, BASE)]
    assert (got["followers"], got["impressions"], got["reach"]) == (0, 0, 0)
    assert got["rate_by_followers"] is None
    assert got["rate_by_reach"] is None
    assert got["rate_by_impressions"] is None
    assert got["engagement_rate"] is None


def test_records_validate_against_the_window_schema() -> None:
    validator = schema_validator("window.v1.json")
    r = Run()
    r.apply([*EXPOSURES, ia("1", BASE + 3 * SEC, account="beta", actor="u")])
    got = r.flush()
    assert got
    for record in got.values():
        errors = [e.message for e in validator.iter_errors(orjson.loads(orjson.dumps(record)))]
        assert errors == []


# -- dedup, offsets, lateness ---------------------------------------------------


def test_same_event_id_counts_once_within_and_across_batches() -> None:
    r = Run()
    a1 = r.apply([ia("e1", BASE + SEC), ia("e1", BASE + SEC), ia("e2", BASE + 2 * SEC)])
    assert a1.duplicates == 1
    assert a1.delta is not None and [row[wire.I_ID] for row in a1.delta.rows] == ["e1", "e2"]
    a2 = r.apply([ia("e1", BASE + SEC), ia("e3", BASE + 3 * SEC)])
    assert a2.duplicates == 1
    assert a2.delta is not None and len(a2.delta.rows) == 1
    # the same id with other contents is still the same event: the first one wins
    a3 = r.apply([ia("e2", BASE + 2 * SEC, "comment")])
    assert (a3.duplicates, a3.delta, a3.skipped) == (1, None, False)
    got = r.flush()
    assert got[("acme", "x", 60, BASE)]["counts"] == counts(like=3)


def test_redelivered_exposure_snapshot_counts_once() -> None:
    r = Run()
    snap = ex(BASE + SEC, impressions=100, reach=40)
    a1 = r.apply([snap, ex(BASE + 2 * SEC, impressions=7)])
    a2 = r.apply([ex(BASE + SEC, impressions=100, reach=40)])  # the same snapshot again
    assert (a1.duplicates, a2.duplicates) == (0, 1)
    # another channel at the same instant is a different snapshot
    r.apply([ex(BASE + SEC, channel="instagram", impressions=5)])
    got = r.flush()
    assert got[("acme", "x", 60, BASE)]["impressions"] == 107
    assert got[("acme", "x", 60, BASE)]["reach"] == 40
    assert got[("acme", "instagram", 60, BASE)]["impressions"] == 5


def test_batch_at_or_below_applied_offset_changes_nothing() -> None:
    agg, state = Aggregator(cfg()), PartitionState()
    first = agg.apply_batch(state, [ia("a", BASE + SEC)], 7, WALL)
    assert first.delta is not None and first.delta.offset == 7
    seq_before, windows_before = state.seq, repr(state.windows)
    for offset in (7, 3, -1):
        again = agg.apply_batch(state, [ia(f"x{offset}", BASE + 2 * SEC, "share")], offset, WALL)
        assert again.skipped and again.delta is None and again.duplicates == 0
    assert (state.seq, repr(state.windows), state.applied_offset) == (seq_before, windows_before, 7)
    # the skipped events were not remembered as seen either
    later = agg.apply_batch(state, [ia("x3", BASE + 2 * SEC, "share")], 8, WALL)
    assert later.duplicates == 0 and later.delta is not None


def test_late_events_are_counted_and_marked_late() -> None:
    r = Run()
    r.apply([ia("a", BASE + 50 * SEC)])  # watermark: BASE + 40 s
    applied = r.apply([ia("b", BASE + 30 * SEC), ia("c", BASE + 45 * SEC)])
    assert applied.late_counted == 1
    assert applied.too_late == []
    assert applied.delta is not None and applied.delta.late_idx == [0]
    got = r.flush()
    for size in (60, 300):
        assert got[("acme", "x", size, BASE)]["counts"] == counts(like=3)
        assert got[("acme", "x", size, BASE)]["late_events"] == 1


def test_an_event_exactly_the_allowed_lateness_behind_is_not_late() -> None:
    r = Run()  # lateness 10 s
    r.apply([ia("a", BASE + 50 * SEC)])  # watermark: BASE + 40 s
    on_time = r.apply([ia("b", BASE + 40 * SEC)])
    late = r.apply([ia("c", BASE + 40 * SEC - 1)])
    assert (on_time.late_counted, late.late_counted) == (0, 1)
    assert r.flush()[("acme", "x", 60, BASE)]["late_events"] == 1


def test_events_for_a_final_window_are_too_late_and_not_counted() -> None:
    r = Run()
    r.apply([ia("a", BASE + 10 * SEC)])
    r.apply([ia("b", BASE + 80 * SEC)])  # watermark BASE + 70 s: the first minute is final
    closed = r.close()
    assert [key(fw) for fw in closed] == [("acme", "x", 60, BASE)]
    assert closed[0].record["counts"] == counts(like=1)
    late_rows = [ia("c", BASE + 20 * SEC), ex(BASE + 25 * SEC, impressions=5)]
    applied = r.apply(late_rows)
    assert applied.too_late == late_rows
    assert applied.delta is None and applied.late_counted == 0
    got = r.flush()
    assert ("acme", "x", 60, BASE) not in got  # never published twice
    five = got[("acme", "x", 300, BASE)]
    assert five["counts"] == counts(like=2)  # a and b; c was too late
    assert five["impressions"] is None and five["late_events"] == 0


# -- closing ------------------------------------------------------------------


def test_close_windows_order_is_end_size_account_channel() -> None:
    r = Run()
    r.apply(
        [
            ia("1", BASE + 5 * SEC, account="b"),
            ia("2", BASE + 70 * SEC, account="a", channel="y"),
            ia("3", BASE + 10 * SEC, account="a"),
            ia("4", BASE + 130 * SEC, account="a"),
            ia("5", BASE + 250 * SEC, account="b"),  # a minute that ends with the 5 min
        ]
    )
    r.apply([ia("far", BASE + 86_400 * SEC, account=FLUSH_ACCOUNT)])
    closed = r.close()
    assert [(fw.end_ms - BASE, fw.end_ms - fw.start_ms, *key(fw)[:2]) for fw in closed] == [
        (60 * SEC, MIN, "a", "x"),
        (60 * SEC, MIN, "b", "x"),
        (120 * SEC, MIN, "a", "y"),
        (180 * SEC, MIN, "a", "x"),
        (300 * SEC, MIN, "b", "x"),
        (300 * SEC, 5 * MIN, "a", "x"),
        (300 * SEC, 5 * MIN, "a", "y"),
        (300 * SEC, 5 * MIN, "b", "x"),
    ]
    assert r.close() == []  # each window exactly once
    later = r.close(WALL + 3_600 * SEC)  # an hour idle: only the flush event's windows remain
    assert {fw.record["account_id"] for fw in later} == {FLUSH_ACCOUNT}


def test_each_window_is_emitted_once_and_only_when_final() -> None:
    config = cfg()
    r = Run(config)
    rng = random.Random(5)
    emitted: list[Key] = []
    for step in range(40):
        ts = BASE + step * 10 * SEC + rng.randrange(-20 * SEC, 1)
        acct = rng.choice(["a", "b"])
        r.apply([ia(f"e{step}", ts, account=acct)])
        closed = r.close()
        wm = r.state.watermark.floor_ms
        assert wm is not None
        for fw in closed:
            assert fw.end_ms + config.grace_ms <= wm
        for k in r.state.windows:
            assert k[3] + k[2] + config.grace_ms > wm  # what stays open is not final
        emitted += [key(fw) for fw in closed]
    emitted += list(r.flush())
    assert len(emitted) == len(set(emitted))


def test_final_window_bounds_and_newest_broker_time() -> None:
    r = Run()
    r.apply(
        [
            ia("1", BASE + 1 * SEC, broker_ms=BASE + 2_000),
            ia("2", BASE + 2 * SEC, broker_ms=BASE + 9_000),
            ia("3", BASE + 3 * SEC, broker_ms=BASE + 4_000),
        ]
    )
    r.apply([ia("far", BASE + 86_400 * SEC, account=FLUSH_ACCOUNT)])
    first = r.close()[0]
    assert (first.start_ms, first.end_ms) == (BASE, BASE + MIN)
    assert first.record["window_start"] == "2026-11-21T10:00:00.000Z"
    assert first.record["window_end"] == "2026-11-21T10:01:00.000Z"
    assert first.record["size_seconds"] == 60
    assert first.newest_broker_ms == BASE + 9_000


def test_nothing_closes_before_any_event() -> None:
    r = Run()
    assert r.close(WALL + 3_600 * SEC) == []


def test_delta_reports_the_largest_window_end_with_non_nested_sizes() -> None:
    # 60 s and 90 s windows: at 10:04:00 the 90 s window [10:03:00, 10:04:30) ends
    # before the 60 s window [10:04:00, 10:05:00)
    r = Run(cfg(sizes_ms=(MIN, 90 * SEC)))
    applied = r.apply([ia("1", BASE + 240 * SEC)])
    assert applied.delta is not None
    assert applied.delta.max_window_end_ms == BASE + 300 * SEC
    assert applied.delta.max_ts_ms == BASE + 240 * SEC
    got = r.flush()
    assert set(got) == {("acme", "x", 60, BASE + 240 * SEC), ("acme", "x", 90, BASE + 180 * SEC)}


def test_delta_json_round_trip() -> None:
    r = Run()
    r.apply([ia("a", BASE + 50 * SEC)])
    applied = r.apply([ia("b", BASE + 1 * SEC, actor="u"), ex(BASE + 2 * SEC, followers=3)])
    d = applied.delta
    assert d is not None and d.late_idx == [0, 1]
    back = Delta.from_json(orjson.loads(orjson.dumps(d.to_json())))
    assert back == d


# -- restore ------------------------------------------------------------------


@dataclass
class Node:
    """One partition run the way the aggregator agent runs it: apply -> changelog delta ->
    close -> publish -> marker -> prune (tombstones). `store` is the changelog."""

    config: AggregatorConfig
    store: dict[str, Any] = field(default_factory=lambda: {"deltas": {}, "marker": None})
    published: list[FinalWindow] = field(default_factory=list)
    closing_offsets: list[int] = field(default_factory=list)
    restore_order_seed: int | None = None

    def __post_init__(self) -> None:
        self.agg = Aggregator(self.config)
        self.state = PartitionState()
        if self.store["deltas"] or self.store["marker"]:
            deltas = [Delta.from_json(orjson.loads(v)) for v in self.store["deltas"].values()]
            if self.restore_order_seed is not None:
                random.Random(self.restore_order_seed).shuffle(deltas)
            raw = self.store["marker"]
            self.agg.restore(self.state, deltas, orjson.loads(raw) if raw else {})

    def step(self, rows: list[wire.Row], offset: int, wall: int, crash_before_marker: bool = False):
        applied = self.agg.apply_batch(self.state, rows, offset, wall)
        if applied.delta is not None:
            d = applied.delta
            assert d.seq not in self.store["deltas"]
            self.store["deltas"][d.seq] = orjson.dumps(d.to_json())
        records = self.agg.close_windows(self.state, wall)
        self.published += records
        if records:
            self.closing_offsets.append(offset)
        if records and not crash_before_marker:
            if self.agg.needs_snapshot(self.state):  # the agent snapshots response state
                self.state.responses.snap_seq = self.state.seq
            self.store["marker"] = orjson.dumps(self.agg.marker(self.state))
            for seq in self.agg.prune(self.state):
                del self.store["deltas"][seq]  # KeyError if a seq were returned twice
        return applied


def restore_scenario(seed: int = 1) -> list[list[wire.Row]]:
    """20 minutes of traffic for two accounts, followers known only from one early snapshot,
    redeliveries, reordering and a few late events; the last batch closes everything."""
    rng = random.Random(seed)
    batches: list[list[wire.Row]] = [
        [ex(BASE + 1 * SEC, "beta", followers=5000), ex(BASE + 2 * SEC, "acme", followers=800)]
    ]
    sent: list[wire.Row] = []
    n = 0
    for minute in range(20):
        for _ in range(rng.randrange(2, 5)):
            batch = []
            for _ in range(rng.randrange(1, 6)):
                if sent and rng.random() < 0.15:
                    batch.append(rng.choice(sent))  # redelivery
                    continue
                ts = BASE + minute * MIN + rng.randrange(0, MIN) - rng.choice([0, 0, 0, 12 * SEC])
                row = ia(
                    f"ev{n}",
                    ts,
                    rng.choice(KINDS),
                    rng.choice(["acme", "beta"]),
                    rng.choice(["x", "ig"]),
                    rng.choice(["u1", "u2", "u3", None]),
                )
                n += 1
                sent.append(row)
                batch.append(row)
            if rng.random() < 0.3:
                acct = rng.choice(["acme", "beta"])
                batch.append(ex(BASE + minute * MIN + 30 * SEC, acct, "x", None, 100, 40))
            batches.append(batch)
    batches.append([ia("far", BASE + 86_400 * SEC, account=FLUSH_ACCOUNT)])
    return batches


RESTORE_CFG = cfg(horizon_ms=400 * SEC, max_ids=100_000)


def run_never_crashed(batches: list[list[wire.Row]]) -> Node:
    node = Node(RESTORE_CFG)
    for i, b in enumerate(batches):
        node.step(b, i, WALL + i)
    return node


@pytest.mark.parametrize("crash_after", [1, 5, 23, 40, 57])
def test_restore_after_crash_publishes_exactly_what_a_never_crashed_run_does(
    crash_after: int,
) -> None:
    batches = restore_scenario()
    assert crash_after < len(batches) - 1
    reference = run_never_crashed(batches)

    first = Node(RESTORE_CFG)
    for i, b in enumerate(batches[:crash_after]):
        first.step(b, i, WALL + i)
    second = Node(RESTORE_CFG, store=first.store, restore_order_seed=crash_after)
    for i, b in enumerate(batches[crash_after:], start=crash_after):
        second.step(b, i, WALL + i)

    combined = first.published + second.published
    assert [key(fw) for fw in combined] == [key(fw) for fw in reference.published]
    assert [fw.record for fw in combined] == [fw.record for fw in reference.published]
    # windows published before the crash are not published again
    assert not {key(fw) for fw in first.published} & {key(fw) for fw in second.published}


def test_restore_scenario_exercises_pruning_and_sparse_followers() -> None:
    """Guards the scenario above: deltas holding the only followers snapshot get pruned
    before late crash points, and windows after them still report followers."""
    batches = restore_scenario()
    node = Node(RESTORE_CFG)
    for i, b in enumerate(batches[:57]):
        node.step(b, i, WALL + i)
    assert 1 not in node.store["deltas"]  # the snapshot's delta was tombstoned
    late = [
        fw.record
        for fw in run_never_crashed(batches).published
        if fw.start_ms > BASE + 15 * MIN and fw.record["channel"] == "x"
    ]
    assert late
    assert {(r["account_id"], r["followers"]) for r in late} == {("acme", 800), ("beta", 5000)}


def test_restore_after_windows_were_published_but_before_the_marker_republishes_them() -> None:
    batches = restore_scenario(seed=3)
    reference = run_never_crashed(batches)
    crash_at = next(i for i in reference.closing_offsets if i >= 30)  # a batch that closes windows
    first = Node(RESTORE_CFG)
    for i, b in enumerate(batches[:crash_at]):
        first.step(b, i, WALL + i)
    # this batch closes windows: they are sent, then the worker dies before the marker
    republished_expected = len(first.published)
    first.step(batches[crash_at], crash_at, WALL + crash_at, crash_before_marker=True)
    in_flight = first.published[republished_expected:]
    assert in_flight, "the crash batch must close at least one window"
    second = Node(RESTORE_CFG, store=first.store)
    for i, b in enumerate(batches[crash_at + 1 :], start=crash_at + 1):
        second.step(b, i, WALL + i)
    # the in-flight windows come again, identical (same contents -> same alert ids)
    assert [fw.record for fw in second.published[: len(in_flight)]] == [
        fw.record for fw in in_flight
    ]
    deduped = first.published + second.published[len(in_flight) :]
    assert [fw.record for fw in deduped] == [fw.record for fw in reference.published]


def test_restored_quiet_partition_still_closes_by_idle_advance() -> None:
    config = cfg()
    node = Node(config)
    node.step([ia("a", BASE + 10 * SEC)], 0, WALL)  # watermark BASE + 0 s: nothing final
    assert node.published == []
    restored = Node(config, store=node.store)
    agg, state = restored.agg, restored.state
    assert agg.close_windows(state, WALL + 3_600 * SEC) == []  # restart: idle counts from here
    assert agg.close_windows(state, WALL + 3_600 * SEC + 64 * SEC) == []
    closed = agg.close_windows(state, WALL + 3_600 * SEC + 65 * SEC)  # BASE + 65 s
    assert [key(fw) for fw in closed] == [("acme", "x", 60, BASE)]


# -- pruning and bounds -------------------------------------------------------


def test_prune_returns_a_delta_once_its_windows_are_emitted_and_its_ids_past_horizon() -> None:
    config = cfg(horizon_ms=400 * SEC)
    agg, state = Aggregator(config), PartitionState()
    assert agg.apply_batch(state, [ia("old", BASE + 10 * SEC)], 0, WALL).delta is not None
    assert agg.close_windows(state, WALL) == []
    assert agg.prune(state) == []  # nothing emitted yet

    agg.apply_batch(state, [ia("mid", BASE + 400 * SEC)], 1, WALL)  # watermark BASE + 390 s
    assert {key(fw) for fw in agg.close_windows(state, WALL)} == {
        ("acme", "x", 60, BASE),
        ("acme", "x", 300, BASE),
    }
    assert agg.prune(state) == []  # emitted, but "old" is still within the horizon
    assert dedup_key(ia("old", 0)) in state.dedup

    # watermark BASE + 475 s: the horizon passes the end of "old"'s minute of event time
    agg.apply_batch(state, [ia("new", BASE + 485 * SEC)], 2, WALL)
    agg.close_windows(state, WALL)
    # response state still needs the delta until a snapshot covers it
    assert agg.needs_snapshot(state) and agg.prune(state) == []
    state.responses.snap_seq = state.seq
    assert not agg.needs_snapshot(state)
    assert agg.prune(state) == [1]
    assert dedup_key(ia("old", 0)) not in state.dedup and dedup_key(ia("mid", 0)) in state.dedup
    assert agg.prune(state) == []  # only once
    # a redelivery of the forgotten id is too late, not counted a second time
    again = agg.apply_batch(state, [ia("old", BASE + 10 * SEC)], 3, WALL)
    assert len(again.too_late) == 1 and again.delta is None


def test_prune_keeps_deltas_of_windows_not_yet_emitted() -> None:
    agg, state = Aggregator(cfg(horizon_ms=0)), PartitionState()
    agg.apply_batch(state, [ia("a", BASE + 50 * SEC)], 0, WALL)
    agg.apply_batch(state, [ia("b", BASE + 62 * SEC)], 1, WALL)  # watermark BASE + 52 s
    assert agg.close_windows(state, WALL) == []  # within grace: nothing final
    assert agg.prune(state) == []  # ts past the horizon, but its windows are open


def test_dedup_memory_is_bounded_by_max_ids() -> None:
    agg, state = Aggregator(cfg(max_ids=50)), PartitionState()
    for b in range(10):
        rows = [ia(f"id{b}-{i}", BASE + b * 100 + i) for i in range(30)]
        agg.apply_batch(state, rows, b, WALL)
        agg.close_windows(state, WALL)
        assert agg.prune(state) == []  # no window is final: every delta stays
        assert len(state.dedup) <= 50
    # the oldest minute's ids went first, the newest are all held
    assert all(dedup_key(ia(f"id9-{i}", 0)) in state.dedup for i in range(30))
    assert dedup_key(ia("id0-0", 0)) not in state.dedup
    # the most recent ids are still caught
    assert agg.apply_batch(state, [ia("id9-29", BASE + 929)], 10, WALL).duplicates == 1


# -- property: equal to an offline computation ---------------------------------

ACCOUNTS = ["acme", "beta", "cara"]
CHANNELS = ["x", "ig"]
ACTORS = ["u1", "u2", "u3", "u4", None]


@st.composite
def traffic(draw: st.DrawFn) -> tuple[list[list[wire.Row]], int]:
    n = draw(st.integers(min_value=1, max_value=40))
    unique = [
        ia(
            f"e{i}",
            BASE + draw(st.integers(min_value=0, max_value=4 * MIN)),
            draw(st.sampled_from(KINDS)),
            draw(st.sampled_from(ACCOUNTS)),
            draw(st.sampled_from(CHANNELS)),
            draw(st.sampled_from(ACTORS)),
        )
        for i in range(n)
    ]
    dups = draw(st.lists(st.sampled_from(unique), max_size=15))
    rows = draw(st.permutations(unique + dups))
    cuts = sorted(draw(st.sets(st.integers(min_value=1, max_value=max(1, len(rows) - 1)))))
    bounds = [0, *cuts, len(rows)]
    batches = [rows[a:b] for a, b in itertools.pairwise(bounds) if a < b]
    lateness_ms = draw(st.sampled_from([0, 5 * SEC, 30 * SEC]))
    return batches, lateness_ms


@settings(max_examples=150, deadline=None)
@given(traffic(), st.sampled_from([(MIN, 5 * MIN), (MIN,), (30 * SEC, 90 * SEC, 5 * MIN)]))
def test_final_windows_equal_an_offline_computation(
    data: tuple[list[list[wire.Row]], int], sizes_ms: tuple[int, ...]
) -> None:
    batches, lateness_ms = data
    r = Run(cfg(sizes_ms=sizes_ms, lateness_ms=lateness_ms))

    # offline: group unique events by (account, channel, size, floor(ts / size)); an event is
    # late when it is behind the newest event of earlier batches minus the lateness
    expected: dict[Key, dict[str, Any]] = defaultdict(
        lambda: {"counts": counts(), "actors": set(), "weighted": 0.0, "late": 0}
    )
    seen: set[str] = set()
    newest: int | None = None
    for batch in batches:
        batch_newest = newest
        for row in batch:
            event_id, ts = row[wire.I_ID], row[wire.I_TS]
            if event_id in seen:
                continue
            seen.add(event_id)
            late = newest is not None and ts < newest - lateness_ms
            batch_newest = ts if batch_newest is None else max(batch_newest, ts)
            for size in sizes_ms:
                w = expected[
                    (row[wire.I_ACCOUNT], row[wire.I_CHANNEL], size // 1000, (ts // size) * size)
                ]
                w["counts"][row[wire.I_KIND]] += 1
                if row[wire.I_ACTOR] is not None:
                    w["actors"].add(row[wire.I_ACTOR])
                w["weighted"] += WEIGHTS[row[wire.I_KIND]]
                w["late"] += late
        newest = batch_newest
        applied = r.apply(batch)
        assert applied.too_late == []

    got = r.flush()
    assert set(got) == set(expected)
    for k, want in expected.items():
        rec = got[k]
        assert rec["counts"] == want["counts"], k
        assert rec["unique_actors"] == len(want["actors"]), k
        assert rec["weighted_engagement"] == pytest.approx(want["weighted"]), k
        assert rec["late_events"] == want["late"], k


def test_prune_drops_cooldowns_that_can_no_longer_silence_a_window() -> None:
    agg = Aggregator(cfg(max_cooldown_ms=2 * MIN, lateness_ms=0, grace_ms=0))
    state = PartitionState()
    state.cooldowns = {"busy|acme|x": BASE + MIN, "busy|globex|x": BASE + 20 * MIN}
    agg.apply_batch(state, [ia("a", BASE + 20 * MIN)], 0, WALL)
    agg.close_windows(state, WALL)
    agg.prune(state)
    # acme's ended at BASE+1m; +2m cooldown < the earliest window still to come
    assert state.cooldowns == {"busy|globex|x": BASE + 20 * MIN}


def test_closing_in_bounded_steps_publishes_everything_once_and_keeps_late_rows() -> None:
    agg = Aggregator(cfg(lateness_ms=0, grace_ms=0, sizes_ms=(MIN,)))
    state = PartitionState()
    agg.apply_batch(state, [ia(f"e{m}", BASE + m * MIN + SEC) for m in range(10)], 0, WALL)
    agg.apply_batch(state, [ia("far", BASE + 60 * MIN)], 1, WALL)
    first = agg.close_windows(state, WALL, max_windows=3)
    assert [fw.start_ms for fw in first] == [BASE, BASE + MIN, BASE + 2 * MIN]
    assert state.emitted_through_ms == BASE + 3 * MIN
    # a row for a final but not yet published window still counts
    late = agg.apply_batch(state, [ia("late", BASE + 5 * MIN + 2 * SEC)], 2, WALL)
    assert late.too_late == []
    # and one for a published window is too late
    assert len(agg.apply_batch(state, [ia("old", BASE + 2 * SEC)], 3, WALL).too_late) == 1
    rest = []
    while batch := agg.close_windows(state, WALL, max_windows=3):
        rest += batch
    starts = [fw.start_ms for fw in first + rest]
    assert starts == [BASE + m * MIN for m in range(10)]
    by_start = {fw.start_ms: fw.record["counts"]["like"] for fw in rest}
    assert by_start[BASE + 5 * MIN] == 2


def test_prune_keeps_ids_and_followers_of_final_windows_not_yet_published() -> None:
    """After a bounded close the watermark is far ahead of what was published: a
    duplicate for a pending window must still be recognised, and the window keeps
    its followers level."""
    agg = Aggregator(cfg(lateness_ms=0, grace_ms=0, sizes_ms=(MIN,), horizon_ms=2 * MIN))
    state = PartitionState()
    rows = [ex(BASE, followers=1000)]
    rows += [ia(f"a{m}", BASE + m * MIN + SEC) for m in range(40)]
    agg.apply_batch(state, rows, 0, WALL)
    agg.apply_batch(state, [ia("far", BASE + 60 * MIN)], 1, WALL)
    agg.close_windows(state, WALL, max_windows=2)
    agg.prune(state)
    assert agg.apply_batch(state, [ia("a30", BASE + 30 * MIN + SEC)], 2, WALL).duplicates == 1
    published = []
    while batch := agg.close_windows(state, WALL, max_windows=2):
        published += batch
        agg.prune(state)
    w30 = next(fw for fw in published if fw.start_ms == BASE + 30 * MIN)
    assert w30.record["counts"]["like"] == 1
    assert len(published) == 38 and all(fw.record["followers"] == 1000 for fw in published)

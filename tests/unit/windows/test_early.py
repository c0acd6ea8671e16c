"""pipeline.windows.early through the partition processor: alerts raised while their
window is open are the decisions the close gives, with the same ids, published once."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.config.settings import ThresholdRule
from pipeline.detection.series import Detection
from pipeline.detection.settings import DetectionSettings
from pipeline.durability.processor import ALERT, WINDOW, PartitionProcessor, Publish
from pipeline.durability.restore import Restored
from pipeline.responses.settings import ResponseSettings
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows import thresholds
from pipeline.windows.aggregator import Aggregator, PartitionState
from pipeline.windows.early import EarlyAlerts
from pipeline.windows.state import WindowAgg
from tests.unit.fixtures import BASE, MIN, SEC, WALL, WEIGHTS, cfg, ia

P = 0


class Feed:
    """One partition of a processor, fed batch by batch, a close due at every batch."""

    def __init__(self, rules: tuple[ThresholdRule, ...], early: bool = True, **over: Any) -> None:
        tracker = ResponseTracker(ResponseSettings())
        detection = Detection(DetectionSettings(series=()))
        aggregator = Aggregator(cfg(**over))
        self.proc = PartitionProcessor(aggregator, tracker, detection, rules, early=early)
        self.state = PartitionState()
        self.offset, self.wall = -1, WALL
        self.published: list[Publish] = []

    def batch(self, *rows: Any) -> list[dict[str, Any]]:
        """The alerts this batch's step published."""
        self.offset += 1
        self.wall += 300
        step = self.proc.batch(P, self.state, self.offset, list(rows), None, self.wall, 0.0)
        pubs = [e for e in step.effects if isinstance(e, Publish)]
        self.published += pubs
        return [orjson.loads(e.value) for e in pubs if e.topic == ALERT]

    def windows(self) -> list[dict[str, Any]]:
        return [orjson.loads(e.value) for e in self.published if e.topic == WINDOW]


def likes(prefix: str, *seconds: int, account: str = "acme", kind: str = "like") -> list[Any]:
    return [ia(f"{prefix}{s}", BASE + s * SEC, kind=kind, account=account) for s in seconds]


def test_a_threshold_without_cooldown_is_raised_by_the_row_that_crosses_it() -> None:
    rule = ThresholdRule("busy", "volume", "above", 5, window_s=60, cooldown_s=0)
    feed = Feed((rule,))
    assert feed.batch(*likes("a", 1, 2, 3, 4, 5)) == []
    [alert] = feed.batch(*likes("b", 20))  # the sixth
    assert (
        alert["early"] is True and alert["observed"] == 6.0 and alert["type"] == "threshold_above"
    )
    assert "while the window was still open" in alert["message"]
    assert not [w for w in feed.windows() if w["window_start"] == alert["window_start"]]
    assert feed.batch(*likes("c", 30, 40)) == []  # more rows: nothing again
    assert feed.batch(*likes("d", 125)) == []  # the close: the window, not the alert again
    [window] = [w for w in feed.windows() if w["window_start"] == alert["window_start"]]
    assert window["counts"]["like"] == 8
    # the id and decision the close would have given
    [closing] = thresholds.evaluate(window, BASE, BASE + MIN, (rule,), {})
    assert closing["alert_id"] == alert["alert_id"] and closing["type"] == alert["type"]
    assert closing["observed"] == 8.0 and "early" not in closing


def test_a_rule_with_a_cooldown_waits_until_the_windows_before_are_final() -> None:
    rule = ThresholdRule("busy", "volume", "above", 5, window_s=60, cooldown_s=60)
    feed = Feed((rule,))
    # Six in the first seconds: the window before may still get rows (and alert, which
    # would silence this one), so nothing yet.
    assert feed.batch(*likes("a", 1, 2, 3, 4, 5, 6)) == []
    # A row 16 s in moves the watermark past the previous window's end and grace: the
    # close makes it final and this window's decision certain.
    [alert] = feed.batch(*likes("b", 16))
    assert alert["early"] and alert["observed"] == 7.0
    assert feed.state.early  # recorded, so the close skips it
    feed.batch(*likes("c", 200))
    assert not feed.state.early  # settled by the close
    assert [a["alert_id"] for a in feed.batch()] == []


def test_a_cooldown_silences_early_alerts_as_it_silences_closing_ones() -> None:
    rule = ThresholdRule("busy", "volume", "above", 2, window_s=60, cooldown_s=120)
    batches = [
        likes("a", 1, 2, 3, 16),  # window 0: alerts
        likes("b", 61, 62, 63, 76),  # window 1: 60 s < 60 s + 120 s: silenced
        likes("c", 121, 122, 123, 136),  # window 2: silenced
        likes("d", 181, 182, 183, 196),  # window 3: 180 s, the cooldown is over
        likes("e", 400),
    ]
    got = {}
    for early in (True, False):
        feed = Feed((rule,), early=early)
        got[early] = [[a["window_start"][11:19] for a in feed.batch(*b)] for b in batches]
    assert got[True] == [["10:00:00"], [], [], ["10:03:00"], []]
    assert got[False] == [[], ["10:00:00"], [], [], ["10:03:00"]]


def test_only_decisions_that_can_only_grow_are_raised_early() -> None:
    rules = (
        ThresholdRule("quiet", "volume", "below", 100, window_s=60, cooldown_s=0),
        ThresholdRule("rate", "engagement_rate", "above", 0.0, window_s=60, cooldown_s=0),
        ThresholdRule("loud", "count.like", "above", 1, window_s=60, cooldown_s=0),
        ThresholdRule("crowd", "unique_actors", "above", 1, window_s=60, cooldown_s=0),
        ThresholdRule("weighty", "weighted_engagement", "above", 1, window_s=60, cooldown_s=0),
    )
    early = EarlyAlerts(rules, Detection(DetectionSettings()), cfg())
    assert [r.name for r in early.rules[MIN]] == ["loud", "crowd", "weighty"]
    # a negative weight: weighted engagement may fall, and so may the engagement series
    negative = EarlyAlerts(rules, Detection(DetectionSettings()), cfg(weights={"like": -1.0}))
    assert [r.name for r in negative.rules[MIN]] == ["loud", "crowd"]
    assert "engagement" not in negative.series and "mentions" in negative.series
    assert not EarlyAlerts((), Detection(DetectionSettings(series=())), cfg()).enabled


def test_running_values_are_the_final_record_s_values() -> None:
    agg = WindowAgg(counts={"like": 3, "reply": 2, "comment": 1}, actors={"u1", "u2"})
    state = PartitionState()
    state.windows[("acme", "x", MIN, BASE)] = agg
    record = Aggregator(cfg()).record(state, ("acme", "x", MIN, BASE), agg)
    from pipeline.windows.early import running_value

    for metric in ("volume", "count.like", "count.reply", "unique_actors", "weighted_engagement"):
        want = thresholds.observed_value(record, metric)
        assert running_value(agg, metric, WEIGHTS) == want, metric
    assert running_value(agg, "engagement_rate", WEIGHTS) is None


def test_a_restored_partition_does_not_raise_again_what_its_marker_names() -> None:
    rule = ThresholdRule("busy", "volume", "above", 2, window_s=60, cooldown_s=0)
    feed = Feed((rule,))
    [alert] = feed.batch(*likes("a", 1, 2, 3))
    marker = feed.proc.aggregator.marker(feed.state)
    assert alert["alert_id"] in marker["early"]
    # rebuilt from the marker and the batch's delta
    again = Feed((rule,))
    agg = again.proc.aggregator
    rebuilt = PartitionState()
    from pipeline.windows.aggregator import Delta

    delta = Delta(1, 0, likes("a", 1, 2, 3), [], BASE + 5 * MIN, BASE + 3 * SEC)
    agg.restore(rebuilt, [delta], marker)
    again.state, again.offset = rebuilt, 0
    again.proc.restored(P, Restored(rebuilt), 0)
    assert again.batch(*likes("b", 4)) == []  # re-checked on restore: already raised
    assert again.batch(*likes("c", 200)) == []  # and the close skips it


def test_a_restored_partition_raises_what_the_crash_left_unpublished() -> None:
    rule = ThresholdRule("busy", "volume", "above", 2, window_s=60, cooldown_s=0)
    feed = Feed((rule,))
    [alert] = feed.batch(*likes("a", 1, 2, 3))
    # The delta was durable, the marker naming the alert was not.
    agg = feed.proc.aggregator
    from pipeline.windows.aggregator import Delta

    rebuilt = PartitionState()
    delta = Delta(1, 0, likes("a", 1, 2, 3), [], BASE + 5 * MIN, BASE + 3 * SEC)
    agg.restore(rebuilt, [delta], {})
    again = Feed((rule,))
    again.state = rebuilt
    again.proc.restored(P, Restored(rebuilt), 0)
    [same] = again.batch()  # the batch re-read at offset 0 is skipped; decided again
    same.pop("emitted_at")
    alert.pop("emitted_at")
    assert same == alert


events = st.lists(
    st.tuples(
        st.integers(0, 599),  # second of event time
        st.sampled_from(["like", "like", "comment", "reply", "mention"]),
        st.sampled_from(["acme", "globex"]),
        st.sampled_from(["x", "instagram"]),
        st.integers(0, 5),  # actor
    ),
    min_size=1,
    max_size=120,
)
rules = st.lists(
    st.builds(
        ThresholdRule,
        name=st.sampled_from(["r1", "r2", "r3"]),
        metric=st.sampled_from(["volume", "count.like", "unique_actors", "weighted_engagement"]),
        op=st.sampled_from(["above", "above", "below"]),
        value=st.integers(0, 8).map(float),
        window_s=st.sampled_from([60, 300]),
        cooldown_s=st.sampled_from([0, 60, 120, 600]),
    ),
    min_size=1,
    max_size=3,
    unique_by=lambda r: r.name,
)


@settings(max_examples=150, deadline=None)
@given(events, rules, st.lists(st.integers(1, 15), min_size=1, max_size=40), st.randoms())
def test_early_and_closing_alerts_are_the_same_decisions(
    evs: list[tuple[int, str, str, str, int]],
    rule_list: list[ThresholdRule],
    sizes: list[int],
    rnd: Any,
) -> None:
    """Any events, in any batches, some delayed: the same alerts (ids, types,
    windows) with early alerts on as off, each published once, and the same windows."""
    # mostly in order; some rows delayed past the lateness, some past the grace too
    evs = sorted(evs, key=lambda e: e[0] + (rnd.randint(0, 90) if rnd.random() < 0.3 else 0))
    rows = [
        ia(f"e{i}", BASE + s * SEC, kind=k, account=a, channel=c, actor=f"u{u}")
        for i, (s, k, a, c, u) in enumerate(evs)
    ]
    batches, i = [], 0
    while i < len(rows):
        n = sizes[len(batches) % len(sizes)]
        batches.append(rows[i : i + n])
        i += n
    batches.append([ia("flush", BASE + 3_600 * SEC, account="zz")])
    got = {}
    for early in (True, False):
        feed = Feed(tuple(rule_list), early=early)
        alerts = [a for b in batches for a in feed.batch(*b)]
        alerts = [a for a in alerts if a["account_id"] != "zz"]  # the flush's own window
        ids = [a["alert_id"] for a in alerts]
        assert len(ids) == len(set(ids)), "an alert published twice"
        if not early:
            assert not any(a.get("early") for a in alerts)
        got[early] = (
            {a["alert_id"]: (a["type"], a["window_start"], a["channel"]) for a in alerts},
            sorted(orjson.dumps(w).decode() for w in feed.windows()),
        )
    assert got[True] == got[False]

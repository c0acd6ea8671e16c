"""The per-partition detection bank: series from final windows, every window fed in
order (empty ones as 0), idempotent re-closes, share series, alert records."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson

from pipeline.detection.detector import BURST, DOWN, RANGE, UP, DetectorSettings, Step
from pipeline.detection.series import AccountSeries, Detection, Found, build_alert
from pipeline.detection.settings import DetectionSettings
from pipeline.windows.arithmetic import rfc3339

STEP = 300_000
DAY0 = 1_767_571_200_000  # 2026-01-05T00:00:00Z
ALERT_SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "schemas" / "alert.v1.json").read_text()
)


def rec(account: str, start: int, likes: int = 0, mentions: int = 0, **extra: Any) -> dict:
    return {
        "account_id": account,
        "channel": extra.pop("channel", "x"),
        "window_start": rfc3339(start),
        "size_seconds": 300,
        "counts": {"like": likes, "mention": mentions},
        "weighted_engagement": likes + 2.0 * mentions,
        "rate_basis": "followers",
        "followers": extra.pop("followers", None),
        **extra,
    }


def through(start: int) -> int:
    """The emitted-through watermark that makes the window at `start` the newest final."""
    return start + STEP


def test_every_tracked_account_is_fed_every_final_window_in_order_empty_as_zero() -> None:
    det = Detection(DetectionSettings(series=("engagement",)))
    accounts: dict[str, AccountSeries] = {}
    det.advance(accounts, [rec("a", DAY0, likes=10)], through(DAY0), 0)
    assert accounts["a"].through_ms == DAY0
    # three windows later, with no record for "a": fed three zeros
    adv = det.advance(accounts, [rec("b", DAY0 + 3 * STEP, likes=4)], through(DAY0 + 3 * STEP), 0)
    assert accounts["a"].through_ms == DAY0 + 3 * STEP
    assert accounts["b"].through_ms == DAY0 + 3 * STEP
    assert adv.changed == {"a", "b"}
    st = accounts["a"].states["engagement"]
    assert st.last_start_ms == DAY0 + 3 * STEP
    assert st.level is not None and st.level < 2 * (10 + 0.375) ** 0.5  # zeros pulled it down


def test_a_window_is_never_fed_twice() -> None:
    det = Detection(DetectionSettings(series=("engagement",)))
    accounts: dict[str, AccountSeries] = {}
    det.advance(accounts, [rec("a", DAY0, likes=10)], through(DAY0), 0)
    before = copy.deepcopy(accounts["a"].to_json())
    adv = det.advance(accounts, [rec("a", DAY0, likes=10)], through(DAY0), 0)  # a re-close
    assert accounts["a"].to_json() == before and not adv.changed


def test_state_round_trips_through_json() -> None:
    det = Detection(DetectionSettings())
    accounts: dict[str, AccountSeries] = {}
    for i in range(50):
        det.advance(accounts, [rec("a", DAY0 + i * STEP, likes=i % 7)], through(DAY0 + i * STEP), 0)
    raw = orjson.dumps(accounts["a"].to_json())
    assert AccountSeries.from_json(orjson.loads(raw)).to_json() == accounts["a"].to_json()


def test_a_silent_account_is_forgotten() -> None:
    det = Detection(DetectionSettings(series=("engagement",), forget_after_s=3600))
    accounts: dict[str, AccountSeries] = {}
    det.advance(accounts, [rec("a", DAY0, likes=10)], through(DAY0), 0)
    adv = det.advance(accounts, [], through(DAY0 + 12 * STEP), 0)  # silent for 1 h
    assert "a" in accounts and not adv.forgotten
    adv = det.advance(accounts, [], through(DAY0 + 13 * STEP), 0)
    assert "a" not in accounts and adv.forgotten == {"a"}


def test_channels_are_summed_and_other_sizes_ignored() -> None:
    det = Detection(DetectionSettings())
    w = {"account_id": "a", "channel": "x"}
    values = det.values("a", None, {}, DAY0)
    assert values["engagement"] == 0.0 and values["engagement_rate"] is None
    accounts: dict[str, AccountSeries] = {}
    one_min = {**rec("a", DAY0, likes=99), "size_seconds": 60, **w}
    det.advance(accounts, [one_min], through(DAY0), 0)
    assert accounts == {}  # the 1-minute window is not the detectors' size


def test_share_series_need_enough_events() -> None:
    det = Detection(
        DetectionSettings(min_events=5, competitors={"brand": ("rival",)}),
    )
    records = [
        rec("brand", DAY0, likes=6, mentions=3, followers=1000, sentiment={"scored": 4,
            "negative": 2}),
        rec("brand", DAY0, channel="ig", likes=2, followers=1000,
            sentiment={"scored": 2, "negative": 1}),
        rec("rival", DAY0, mentions=9),
    ]  # fmt: skip
    from pipeline.detection.series import _collect

    windows = _collect(records, 300)
    v = det.values("brand", windows["brand"][DAY0], windows, DAY0)
    assert v["engagement"] == 6 + 2 * 3 + 2
    assert v["mentions"] == 3
    assert v["engagement_rate"] == (6 + 6 + 2) / 2000
    assert v["negative_share"] == 3 / 6
    assert v["share_of_voice"] == 3 / 12
    few = DetectionSettings(min_events=13, competitors={"brand": ("rival",)})
    v = Detection(few).values("brand", windows["brand"][DAY0], windows, DAY0)
    assert v["share_of_voice"] is None and v["negative_share"] is None
    assert v["engagement_rate"] is None  # 11 events < 13


def test_competitors_are_placed_with_their_brand() -> None:
    cfg = DetectionSettings(competitors={"brand": ("r1", "r2")})
    assert cfg.homes() == {"r1": "brand", "r2": "brand"}


def _spiky_account(det: Detection) -> tuple[dict[str, AccountSeries], list[Any]]:
    accounts: dict[str, AccountSeries] = {}
    found = []
    for i in range(4 * 288):
        start = DAY0 + i * STEP
        likes = 30 + (i * 7919) % 11
        if i == 3 * 288 + 100:
            likes = 400
        adv = det.advance(accounts, [rec("a", start, likes=likes)], through(start), 0)
        found += adv.found
    return accounts, found


def test_a_spike_is_found_once_and_the_alert_says_why_without_text() -> None:
    det = Detection(DetectionSettings(series=("engagement",)))
    _, found = _spiky_account(det)
    assert [(f.series, f.step.alert, f.step.start_ms) for f in found] == [
        ("engagement", "spike", DAY0 + (3 * 288 + 100) * STEP)
    ]
    alert = build_alert(found[0], 300, DetectorSettings())
    jsonschema.validate(alert, ALERT_SCHEMA)
    assert alert["type"] == "engagement_spike" and alert["metric"] == "weighted_engagement"
    assert alert["observed"] == 400 and alert["expected"] < alert["threshold"] < 400
    assert "400" in alert["message"] and "expected" in alert["message"]
    assert "1.5x" in alert["message"]
    again = build_alert(found[0], 300, DetectorSettings())
    assert again["alert_id"] == alert["alert_id"]  # deterministic


def test_the_alert_names_the_rule_that_qualified_it() -> None:
    cfg = DetectorSettings()
    base = {"start_ms": DAY0, "observed": 90.0, "expected": 40.0, "ratio": 1.1, "score": 0.6}
    ranged = Step(**base, z=3.4, alert=UP, threshold=85.0, typical_peak=3.1, rule=RANGE)
    message = build_alert(Found("a", "engagement", ranged), 300, cfg)["message"]
    assert "beyond the highest value of the last 4 days by more than 2% of their range" in message
    assert "3.4 robust scales" in message and "(range rule)" in message
    low = Step(**{**base, "observed": 2.0}, z=-3.4, alert=DOWN, threshold=3.0, rule=RANGE)
    assert "the lowest value" in build_alert(Found("a", "engagement", low), 300, cfg)["message"]
    burst = Step(**base, z=3.2, alert=UP, threshold=80.0, typical_peak=3.0, rule=BURST)
    alert = build_alert(Found("a", "engagement", burst), 300, cfg)
    jsonschema.validate(alert, ALERT_SCHEMA)
    assert "reached 2x its typical daily peak" in alert["message"]
    assert "(burst rule)" in alert["message"] and alert["threshold"] == 80.0


def test_per_account_overrides_apply() -> None:
    cfg = DetectionSettings(series=("engagement",), accounts={"a": {"min_volume": 1e6}})
    _, found = _spiky_account(Detection(cfg))
    assert found == []


def test_a_pass_in_slices_feeds_exactly_what_one_pass_feeds() -> None:
    """A replay's first pass spans days of windows for many accounts: fed a budget
    at a time (the rest on later calls), with the same alerts and states."""
    det = Detection(DetectionSettings(forget_after_s=6 * 3600))
    records = [
        rec(acc, DAY0 + i * STEP, likes=30 + (i * 7919 + n) % 11, mentions=(i + n) % 4)
        for n, acc in enumerate(("a", "b", "c"))
        for i in range(4 * 288)
        if i % (n + 2) and not (n == 2 and 300 < i < 600)  # "c" silent for a day
    ]
    records.append(rec("a", DAY0 + (3 * 288 + 100) * STEP, likes=900))
    end = through(DAY0 + 4 * 288 * STEP)

    whole: dict[str, AccountSeries] = {}
    one = det.advance(whole, copy.deepcopy(records), end, 0)
    assert not one.behind and one.found  # the 900-like window is a spike
    sliced: dict[str, AccountSeries] = {}
    adv = det.advance(sliced, records, end, 0, budget=7)
    found, calls = list(adv.found), 1
    forgotten, changed = set(adv.forgotten), set(adv.changed)
    while adv.behind:
        if calls == 50:  # restored from the changelog part-way: queues included
            assert any(a.queued for a in sliced.values())
            sliced = {
                k: AccountSeries.from_json(orjson.loads(orjson.dumps(v.to_json())))
                for k, v in sliced.items()
            }
        adv = det.advance(sliced, [], end, 0, budget=7)
        found += adv.found
        forgotten |= adv.forgotten
        changed |= adv.changed
        calls += 1
    assert calls > 100
    assert [(f.account, f.series, f.step) for f in found] == [
        (f.account, f.series, f.step) for f in one.found
    ]
    assert "c" in forgotten | changed and one.forgotten <= forgotten
    assert {a: s.to_json() for a, s in sliced.items()} == {a: s.to_json() for a, s in whole.items()}

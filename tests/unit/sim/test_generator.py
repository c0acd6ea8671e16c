"""The synthetic traffic generator: deterministic, schema-v1 shaped, realistically messy."""

from __future__ import annotations

import re
import statistics
import sys
import types
from collections import Counter, defaultdict
from dataclasses import replace
from functools import cache
from itertools import pairwise
from typing import Any

import orjson
import pytest

from pipeline.model.events import INBOUND_KINDS, KINDS, PRIORITIES
from pipeline.sim.generator import RawMessage, TrafficSpec, diurnal_multiplier, generate

WED = 1_704_240_000_000  # 2024-01-03T00:00:00Z, a Wednesday
HOUR_MS = 3_600_000
RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?(Z|[+-]\d{2}:\d{2})$")
CHANNEL = re.compile(r"^[a-z0-9_-]{1,32}$")
SUFFIX = {"like": "likes", "comment": "comments", "share": "shares", "mention": "mentions"}
SUFFIX |= {"dm": "dms", "reply": "replies"}


@cache
def run(spec: TrafficSpec, start_ms: int, duration_s: float) -> tuple[RawMessage, ...]:
    return tuple(generate(spec, start_ms, duration_s))


def interactions(msgs: tuple[RawMessage, ...]) -> list[dict[str, Any]]:
    return [orjson.loads(m.value) for m in msgs if m.topic_suffix != "exposure"]


# Two evening hours at a modest rate: enough replies, bots, duplicates and disorder.
BASE = TrafficSpec(rate_per_s=10.0, duplicate_fraction=0.02)
BASE_RUN = (BASE, WED + 19 * HOUR_MS, 7200.0)


@pytest.fixture
def bad_payloads(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, bytes]]:
    try:
        from pipeline.sim.samples import malformed_interaction_payloads
    except ImportError:  # module not written yet: a tiny local stand-in, for this test only
        fallback = [("not_json", b"{not json"), ("not_object", b"[1, 2]"), ("empty", b"")]
        fallback += [("missing_field", b'{"kind": "like"}')]
        module = types.ModuleType("pipeline.sim.samples")
        module.malformed_interaction_payloads = lambda: list(fallback)  # type: ignore[attr-defined]
        monkeypatch.setitem(sys.modules, "pipeline.sim.samples", module)
        return fallback
    return list(malformed_interaction_payloads())


def test_same_seed_same_bytes_other_seed_differs() -> None:
    spec = TrafficSpec(rate_per_s=30.0, malformed_fraction=0.0)
    first = list(generate(spec, WED, 300.0))
    assert first == list(generate(spec, WED, 300.0))
    assert len(first) > 1000
    other = list(generate(TrafficSpec(seed=8, rate_per_s=30.0), WED, 300.0))
    assert [m.value for m in other] != [m.value for m in first]


def test_every_interaction_is_schema_v1() -> None:
    msgs = run(*BASE_RUN)
    seen_inbound: dict[str, str] = {}  # event_id -> account_id
    kinds: Counter[str] = Counter()
    for m in msgs:
        if m.topic_suffix == "exposure":
            continue
        e = orjson.loads(m.value)
        assert isinstance(e, dict)
        kind = e["kind"]
        kinds[kind] += 1
        assert kind in KINDS
        assert m.topic_suffix == SUFFIX[kind]
        assert isinstance(e["event_id"], str) and 1 <= len(e["event_id"]) <= 128
        assert isinstance(e["account_id"], str) and 1 <= len(e["account_id"]) <= 128
        assert m.key == e["account_id"].encode()
        assert isinstance(e["channel"], str) and CHANNEL.match(e["channel"])
        ts = e["ts"]
        if isinstance(ts, int):
            assert ts == m.ts_ms
        else:
            assert isinstance(ts, str) and RFC3339.match(ts)
        assert isinstance(e["actor_id"], str) and e["actor_id"]
        if kind in ("like", "comment", "share"):
            assert isinstance(e["post_id"], str) and e["post_id"]
        if kind in INBOUND_KINDS:
            assert isinstance(e["text"], str) and e["text"]
            seen_inbound.setdefault(e["event_id"], e["account_id"])
        if kind == "reply":
            assert seen_inbound.get(e["in_reply_to"]) == e["account_id"]
        assert e.get("priority", "normal") in PRIORITIES
        assert -1.0 <= e.get("sentiment", 0.0) <= 1.0
    total = sum(kinds.values())
    share = {k: kinds[k] / total for k in KINDS}
    assert 0.55 < share["like"] < 0.7 and 0.12 < share["comment"] < 0.18
    assert 0.02 < share["reply"] < 0.08
    assert 0.05 < share["share"] < 0.11 and 0.05 < share["mention"] < 0.11
    assert 0.02 < share["dm"] < 0.06


def test_timestamps_mostly_epoch_some_rfc3339_and_only_slightly_disordered() -> None:
    msgs = run(*BASE_RUN)
    events = interactions(msgs)
    strings = sum(isinstance(e["ts"], str) for e in events) / len(events)
    assert 0.03 < strings < 0.2
    high, behind = msgs[0].ts_ms, 0
    for prev, m in pairwise(msgs):
        assert m.ts_ms >= high - 30_000
        high = max(high, m.ts_ms)
        behind += m.ts_ms < prev.ts_ms - 500
    assert 0.02 < behind / len(msgs) < 0.12


def test_replies_answer_some_inbound_never_all() -> None:
    events = interactions(run(*BASE_RUN))
    inbound = {e["event_id"] for e in events if e["kind"] in INBOUND_KINDS}
    answered = {e["in_reply_to"] for e in events if e["kind"] == "reply"}
    assert answered <= inbound
    assert 0.05 < len(answered) / len(inbound) < 0.5


def test_hot_posts_bots_and_audience() -> None:
    events = interactions(run(*BASE_RUN))
    posts = Counter(e["post_id"] for e in events if "post_id" in e)
    top = sum(n for _, n in posts.most_common(3 * len(BASE.accounts)))
    assert top / sum(posts.values()) > 0.5
    actors = Counter(e["actor_id"] for e in events)
    bots = {a for a in actors if a.startswith("bot-")}
    assert 1 <= len(bots) <= 10
    assert 0.01 < sum(actors[b] for b in bots) / len(events) < 0.07
    assert len(actors) > len(events) / 5  # a long tail of distinct people


def test_duplicates_only_when_asked() -> None:
    def dupes(spec: TrafficSpec) -> int:
        ids = Counter(e["event_id"] for e in interactions(run(spec, WED, 1800.0)))
        return sum(n - 1 for n in ids.values())

    with_dupes = TrafficSpec(rate_per_s=10.0, duplicate_fraction=0.02)
    n = len(interactions(run(with_dupes, WED, 1800.0)))
    assert 0.01 * n < dupes(with_dupes) < 0.03 * n
    assert dupes(TrafficSpec(rate_per_s=10.0, duplicate_fraction=0.0)) == 0


def test_duplicates_repeat_the_exact_bytes() -> None:
    by_id: dict[str, bytes] = {}
    for m in run(*BASE_RUN):
        if m.topic_suffix != "exposure":
            eid = orjson.loads(m.value)["event_id"]
            assert by_id.setdefault(eid, m.value) == m.value


def test_malformed_fraction_roughly_respected(bad_payloads: list[tuple[str, bytes]]) -> None:
    spec = TrafficSpec(rate_per_s=10.0, malformed_fraction=0.1)
    msgs = list(generate(spec, WED + 20 * HOUR_MS, 1800.0))
    bad = {raw for _, raw in bad_payloads}
    inter = [m for m in msgs if m.topic_suffix != "exposure"]
    malformed = [m for m in inter if m.value in bad]
    assert 0.08 < len(malformed) / len(inter) < 0.12
    assert {m.topic_suffix for m in malformed} <= set(SUFFIX.values())
    assert any(m.key is None for m in malformed)
    for m in inter:  # everything else is still a valid event
        if m.value not in bad:
            assert orjson.loads(m.value)["kind"] in KINDS
    none = list(generate(TrafficSpec(rate_per_s=10.0), WED + 20 * HOUR_MS, 1800.0))
    assert not [m for m in none if m.value in bad]


def per_hour(spec: TrafficSpec, start_ms: int, hours: int) -> list[int]:
    counts = [0] * hours
    for m in run(spec, start_ms, hours * 3600.0):
        if m.topic_suffix != "exposure" and start_ms <= m.ts_ms < start_ms + hours * HOUR_MS:
            counts[(m.ts_ms - start_ms) // HOUR_MS] += 1
    return counts


def test_diurnal_rhythm_over_a_day() -> None:
    spec = TrafficSpec(rate_per_s=2.0, burst_probability=0.0)
    hours = per_hour(spec, WED, 24)
    assert hours.index(max(hours)) in (19, 20, 21)
    assert min(hours) in (hours[2], hours[3], hours[4], hours[5])
    assert hours[20] > 3.5 * hours[4]
    assert 0.9 * 2.0 * 3600 < hours[20] < 1.1 * 2.0 * 3600


def test_weekend_is_a_bit_busier() -> None:
    saturday = WED + 3 * 24 * HOUR_MS
    assert diurnal_multiplier(saturday + 20 * HOUR_MS) > diurnal_multiplier(WED + 20 * HOUR_MS)
    assert diurnal_multiplier(WED + 20 * HOUR_MS) == pytest.approx(1.0)
    assert diurnal_multiplier(WED + 4 * HOUR_MS) == pytest.approx(0.2)


def per_account_minute(msgs: tuple[RawMessage, ...]) -> dict[bytes | None, list[int]]:
    counts: dict[bytes | None, Counter[int]] = defaultdict(Counter)
    for m in msgs:
        if m.topic_suffix != "exposure":
            counts[m.key][(m.ts_ms - msgs[0].ts_ms) // 60_000] += 1
    return {k: [c[i] for i in range(60)] for k, c in counts.items()}


def test_bursts() -> None:
    start, quiet = WED + 20 * HOUR_MS, TrafficSpec(rate_per_s=5.0, burst_probability=0.0)
    calm = per_account_minute(run(quiet, start, 3600.0))
    bursty = per_account_minute(run(replace(quiet, burst_probability=0.01), start, 3600.0))
    assert all(max(c) < 2 * statistics.median(c) for c in calm.values())
    ratios = [max(c) / statistics.median(c) for c in bursty.values()]
    assert sum(r > 4 for r in ratios) >= 2
    always = replace(quiet, burst_probability=1.0)
    assert len(run(always, start, 300.0)) > 4 * len(run(quiet, start, 300.0))


def test_exposure_snapshots_per_account_channel_at_cadence() -> None:
    spec = TrafficSpec(rate_per_s=20.0, exposure_every_s=30)
    start = WED + 20 * HOUR_MS + 12_345  # not aligned: snapshots still fall on multiples of 30 s
    snaps: dict[tuple[str, str], list[dict[str, Any]]] = defaultdict(list)
    for m in generate(spec, start, 600.0):
        if m.topic_suffix == "exposure":
            s = orjson.loads(m.value)
            assert m.key == s["account_id"].encode() and s["ts"] == m.ts_ms
            snaps[s["account_id"], s["channel"]].append(s)
    assert set(snaps) == {(a, c) for a in spec.accounts for c in spec.channels}
    for series in snaps.values():
        stamps = [s["ts"] for s in series]
        assert len(stamps) == 20 and all(t % 30_000 == 0 for t in stamps)
        assert all(b - a == 30_000 for a, b in pairwise(stamps))
        assert start < stamps[0] <= start + 30_000
        followers = [s["followers"] for s in series]
        assert all(10_000 <= f <= 2_100_000 for f in followers)
        assert followers == sorted(followers)  # slowly growing
        assert all(0 <= s["reach"] <= s["impressions"] for s in series)
    levels = {series[0]["followers"] for series in snaps.values()}
    assert len(levels) == len(snaps)


def test_pipeline_validator_agrees(bad_payloads: list[tuple[str, bytes]]) -> None:
    from pipeline.ingest.validation import validate
    from pipeline.model.events import Exposure, Interaction, Invalid

    expected = {raw: reason for reason, raw in bad_payloads}
    spec = TrafficSpec(rate_per_s=10.0, malformed_fraction=0.05)
    reasons: Counter[str] = Counter()
    for m in generate(spec, WED + 20 * HOUR_MS, 900.0):
        family = "exposure" if m.topic_suffix == "exposure" else "interaction"
        got = validate(m.value, kind_family=family)
        if m.value in expected:
            assert isinstance(got, Invalid) and got.reason == expected[m.value]
            reasons[got.reason] += 1
        else:
            assert isinstance(got, Exposure if family == "exposure" else Interaction), got
    assert len(reasons) >= 3

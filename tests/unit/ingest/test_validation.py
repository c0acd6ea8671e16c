"""pipeline.ingest.validation: reasons, parsed values, detail hygiene, robustness."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pipeline.ingest.validation import REASONS, TS_MAX_MS, TS_MIN_MS, validate, validate_row
from pipeline.model import wire
from pipeline.model.events import KINDS, PRIORITIES, Exposure, Interaction, Invalid
from pipeline.sim.samples import (
    MALFORMED,
    MALFORMED_EXPOSURE,
    VALID,
    VALID_EXPOSURE,
    malformed_interaction_payloads,
)
from tests.unit.strategies import json_values, text

PRE_PARSE = {"empty", "oversized", "not_utf8", "not_json"}
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
SECRET = "s3cr3t-Payload-Value"


def _ids(cases: list[Any]) -> list[str]:
    return [c[0] for c in cases]


def expected_ts_ms(ts: object) -> int:
    """Independent oracle: the stdlib's ISO parser (fraction truncated to ms)."""
    if isinstance(ts, str):
        dt = datetime.fromisoformat(ts.upper())
        return (dt - EPOCH) // timedelta(milliseconds=1)
    assert isinstance(ts, int | float)
    return int(ts)


# --- corpora ---------------------------------------------------------------


@pytest.mark.parametrize(("name", "reason", "raw"), MALFORMED, ids=_ids(MALFORMED))
def test_malformed_interaction(name: str, reason: str, raw: bytes) -> None:
    result = validate(raw, kind_family="interaction")
    assert isinstance(result, Invalid), name
    assert result.reason == reason, (name, result)


@pytest.mark.parametrize(
    ("name", "reason", "raw"), MALFORMED_EXPOSURE, ids=_ids(MALFORMED_EXPOSURE)
)
def test_malformed_exposure(name: str, reason: str, raw: bytes) -> None:
    result = validate(raw, kind_family="exposure")
    assert isinstance(result, Invalid), name
    assert result.reason == reason, (name, result)


def test_corpora_shape() -> None:
    assert len(MALFORMED) >= 30
    assert len(MALFORMED_EXPOSURE) >= 8
    assert len(VALID) >= 15
    assert len(VALID_EXPOSURE) >= 5
    assert {r for _, r, _ in MALFORMED} == set(REASONS)
    assert {r for _, r, _ in MALFORMED_EXPOSURE} == set(REASONS) - {"unknown_kind"}
    for corpus in (MALFORMED, MALFORMED_EXPOSURE, VALID, VALID_EXPOSURE):
        names = [c[0] for c in corpus]
        assert len(names) == len(set(names))
        assert all(len(c[-1]) <= 80 * 1024 for c in corpus)
    event_ids = []
    for _, _, raw in MALFORMED:
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError:
            continue
        if isinstance(obj, dict) and isinstance(obj.get("event_id"), str):
            event_ids.append(obj["event_id"])
    assert len(event_ids) == len(set(event_ids))
    assert malformed_interaction_payloads() == [(r, raw) for _, r, raw in MALFORMED]
    assert {k for _, raw in VALID for k in [orjson.loads(raw)["kind"]]} == set(KINDS)


@pytest.mark.parametrize(("name", "raw"), VALID, ids=_ids(VALID))
def test_valid_interaction(name: str, raw: bytes) -> None:
    obj = orjson.loads(raw)
    result = validate(raw, kind_family="interaction")
    assert isinstance(result, Interaction), (name, result)
    assert result.event_id == obj["event_id"]
    assert result.kind == obj["kind"]
    assert result.channel == obj["channel"]
    assert result.account_id == obj["account_id"]
    assert result.ts_ms == expected_ts_ms(obj["ts"])
    assert type(result.ts_ms) is int
    for f in ("post_id", "actor_id", "in_reply_to", "thread_id", "issue_type"):
        assert getattr(result, f) == obj.get(f)
    assert result.priority == (obj.get("priority") or "normal")
    if obj.get("sentiment") is None:
        assert result.sentiment is None
    else:
        assert type(result.sentiment) is float
        assert result.sentiment == obj["sentiment"]


EXACT_TS = {
    "comment_minimal": 1_714_564_800_000,
    "like_epoch_ms": 1_714_564_800_000,
    "comment_ts_fraction_truncated": 1_714_564_800_123,
    "comment_ts_one_fraction_digit": 1_714_564_800_500,
    "comment_ts_positive_offset": 1_714_564_800_000,
    "comment_ts_negative_offset": 1_714_564_800_000,
    "comment_ts_minus_zero_offset": 1_714_564_800_000,
    "comment_ts_lower_case_t_z": 1_714_564_800_000,
    "comment_ts_integral_float": 1_714_564_800_000,
    "comment_ts_leap_day": 1_709_251_199_000,
    "comment_ts_min_epoch": TS_MIN_MS,
    "comment_ts_max_epoch": TS_MAX_MS - 1,
    "comment_ts_min_string": TS_MIN_MS,
    "comment_ts_max_string": TS_MAX_MS - 1,
    # the plausible-year bound is on the written year, not the UTC instant
    "comment_ts_year_2000_offset_before": TS_MIN_MS - 30 * 60 * 1000,
    "comment_ts_year_2099_offset_after": TS_MAX_MS + 30 * 60 * 1000,
}


@pytest.mark.parametrize(("name", "ts_ms"), sorted(EXACT_TS.items()))
def test_exact_timestamps(name: str, ts_ms: int) -> None:
    result = validate(dict(VALID)[name], kind_family="interaction")
    assert isinstance(result, Interaction)
    assert result.ts_ms == ts_ms


def test_specific_values() -> None:
    v = dict(VALID)
    dm = validate(v["dm_urgent"], kind_family="interaction")
    assert isinstance(dm, Interaction)
    assert (dm.kind, dm.channel, dm.priority, dm.post_id) == ("dm", "facebook", "urgent", None)
    reply = validate(v["reply_to_dm"], kind_family="interaction")
    assert isinstance(reply, Interaction)
    assert (reply.kind, reply.in_reply_to) == ("reply", "v-dm_urgent")
    low = validate(v["comment_sentiment_minus_1"], kind_family="interaction")
    assert isinstance(low, Interaction)
    assert low.sentiment == -1.0 and type(low.sentiment) is float and low.priority == "normal"


@pytest.mark.parametrize(("name", "raw"), VALID_EXPOSURE, ids=_ids(VALID_EXPOSURE))
def test_valid_exposure(name: str, raw: bytes) -> None:
    obj = orjson.loads(raw)
    result = validate(raw, kind_family="exposure")
    assert isinstance(result, Exposure), (name, result)
    assert (result.account_id, result.channel) == (obj["account_id"], obj["channel"])
    assert result.ts_ms == expected_ts_ms(obj["ts"])
    assert result.post_id == obj.get("post_id")
    for f in ("followers", "impressions", "reach"):
        value = getattr(result, f)
        assert value == obj.get(f)
        assert value is None or type(value) is int


def test_families_are_not_interchangeable() -> None:
    comment = dict(VALID)["comment_minimal"]
    snapshot = dict(VALID_EXPOSURE)["followers_only"]
    assert isinstance(validate(snapshot, kind_family="interaction"), Invalid)
    assert isinstance(validate(comment, kind_family="exposure"), Invalid)
    with pytest.raises(ValueError):
        validate(comment, kind_family="likes")


def test_none_and_max_bytes() -> None:
    assert validate(None, kind_family="interaction") == Invalid("empty", "message: no value")
    raw = dict(VALID)["comment_minimal"]
    assert isinstance(validate(raw, kind_family="interaction", max_bytes=len(raw)), Interaction)
    small = validate(raw, kind_family="interaction", max_bytes=len(raw) - 1)
    assert isinstance(small, Invalid) and small.reason == "oversized"


# --- no payload in outputs ---------------------------------------------------


def test_text_is_dropped() -> None:
    assert "text" not in {f.name for f in dataclasses.fields(Interaction)}
    raw = orjson.dumps(
        {
            "event_id": "e-1",
            "kind": "dm",
            "channel": "x",
            "account_id": "a",
            "ts": TS_MIN_MS,
            "text": SECRET,
        }
    )
    result = validate(raw, kind_family="interaction")
    assert isinstance(result, Interaction)
    assert SECRET not in repr(result)


def _secret_payloads() -> list[tuple[str, bytes]]:
    base: dict[str, Any] = {
        "event_id": "e-" + SECRET,
        "kind": "comment",
        "channel": "instagram",
        "account_id": "a-" + SECRET,
        "ts": "2024-05-01T12:00:00Z",
        "post_id": "p-" + SECRET,
        "actor_id": "u-" + SECRET,
        "text": SECRET,
    }
    bad_values: dict[str, list[Any]] = {
        "event_id": [SECRET * 10, [SECRET], None],
        "kind": [SECRET, {SECRET: 1}],
        "channel": [SECRET, SECRET * 3, [SECRET]],
        "account_id": [SECRET * 10, {"x": SECRET}],
        "ts": [SECRET, SECRET + "T00:00:00Z", "2024-02-30T00:00:00Z", 1, [SECRET]],
        "post_id": ["", SECRET * 10, {SECRET: SECRET}],
        "in_reply_to": [SECRET * 10, 7],
        "priority": [SECRET, [SECRET]],
        "sentiment": [SECRET, 7],
        "text": [SECRET * 1500, [SECRET]],
    }
    out = []
    for field, values in bad_values.items():
        for i, value in enumerate(values):
            out.append((f"{field}-{i}", orjson.dumps({**base, field: value})))
    valid = orjson.dumps(base)
    out += [
        ("unknown_field", orjson.dumps({**base, SECRET: SECRET, "channel": "Bad"})),
        ("oversized", valid + b" " * 70_000),
        ("not_utf8", valid[:-1] + b',"x":"\xff' + SECRET.encode() + b'"}'),
        ("not_json", valid[:-1] + SECRET.encode()),
        ("not_object", orjson.dumps([base])),
    ]
    return out


@pytest.mark.parametrize(("name", "raw"), _secret_payloads(), ids=_ids(_secret_payloads()))
def test_detail_never_contains_payload(name: str, raw: bytes) -> None:
    result = validate(raw, kind_family="interaction")
    assert isinstance(result, Invalid), name
    assert SECRET.lower() not in result.detail.lower()
    assert result.reason in REASONS


@pytest.mark.parametrize(("name", "reason", "raw"), MALFORMED, ids=_ids(MALFORMED))
def test_detail_names_field_not_value(name: str, reason: str, raw: bytes) -> None:
    result = validate(raw, kind_family="interaction")
    assert isinstance(result, Invalid)
    field, sep, rule = result.detail.partition(": ")
    assert sep and field and rule
    assert f"m-{name}" not in result.detail


# --- robustness ----------------------------------------------------------------

TEXT = text(12)
JSON = json_values(12, 3, 6)
FIELDS = [
    "event_id",
    "kind",
    "channel",
    "account_id",
    "ts",
    "post_id",
    "actor_id",
    "in_reply_to",
    "thread_id",
    "issue_type",
    "priority",
    "sentiment",
    "text",
    "followers",
    "impressions",
    "reach",
]
PLAUSIBLE = (
    st.sampled_from([*KINDS, *PRIORITIES, "instagram", "x", "2024-05-01T12:00:00Z", 0, 1, -1])
    | st.integers(min_value=TS_MIN_MS - 2, max_value=TS_MAX_MS + 2)
    | st.floats(min_value=-1.5, max_value=1.5)
)
OBJECTS = st.dictionaries(st.sampled_from(FIELDS) | TEXT, PLAUSIBLE | JSON, max_size=16)


@settings(max_examples=400, deadline=None)
@given(obj=OBJECTS, family=st.sampled_from(["interaction", "exposure"]))
def test_random_objects_never_raise(obj: dict[str, Any], family: str) -> None:
    result = validate(orjson.dumps(obj), kind_family=family)
    assert type(result) in (Interaction, Exposure, Invalid)
    if isinstance(result, Invalid):
        assert result.reason in REASONS and result.reason not in PRE_PARSE
    else:
        assert type(result) is (Interaction if family == "interaction" else Exposure)


@settings(max_examples=400, deadline=None)
@given(raw=st.binary(max_size=200), family=st.sampled_from(["interaction", "exposure"]))
def test_random_bytes_never_raise(raw: bytes, family: str) -> None:
    result = validate(raw, kind_family=family, max_bytes=150)
    assert type(result) in (Interaction, Exposure, Invalid)
    if isinstance(result, Invalid) and result.reason == "not_json":
        raw.decode("utf-8")  # not_json is only reported for valid UTF-8


@settings(max_examples=200, deadline=None)
@given(value=JSON, family=st.sampled_from(["interaction", "exposure"]))
def test_random_json_values_never_raise(value: Any, family: str) -> None:
    result = validate(orjson.dumps(value), kind_family=family)
    assert type(result) in (Interaction, Exposure, Invalid)


# --- the router's path: straight into the row format --------------------------

SRC = ["social.likes", 3, 1234, 1_714_521_600_123]


def as_row(result: Interaction | Exposure | Invalid) -> Any:
    if isinstance(result, Interaction):
        return wire.interaction_row(result, SRC)
    if isinstance(result, Exposure):
        return wire.exposure_row(result, SRC)
    return result


def same_decision(raw: bytes, family: str, max_bytes: int = 65536) -> None:
    row = validate_row(raw, kind_family=family, max_bytes=max_bytes, src=SRC)
    assert row == as_row(validate(raw, kind_family=family, max_bytes=max_bytes))


@pytest.mark.parametrize(
    ("family", "raw"),
    [("interaction", raw) for _, raw in VALID]
    + [("exposure", raw) for _, raw in VALID_EXPOSURE]
    + [("interaction", raw) for _, _, raw in MALFORMED]
    + [("exposure", raw) for _, _, raw in MALFORMED_EXPOSURE],
)
def test_validate_row_builds_the_row_of_the_event_validate_returns(family: str, raw: bytes) -> None:
    same_decision(raw, family)


@settings(max_examples=300, deadline=None)
@given(obj=OBJECTS, family=st.sampled_from(["interaction", "exposure"]))
def test_validate_row_decides_as_validate_on_random_objects(
    obj: dict[str, Any], family: str
) -> None:
    same_decision(orjson.dumps(obj), family, max_bytes=400)

"""The published JSON Schemas and pipeline.ingest.validation accept exactly the same messages.

For every message that parses as JSON, `validate(...)` returns Invalid iff
jsonschema (draft 2020-12, format assertion on) reports errors for the
matching schema. Pre-parse rejections (empty, oversized, not_utf8, not_json)
are outside what a JSON Schema can see.
"""

from __future__ import annotations

import base64
import hashlib
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft202012Validator

from pipeline.ingest.validation import TS_MAX_MS, TS_MIN_MS, validate
from pipeline.model.events import KINDS, PRIORITIES, Invalid
from pipeline.sim.samples import MALFORMED, MALFORMED_EXPOSURE, VALID, VALID_EXPOSURE
from tests.unit.fixtures import FORMATS, SCHEMA_DIR, load, schema_validator
from tests.unit.strategies import json_values, text

SCHEMA_FILES = sorted(p.name for p in SCHEMA_DIR.glob("*.json"))
PRE_PARSE = {"empty", "oversized", "not_utf8", "not_json"}
VALIDATORS = {
    "interaction": schema_validator("interaction.v1.json"),
    "exposure": schema_validator("exposure.v1.json"),
}


def assert_agree(obj: Any, family: str) -> None:
    raw = orjson.dumps(obj)
    result = validate(raw, kind_family=family)
    if isinstance(result, Invalid):
        assert result.reason not in PRE_PARSE, result
    errors = [e.message for e in VALIDATORS[family].iter_errors(obj)]
    assert isinstance(result, Invalid) == bool(errors), (obj, result, errors)


# --- the schemas themselves ------------------------------------------------------


def test_all_schemas_present() -> None:
    assert set(SCHEMA_FILES) >= {
        "interaction.v1.json",
        "exposure.v1.json",
        "alert.v1.json",
        "window.v1.json",
        "deadletter.v1.json",
    }


@pytest.mark.parametrize("name", SCHEMA_FILES)
def test_schema_is_valid(name: str) -> None:
    schema = load(name)
    Draft202012Validator.check_schema(schema)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    assert schema["$id"] == f"https://engagement-pipeline.dev/schemas/{name}"
    assert schema["title"] and schema["description"]
    for field, sub in schema["properties"].items():
        assert sub.get("description"), f"{name}: {field} has no description"
    for example in schema.get("examples", []):
        assert not list(schema_validator(name).iter_errors(example))


def test_format_assertion_is_active() -> None:
    # without rfc3339-validator, jsonschema silently skips date-time
    assert "date-time" in FORMATS.checkers
    assert not FORMATS.conforms("2024-02-30T00:00:00Z", "date-time")
    assert FORMATS.conforms("2024-02-29T00:00:00Z", "date-time")


# --- agreement on the corpora ---------------------------------------------------------


def _parsed(cases: list[tuple[str, str, bytes]]) -> list[tuple[str, Any]]:
    return [(n, orjson.loads(raw)) for n, reason, raw in cases if reason not in PRE_PARSE]


CORPUS = (
    [(f"valid/{n}", "interaction", orjson.loads(raw)) for n, raw in VALID]
    + [(f"valid_exposure/{n}", "exposure", orjson.loads(raw)) for n, raw in VALID_EXPOSURE]
    + [(f"malformed/{n}", "interaction", obj) for n, obj in _parsed(MALFORMED)]
    + [(f"malformed_exposure/{n}", "exposure", obj) for n, obj in _parsed(MALFORMED_EXPOSURE)]
)


@pytest.mark.parametrize(("name", "family", "obj"), CORPUS, ids=[c[0] for c in CORPUS])
def test_corpus_agreement(name: str, family: str, obj: Any) -> None:
    assert_agree(obj, family)


def test_pre_parse_cases_are_really_unparseable() -> None:
    for _, reason, raw in [*MALFORMED, *MALFORMED_EXPOSURE]:
        if reason in ("not_utf8", "not_json"):
            with pytest.raises(orjson.JSONDecodeError):
                orjson.loads(raw)


# --- agreement on generated messages --------------------------------------------------

TEXT = text(10)
ANY_JSON = json_values(10, 2, 4)


def _two(lo: int, hi: int) -> st.SearchStrategy[str]:
    return st.integers(lo, hi).map(lambda n: f"{n:02d}")


# A plausible RFC 3339 string, as components; `_corrupt` then breaks zero to two.
TS_PARTS: dict[str, st.SearchStrategy[str]] = {
    "year": st.sampled_from(["1999", "2000", "2024", "2099", "2100"])
    | st.integers(2000, 2099).map(str),
    "month": st.sampled_from(["02", "04", "12"]) | _two(1, 12),
    # 29..31 are invalid in some months: the calendar checks must agree too
    "day": st.sampled_from(["28", "29", "30", "31"]) | _two(1, 31),
    "sep": st.sampled_from("Tt"),
    "hour": _two(0, 23),
    "minute": _two(0, 59),
    "second": _two(0, 59),
    "frac": st.sampled_from(["", "", ".5", ".123", ".999999999"])
    | st.integers(0, 10**9).map(lambda n: f".{n}"),
    "offset": st.sampled_from(["Z", "z", "+00:00", "-00:00", "+05:30", "-08:00", "+23:59"]),
}
TS_CORRUPT: dict[str, st.SearchStrategy[str]] = {
    "year": st.sampled_from(["0000", "1970", "9999", "999", "20240", "٢٠٢٤", ""])
    | st.integers(0, 9999).map(lambda n: f"{n:04d}"),
    "month": st.sampled_from(["00", "13", "1", "001", "ab", ""]),
    "day": st.sampled_from(["00", "32", "1", "99", "٣", ""]),
    "sep": st.sampled_from([" ", "_", "TT", "", "T ", "x"]),
    "hour": st.sampled_from(["24", "25", "99", "1", ""]),
    "minute": st.sampled_from(["60", "61", "5", ""]),
    "second": st.sampled_from(["60", "61", "5", "", "59.5.5"]),
    "frac": st.sampled_from([".", ",5", ".x", ". 5", "..5"]),
    "offset": st.sampled_from(["", "+24:00", "-00:60", "+0530", "+05", "UTC", " Z", "Zz", "+5:30"])
    | st.builds(
        lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
        st.sampled_from("+-"),
        st.integers(0, 99),
        st.integers(0, 99),
    ),
    "tail": st.sampled_from(["\n", " ", "x", "\r", "\t", "Z"]),
}


@st.composite
def rfc3339ish(draw: st.DrawFn) -> str:
    parts = {name: draw(strategy) for name, strategy in TS_PARTS.items()}
    parts["tail"] = ""
    for _ in range(draw(st.sampled_from([0, 0, 1, 1, 2]))):
        name = draw(st.sampled_from(sorted(TS_CORRUPT)))
        parts[name] = draw(TS_CORRUPT[name])
    p = parts
    return (
        f"{p['year']}-{p['month']}-{p['day']}{p['sep']}{p['hour']}:{p['minute']}:{p['second']}"
        f"{p['frac']}{p['offset']}{p['tail']}"
    )


RFC3339ISH = rfc3339ish()

TS = (
    RFC3339ISH
    | st.integers(min_value=TS_MIN_MS - 3, max_value=TS_MIN_MS + 3)
    | st.integers(min_value=TS_MAX_MS - 3, max_value=TS_MAX_MS + 3)
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(min_value=TS_MIN_MS - 10, max_value=TS_MAX_MS + 10)
    | st.sampled_from([1.7e12, 1_714_564_800_000.5, True, None, "", 0])
    | TEXT
)
IDS = (
    st.text(st.characters(codec="utf-8"), min_size=0, max_size=3)
    | st.integers(125, 131).map(lambda n: "i" * n)
    | st.sampled_from(["", None, 5, ["x"]])
)
CHANNELS = (
    st.text(st.sampled_from("abz09_-A Z.é\n"), max_size=34)
    | st.integers(30, 34).map(lambda n: "c" * n)
    | st.builds(
        lambda c, tail: c + tail,
        st.from_regex(r"[a-z0-9_-]{1,32}", fullmatch=True),
        st.sampled_from(["", "\n", "\r", " ", "A", "\n\n"]),
    )
)
KIND_VALUES = st.sampled_from([*KINDS, "love", "LIKE", "", "like ", "Reply"]) | TEXT
PRIORITY_VALUES = st.sampled_from([*PRIORITIES, "asap", "Normal", None]) | TEXT
SENTIMENTS = st.floats(min_value=-1.5, max_value=1.5) | st.integers(-2, 2) | st.booleans()
TEXTS = st.integers(19_998, 20_002).map(lambda n: "t" * n) | TEXT
COUNTS = (
    st.integers(min_value=-3, max_value=3)
    | st.integers(min_value=10**12 - 2, max_value=10**12 + 2)
    | st.floats(min_value=-2, max_value=1e13)
    | st.sampled_from([None, True, "5", 1e3, 10.5])
)

INTERACTION_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": IDS,
    "kind": KIND_VALUES,
    "channel": CHANNELS,
    "account_id": IDS,
    "ts": TS,
    "post_id": IDS,
    "actor_id": IDS,
    "in_reply_to": IDS,
    "thread_id": IDS,
    "issue_type": IDS,
    "priority": PRIORITY_VALUES,
    "sentiment": SENTIMENTS,
    "text": TEXTS,
}
EXPOSURE_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "account_id": IDS,
    "channel": CHANNELS,
    "ts": TS,
    "post_id": IDS,
    "followers": COUNTS,
    "impressions": COUNTS,
    "reach": COUNTS,
}


@st.composite
def mutated(
    draw: st.DrawFn, bases: list[bytes], fields: dict[str, st.SearchStrategy[Any]]
) -> dict[str, Any]:
    """A valid sample with one to four fields dropped, retyped or re-valued."""
    obj: dict[str, Any] = orjson.loads(draw(st.sampled_from(bases)))
    for _ in range(draw(st.integers(1, 4))):
        field = draw(st.sampled_from([*fields, "extra"]))
        action = draw(st.sampled_from(["drop", "value", "value", "any_json"]))
        if action == "drop":
            obj.pop(field, None)
        elif action == "value" and field in fields:
            obj[field] = draw(fields[field])
        else:
            obj[field] = draw(ANY_JSON)
    return obj


VALID_INTERACTIONS = [raw for _, raw in VALID if len(raw) < 1000]
VALID_EXPOSURES = [raw for _, raw in VALID_EXPOSURE]
AGREE = settings(max_examples=500, deadline=None)


@AGREE
@given(obj=mutated(VALID_INTERACTIONS, INTERACTION_FIELDS))
def test_interaction_mutations_agree(obj: dict[str, Any]) -> None:
    assert_agree(obj, "interaction")


@AGREE
@given(obj=mutated(VALID_EXPOSURES, EXPOSURE_FIELDS))
def test_exposure_mutations_agree(obj: dict[str, Any]) -> None:
    assert_agree(obj, "exposure")


@AGREE
@given(ts=TS | RFC3339ISH, family=st.sampled_from(["interaction", "exposure"]))
def test_timestamps_agree(ts: Any, family: str) -> None:
    base = VALID_INTERACTIONS[0] if family == "interaction" else VALID_EXPOSURES[0]
    assert_agree({**orjson.loads(base), "ts": ts}, family)


@AGREE
@given(
    obj=st.dictionaries(
        st.sampled_from([*INTERACTION_FIELDS, *EXPOSURE_FIELDS]) | TEXT,
        st.sampled_from(["instagram", "like", "reply", "2024-05-01T12:00:00Z", 1_714_564_800_000])
        | ANY_JSON,
        max_size=12,
    ),
    family=st.sampled_from(["interaction", "exposure"]),
)
def test_random_objects_agree(obj: dict[str, Any], family: str) -> None:
    assert_agree(obj, family)


# --- output schemas -------------------------------------------------------------------


def alert() -> dict[str, Any]:
    return {
        "alert_id": "spike:brand-1:instagram:weighted_engagement:1714564800000",
        "schema_version": 1,
        "type": "engagement_spike",
        "severity": "warning",
        "account_id": "brand-1",
        "channel": "instagram",
        "metric": "weighted_engagement",
        "window_start": "2024-05-01T12:00:00Z",
        "window_end": "2024-05-01T12:01:00Z",
        "observed": 412.0,
        "expected": 96.5,
        "threshold": 250,
        "message": "Engagement on instagram is 4.3x the expected level",
        "emitted_at": "2024-05-01T12:01:02.345Z",
    }


def window() -> dict[str, Any]:
    return {
        "schema_version": 1,
        "account_id": "brand-1",
        "channel": "instagram",
        "window_start": "2024-05-01T12:00:00Z",
        "window_end": "2024-05-01T12:05:00Z",
        "size_seconds": 300,
        "counts": {"like": 120, "comment": 14, "share": 3, "mention": 2, "dm": 0, "reply": 5},
        "unique_actors": 101,
        "weighted_engagement": 187.5,
        "late_events": 1,
        "followers": 125_000,
        "reach": None,
        "impressions": 5400,
        "rate_by_followers": 0.0015,
        "rate_by_reach": None,
        "rate_by_impressions": 0.0347,
        "engagement_rate": 0.0015,
        "rate_basis": "followers",
    }


def deadletter() -> dict[str, Any]:
    value = b'{"event_id": "e-1", "kind": "li'
    return {
        "schema_version": 1,
        "reason": "not_json",
        "detail": "message: not valid JSON",
        "topic": "social.comments",
        "partition": 3,
        "offset": 1042,
        "key_b64": base64.b64encode(b"brand-1").decode(),
        "key_truncated": False,
        "value_b64": base64.b64encode(value).decode(),
        "value_truncated": False,
        "value_sha256": hashlib.sha256(value).hexdigest(),
        "value_size": len(value),
        "redacted": [],
        "received_at": "2024-05-01T12:00:03.001Z",
    }


DEADLETTER_NO_VALUE = {"value_b64": None, "value_sha256": None, "value_size": None}


OUTPUT_CASES: list[tuple[str, str, dict[str, Any], bool]] = [
    ("alert", "alert.v1.json", alert(), True),
    ("alert_all_channels", "alert.v1.json", {**alert(), "channel": None, "expected": None}, True),
    ("alert_no_threshold", "alert.v1.json", {**alert(), "threshold": None}, True),
    ("alert_extra_field", "alert.v1.json", {**alert(), "text": "hi"}, False),
    ("alert_bad_severity", "alert.v1.json", {**alert(), "severity": "high"}, False),
    ("alert_version_2", "alert.v1.json", {**alert(), "schema_version": 2}, False),
    (
        "alert_missing_expected",
        "alert.v1.json",
        {k: v for k, v in alert().items() if k != "expected"},
        False,
    ),
    (
        "alert_local_time",
        "alert.v1.json",
        {**alert(), "window_start": "2024-05-01T14:00:00+02:00"},
        False,
    ),
    ("alert_bad_date", "alert.v1.json", {**alert(), "emitted_at": "2024-02-30T00:00:00Z"}, False),
    ("alert_observed_string", "alert.v1.json", {**alert(), "observed": "412"}, False),
    ("window", "window.v1.json", window(), True),
    ("window_sparse_counts", "window.v1.json", {**window(), "counts": {"like": 1}}, True),
    (
        "window_no_exposure",
        "window.v1.json",
        {
            **window(),
            "followers": None,
            "impressions": None,
            "rate_by_followers": None,
            "rate_by_impressions": None,
            "engagement_rate": None,
        },
        True,
    ),
    ("window_unknown_kind", "window.v1.json", {**window(), "counts": {"love": 1}}, False),
    ("window_negative_count", "window.v1.json", {**window(), "counts": {"like": -1}}, False),
    ("window_float_count", "window.v1.json", {**window(), "counts": {"like": 1.5}}, False),
    ("window_bad_basis", "window.v1.json", {**window(), "rate_basis": "views"}, False),
    (
        "window_missing_late",
        "window.v1.json",
        {k: v for k, v in window().items() if k != "late_events"},
        False,
    ),
    ("window_size_zero", "window.v1.json", {**window(), "size_seconds": 0}, False),
    ("deadletter", "deadletter.v1.json", deadletter(), True),
    (
        "deadletter_no_key_value",
        "deadletter.v1.json",
        {**deadletter(), "key_b64": None, **DEADLETTER_NO_VALUE},
        True,
    ),
    (
        "deadletter_redacted_truncated",
        "deadletter.v1.json",
        {**deadletter(), "redacted": ["text"], "value_truncated": True, "key_truncated": True},
        True,
    ),
    (
        "deadletter_null_value_with_hash",
        "deadletter.v1.json",
        {**deadletter(), "value_b64": None},
        False,
    ),
    (
        "deadletter_null_value_redacted",
        "deadletter.v1.json",
        {**deadletter(), **DEADLETTER_NO_VALUE, "redacted": ["text"]},
        False,
    ),
    (
        "deadletter_value_without_hash",
        "deadletter.v1.json",
        {**deadletter(), "value_sha256": None, "value_size": None},
        False,
    ),
    (
        "deadletter_uppercase_hash",
        "deadletter.v1.json",
        {**deadletter(), "value_sha256": deadletter()["value_sha256"].upper()},
        False,
    ),
    (
        "deadletter_no_redacted",
        "deadletter.v1.json",
        {k: v for k, v in deadletter().items() if k != "redacted"},
        False,
    ),
    (
        "deadletter_raw_text",
        "deadletter.v1.json",
        {**deadletter(), "value_b64": "{not base64}"},
        False,
    ),
    ("deadletter_negative_offset", "deadletter.v1.json", {**deadletter(), "offset": -1}, False),
    ("deadletter_extra", "deadletter.v1.json", {**deadletter(), "value": "x"}, False),
    (
        "deadletter_no_received_at",
        "deadletter.v1.json",
        {k: v for k, v in deadletter().items() if k != "received_at"},
        False,
    ),
]


@pytest.mark.parametrize(
    ("name", "schema", "record", "ok"), OUTPUT_CASES, ids=[c[0] for c in OUTPUT_CASES]
)
def test_output_records(name: str, schema: str, record: dict[str, Any], ok: bool) -> None:
    errors = [e.message for e in schema_validator(schema).iter_errors(record)]
    assert (not errors) == ok, (name, errors)


def test_deadletter_keeps_bytes() -> None:
    raw = b"\xff\x00 anything"
    record = {
        **deadletter(),
        "value_b64": base64.b64encode(raw).decode(),
        "value_sha256": hashlib.sha256(raw).hexdigest(),
        "value_size": len(raw),
    }
    assert not list(schema_validator("deadletter.v1.json").iter_errors(record))
    assert base64.b64decode(record["value_b64"]) == raw

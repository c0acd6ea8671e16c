"""pipeline.ingest.deadletter: no message text in records, bounded size, schema-valid."""

from __future__ import annotations

import base64
import hashlib
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from jsonschema import Draft202012Validator, FormatChecker

from pipeline.ingest import deadletter
from pipeline.model.events import Invalid

SCHEMA = json.loads(
    (Path(__file__).resolve().parents[3] / "schemas" / "deadletter.v1.json").read_text("utf-8")
)
VALIDATOR = Draft202012Validator(SCHEMA, format_checker=FormatChecker())
SENTINEL = "PRIVATE-dm-text-7f3a9c"
BROKER_LIMIT = 1_000_000
INVALID = Invalid("missing_field", "ts: required")


def make(value: bytes | None, key: bytes | None = b"brand-1") -> tuple[bytes, dict[str, Any]]:
    raw = deadletter.record(INVALID, "social.comments", 3, 1042, key, value)
    rec = orjson.loads(raw)
    assert not list(VALIDATOR.iter_errors(rec)), list(VALIDATOR.iter_errors(rec))
    return raw, rec


def embedded(rec: dict[str, Any]) -> bytes:
    return base64.b64decode(rec["value_b64"], validate=True)


def message(**fields: Any) -> bytes:
    base: dict[str, Any] = {
        "event_id": "e-1",
        "kind": "comment",
        "channel": "instagram",
        "account_id": "brand-1",
        "actor_id": "u-9",
        "text": SENTINEL,
    }
    return orjson.dumps({**base, **fields})


def with_sentinel(template: str, encoding: str = "utf-8") -> bytes:
    return template.replace("@", SENTINEL).encode(encoding)


def assert_no_sentinel(raw: bytes, rec: dict[str, Any]) -> None:
    assert SENTINEL.encode() not in raw
    if rec["value_b64"] is not None:
        assert SENTINEL.encode() not in embedded(rec)


def test_text_is_removed_and_other_fields_kept() -> None:
    value = message()
    raw, rec = make(value)
    assert_no_sentinel(raw, rec)
    assert rec["redacted"] == ["text"]
    kept = orjson.loads(embedded(rec))
    assert "text" not in kept
    assert kept == {k: v for k, v in orjson.loads(value).items() if k != "text"}
    assert rec["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["value_size"] == len(value)
    assert rec["value_truncated"] is False and rec["key_truncated"] is False
    assert base64.b64decode(rec["key_b64"]) == b"brand-1"
    assert (rec["reason"], rec["detail"]) == (INVALID.reason, INVALID.detail)
    assert (rec["topic"], rec["partition"], rec["offset"]) == ("social.comments", 3, 1042)


def test_object_without_text_is_embedded_verbatim() -> None:
    value = b'{"event_id": "e-1",  "kind": "like"}'  # odd spacing survives: not re-serialized
    _, rec = make(value)
    assert embedded(rec) == value
    assert rec["redacted"] == []
    assert rec["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["value_size"] == len(value)


@pytest.mark.parametrize(
    "value",
    [
        b"\xff\x00 anything",
        b'{"event_id": "e-1", "kind": "li',
        b'[{"text": "not an object at the top"}]',
        b'"just a string"',
        b"",
    ],
    ids=["binary", "truncated_json", "array", "scalar", "empty"],
)
def test_value_that_is_not_a_json_object_is_kept_as_is(value: bytes) -> None:
    _, rec = make(value)
    assert embedded(rec) == value
    assert rec["redacted"] == []
    assert rec["value_truncated"] is False
    assert rec["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["value_size"] == len(value)


@pytest.mark.parametrize(
    "value",
    [
        # JSON orjson refuses but the standard library reads: still redacted
        with_sentinel('{"kind": "dm", "score": NaN, "text": "@"}'),
        with_sentinel('{"kind": "dm", "text": "@ \\ud800"}'),
        with_sentinel('{"kind": "dm", "text": "@"}', "utf-16"),
        with_sentinel('{"kind": "dm", "n": 123456789012345678901234567890, "text": "@"}'),
        # nesting beyond orjson's encoder depth
        b'{"text": "' + SENTINEL.encode() + b'", "a": ' + b"[" * 300 + b"]" * 300 + b"}",
        # duplicate keys: both occurrences gone
        with_sentinel('{"text": "@", "kind": "dm", "text": "@"}'),
    ],
    ids=["nan", "lone_surrogate", "utf16", "huge_int", "deep", "duplicate_text"],
)
def test_text_is_removed_from_lenient_json_too(value: bytes) -> None:
    raw, rec = make(value)
    assert_no_sentinel(raw, rec)
    assert SENTINEL.encode("utf-16-le") not in embedded(rec)
    assert rec["redacted"] == ["text"]
    kept = json.loads(embedded(rec))
    assert "text" not in kept and kept.get("kind", "dm") == "dm"
    assert rec["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["value_size"] == len(value)


def test_tombstone_and_missing_key() -> None:
    _, rec = make(None, key=None)
    assert rec["value_b64"] is None and rec["key_b64"] is None
    assert rec["value_sha256"] is None and rec["value_size"] is None
    assert rec["redacted"] == [] and rec["value_truncated"] is False
    assert rec["key_truncated"] is False


def test_900_kb_message_gives_a_small_truncated_record_without_text() -> None:
    value = message(text=SENTINEL + "x" * 450_000, note="n" * 450_000)
    assert 900_000 < len(value) < deadletter.MAX_PARSE_BYTES
    raw, rec = make(value)
    assert len(raw) < 400_000
    assert_no_sentinel(raw, rec)
    assert rec["redacted"] == ["text"]
    assert rec["value_truncated"] is True
    assert len(embedded(rec)) == deadletter.VALUE_CAP
    assert rec["value_sha256"] == hashlib.sha256(value).hexdigest()
    assert rec["value_size"] == len(value)


def test_900_kb_unparseable_message_is_truncated() -> None:
    value = b"\xff" + b"z" * 900_000
    raw, rec = make(value)
    assert len(raw) < 400_000
    assert rec["value_truncated"] is True and rec["redacted"] == []
    assert embedded(rec) == value[: deadletter.VALUE_CAP]
    assert rec["value_size"] == len(value)
    assert rec["value_sha256"] == hashlib.sha256(value).hexdigest()


def test_value_just_at_the_cap_is_not_truncated() -> None:
    value = b"\xff" * deadletter.VALUE_CAP
    _, rec = make(value)
    assert rec["value_truncated"] is False and embedded(rec) == value


def test_worst_case_record_stays_far_below_the_broker_limit() -> None:
    value = b"\xff" * (2 * deadletter.MAX_PARSE_BYTES)  # over the parse limit: not parsed
    key = b"k" * (deadletter.KEY_CAP + 1)
    raw, rec = make(value, key=key)
    assert len(raw) < 400_000 < BROKER_LIMIT
    assert rec["value_truncated"] is True and rec["key_truncated"] is True
    assert base64.b64decode(rec["key_b64"]) == key[: deadletter.KEY_CAP]
    assert rec["value_size"] == len(value)


def test_too_late_record_is_valid_and_describes_the_canonical_event() -> None:
    event = {"event_id": "e-1", "kind": "like", "account_id": "brand-1", "ts": 1714564800000}
    raw = deadletter.too_late_record(event, ["social.interactions", 2, 77, 1714564801000])
    rec = orjson.loads(raw)
    assert not list(VALIDATOR.iter_errors(rec))
    assert rec["reason"] == "too_late"
    assert (rec["topic"], rec["partition"], rec["offset"]) == ("social.interactions", 2, 77)
    canonical = orjson.dumps(event)
    assert embedded(rec) == canonical
    assert orjson.loads(embedded(rec)) == event
    assert rec["redacted"] == [] and rec["value_truncated"] is False
    assert rec["key_b64"] is None and rec["key_truncated"] is False
    assert rec["value_sha256"] == hashlib.sha256(canonical).hexdigest()
    assert rec["value_size"] == len(canonical)

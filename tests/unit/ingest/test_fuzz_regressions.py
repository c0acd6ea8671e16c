"""Regressions found by the integration fuzz test (tests/integration/test_fuzz.py).

Dead letters leaked message text when a JSON object nested deeper than the parsers
go: orjson refuses more than 1024 levels and the standard library's fallback raised
RecursionError, so the value was embedded unchanged, its top-level "text" included.
Between about 1000 and 1024 levels orjson read it but neither encoder could write it
back, and nothing was embedded at all. Now such an object is scanned without
recursion and the "text" member is cut out of the original bytes.
"""

from __future__ import annotations

import json
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.unit.ingest.test_deadletter import SENTINEL, embedded, make
from tests.unit.strategies import json_values

FORMS = tuple(SENTINEL.encode(e) for e in ("utf-8", "utf-16-le", "utf-16-be"))


def deep(depth: int, shape: str = "arrays") -> bytes:
    if shape == "arrays":
        return b"[" * depth + b"]" * depth
    return b'{"k":' * depth + b"1" + b"}" * depth


def assert_redacted(value: bytes) -> dict[str, Any]:
    raw, rec = make(value)  # also checks the record against the dead-letter schema
    assert not any(form in raw or form in embedded(rec) for form in FORMS)
    assert rec["redacted"] == ["text"]
    return rec


@pytest.mark.parametrize("depth", [1000, 1023, 1024, 1100, 5000, 100_000])
@pytest.mark.parametrize("shape", ["arrays", "objects"])
def test_text_is_removed_from_an_object_nested_deeper_than_the_parsers_go(
    depth: int, shape: str
) -> None:
    nested = deep(depth, shape)
    value = b'{"kind": "dm", "text": "' + SENTINEL.encode() + b'", "a": ' + nested + b"}"
    rec = assert_redacted(value)
    # the other members are kept verbatim (odd spacing included)
    assert embedded(rec) == b'{"kind": "dm","a": ' + nested + b"}" or rec["value_truncated"]


@pytest.mark.parametrize(
    "value",
    [
        # text after the deep member, whitespace and escapes around it
        b' {"a":' + deep(2000) + b' ,\n "text" : "' + SENTINEL.encode() + b'\\"}]" } ',
        # a key spelled with an escape, and two text members
        b'{"te\\u0078t":"' + SENTINEL.encode() + b'","a":' + deep(2000) + b',"text":1}',
        # a byte order mark; NaN (only the standard library reads it)
        b'\xef\xbb\xbf{"text":"' + SENTINEL.encode() + b'","a":' + deep(2000) + b"}",
        b'{"s":NaN,"text":"' + SENTINEL.encode() + b'","a":' + deep(2000) + b"}",
        # strings holding brackets and quotes inside the deep part
        b'{"a":['
        + b'["]\\"[",' * 1500
        + b"0"
        + b"]" * 1500
        + b'],"text":"'
        + SENTINEL.encode()
        + b'"}',
    ],
    ids=["text_last", "escaped_key", "bom", "nan", "brackets_in_strings"],
)
def test_deep_objects_of_every_spelling_lose_their_text(value: bytes) -> None:
    assert_redacted(value)


def test_deep_utf16_object_loses_its_text() -> None:
    text = '{"text":"' + SENTINEL + '","a":' + deep(3000).decode() + "}"
    rec = assert_redacted(text.encode("utf-16"))
    assert embedded(rec).decode("utf-16") == '{"a":' + deep(3000).decode() + "}"


@pytest.mark.parametrize(
    "value",
    [
        deep(3000),  # an array
        b'{"text":"x","a":' + b"[" * 3000,  # truncated
        b'{"text":"x","a":' + deep(3000) + b"} trailing",
        b'{"text":"x","a":' + b"[" * 3000 + b"}" * 3000 + b"}",  # brackets do not match
        b'{"text":"x","a":' + deep(3000) + b',"b":"never closed}',
        b'{"text":"x",' + deep(3000) + b"}",  # a member without a key
    ],
    ids=["array", "truncated", "trailing", "mismatched", "open_string", "no_key"],
)
def test_deep_values_that_are_not_objects_are_kept_as_they_came(value: bytes) -> None:
    _, rec = make(value)
    assert embedded(rec) == value
    assert rec["redacted"] == []


@settings(max_examples=150, deadline=None)
@given(
    st.dictionaries(st.text(max_size=5), json_values(8, 3, 6), max_size=4),
    st.integers(1, 3000),
    st.sampled_from(["arrays", "objects"]),
    st.integers(0, 4),
)
def test_text_never_reaches_a_dead_letter_at_any_depth(
    fields: dict[str, Any], depth: int, shape: str, at: int
) -> None:
    fields.pop("text", None)
    members = [orjson.dumps({k: v})[1:-1] for k, v in fields.items()]
    members.insert(min(at, len(members)), b'"text":"' + SENTINEL.encode() + b'"')
    members.insert(min(at + 1, len(members)), b'"nested":' + deep(depth, shape))
    value = b"{" + b",".join(members) + b"}"
    rec = assert_redacted(value)
    kept = embedded(rec)
    if depth < 500:  # shallow enough to read back here: the other fields survive
        assert {k: v for k, v in json.loads(kept).items() if k != "nested"} == fields

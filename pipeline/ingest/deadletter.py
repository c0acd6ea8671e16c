"""Dead-letter records: why a message was rejected and where it came from.

A record names the source message (topic, partition, offset) and carries a
bounded, redacted copy of its key and value, base64-encoded. The copy is never
logged, and the reason and detail never quote the payload.

Personal data: the `text` field of a message (comment or DM text) is never
emitted. If the value parses as a JSON object (orjson; if orjson refuses it, the
standard library's more lenient parser is tried, which also accepts NaN, lone
surrogates and UTF-16/32) and that object has a top-level "text" key, the key is
removed and the re-serialized object is embedded instead of the original bytes;
`redacted` lists the removed fields. An object nested deeper than both parsers go
(orjson stops at 1024 levels, the standard library at its recursion limit) is still
an object: its top-level members are found by a scan that matches strings and
brackets in a loop, and the "text" members are cut out of the original text (the
other members stay verbatim). Values that do not parse as a JSON object
(not JSON, truncated JSON, arrays, scalars, undecodable bytes), and values over
MAX_PARSE_BYTES, which are not parsed at all, are embedded unchanged apart from
truncation: we cannot find text in them, so they may still contain it. An empty
`redacted` therefore does not prove the value was checked. Only a top-level
"text" is removed; the schemas define no nested one.

Size: a record must stay far below the 1,000,000-byte message limit even for a
~1 MB input (base64 grows by 4/3). At most VALUE_CAP bytes of the (redacted)
value and KEY_CAP bytes of the key are embedded; `value_truncated` and
`key_truncated` say when only a prefix is. `value_sha256` and `value_size`
always describe the full ORIGINAL value bytes, so an operator can match the
record to the source message, which stays in the source topic at
topic/partition/offset. The worst case record is about 4/3 x (256 + 16) KiB plus
a few hundred bytes, under 380,000 bytes.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.model.events import Invalid

SCHEMA_VERSION = 1

VALUE_CAP = 256 * 1024
"""Most bytes of a (redacted) value embedded in a record."""
KEY_CAP = 16 * 1024
"""Most bytes of a key embedded in a record."""
MAX_PARSE_BYTES = 1024 * 1024
"""Values larger than this are not parsed (so not redacted), only truncated."""
PERSONAL_FIELDS = ("text",)
"""Top-level fields removed from a value that parses as a JSON object."""


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _dumps_stdlib(obj: Any) -> bytes:
    # ASCII escapes keep lone surrogates encodable; NaN and huge ints round-trip.
    return json.dumps(obj, separators=(",", ":")).encode("ascii")


def _parse_object(value: bytes) -> tuple[dict[str, Any], Callable[[Any], bytes]] | None:
    """The value as a JSON object and the encoder matching the parser that read it,
    or None if it is not an object (or too big to parse). Raises RecursionError if it
    nests deeper than both parsers go."""
    if len(value) > MAX_PARSE_BYTES:
        return None
    dumps: Callable[[Any], bytes] = orjson.dumps
    try:
        obj = orjson.loads(value)
    except orjson.JSONDecodeError:
        dumps = _dumps_stdlib
        try:
            obj = json.loads(value)
        except ValueError:  # UnicodeDecodeError is a ValueError
            return None
    return (obj, dumps) if isinstance(obj, dict) else None


def _redact(value: bytes) -> tuple[bytes, list[str]]:
    """The bytes to embed for `value` and the names of the fields removed from it."""
    try:
        parsed = _parse_object(value)
    except RecursionError:  # an object (perhaps) too deep to parse: scan it instead
        return _cut_members(value) or (value, [])
    if parsed is None:
        return value, []
    obj, dumps = parsed
    removed = [f for f in PERSONAL_FIELDS if f in obj]
    if not removed:
        return value, []
    for f in removed:
        del obj[f]
    for encode in (dumps, _dumps_stdlib):
        try:
            return encode(obj), removed
        except (TypeError, ValueError, RecursionError):  # e.g. orjson's depth limit of 254
            continue
    cut = _cut_members(value)  # too deep to re-encode: cut the text out of the original
    return (cut[0] if cut and cut[1] == removed else b""), removed


# A JSON string (escapes skipped, not checked); a bracket, or a quote that opens a
# string that never ends.
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_TOKEN = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"|[\[\]{}"]', re.DOTALL)
_SCALAR = re.compile(r"[^\s,\]}]+")
_WS = re.compile(r"[ \t\n\r]*")
_CLOSER = {"[": "]", "{": "}"}


def _cut_members(value: bytes) -> tuple[bytes, list[str]] | None:
    """`value` with its top-level PERSONAL_FIELDS cut out of the text, found without
    recursion however deep the value nests, and the fields removed; None if the value
    is not text shaped like a JSON object."""
    try:
        encoding = json.detect_encoding(value)
        text = value.decode(encoding)
    except (UnicodeDecodeError, LookupError):
        return None
    members = _members(text)
    if members is None:
        return None
    removed = [f for f in PERSONAL_FIELDS if any(key == f for key, _ in members)]
    if not removed:
        return value, []
    kept = ",".join(member for key, member in members if key not in PERSONAL_FIELDS)
    return ("{" + kept + "}").encode(encoding), removed


def _members(s: str) -> list[tuple[str, str]] | None:
    """(key, member text) of each top-level member of the JSON object text `s`, or
    None if `s` is not shaped like one. Nested values are only matched, not checked."""
    i = _ws(s, 0)
    if not s.startswith("{", i):
        return None
    i = _ws(s, i + 1)
    members: list[tuple[str, str]] = []
    if not s.startswith("}", i):
        while True:
            m = _STRING.match(s, i)
            if m is None:
                return None
            try:
                key = json.loads(m.group())
            except ValueError:
                return None
            j = _ws(s, m.end())
            if not s.startswith(":", j):
                return None
            end = _value_end(s, _ws(s, j + 1))
            if end is None:
                return None
            members.append((key, s[i:end]))
            i = _ws(s, end)
            if s.startswith("}", i):
                break
            if not s.startswith(",", i):
                return None
            i = _ws(s, i + 1)
    return members if _ws(s, i + 1) == len(s) else None


def _ws(s: str, i: int) -> int:
    """The index of the first character at or after i that is not JSON whitespace."""
    m = _WS.match(s, i)
    return m.end() if m else i


def _value_end(s: str, i: int) -> int | None:
    """Where the JSON value starting at s[i] ends. Nesting is followed with a stack of
    the closing brackets expected, so no depth is too deep."""
    if i >= len(s):
        return None
    if s[i] == '"':
        m = _STRING.match(s, i)
        return m.end() if m else None
    if s[i] not in _CLOSER:
        m = _SCALAR.match(s, i)
        return m.end() if m else None
    expected: list[str] = []
    for m in _TOKEN.finditer(s, i):
        token = m.group()
        if token in ("[", "{"):
            expected.append(_CLOSER[token])
        elif token in ("]", "}"):
            if not expected or expected.pop() != token:
                return None
            if not expected:
                return m.end()
        elif token == '"':  # a string that never ends
            return None
    return None


def _cap(data: bytes | None, cap: int) -> tuple[bytes | None, bool]:
    if data is None or len(data) <= cap:
        return data, False
    return data[:cap], True


def _payload(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    """The key/value part of a record: embedded (redacted, capped) copies and the
    identity of the original value."""
    redacted: list[str] = []
    embedded = value
    if value is not None:
        embedded, redacted = _redact(value)
    embedded, value_truncated = _cap(embedded, VALUE_CAP)
    key, key_truncated = _cap(key, KEY_CAP)
    return {
        "key_b64": _b64(key),
        "key_truncated": key_truncated,
        "value_b64": _b64(embedded),
        "value_truncated": value_truncated,
        "value_sha256": None if value is None else hashlib.sha256(value).hexdigest(),
        "value_size": None if value is None else len(value),
        "redacted": redacted,
    }


def record(
    invalid: Invalid,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> bytes:
    """A dead-letter record for a message rejected by validation."""
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "reason": invalid.reason,
            "detail": invalid.detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            **_payload(key, value),
            "received_at": _now(),
        }
    )


def too_late_record(event: dict[str, Any], src: list[Any]) -> bytes:
    """An event whose window was already final when it arrived. The canonical event
    (without text, which validation dropped) is kept so it can be re-aggregated;
    value_sha256/value_size describe those canonical bytes."""
    topic, partition, offset = src[0], src[1], src[2]
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "reason": "too_late",
            "detail": "ts: window already final when the event arrived",
            "topic": topic,
            "partition": partition,
            "offset": offset,
            **_payload(None, orjson.dumps(event)),
            "received_at": _now(),
        }
    )

"""Validation of raw input messages against the v1 input contract.

`validate` turns one message value (bytes) into an `Interaction`, an `Exposure`
or an `Invalid`. It accepts exactly what `schemas/interaction.v1.json` and
`schemas/exposure.v1.json` accept (checked by tests/unit/ingest/test_schema_agreement.py)
and never raises on bad input.

Reasons, checked in this order (the first that applies wins):
  empty, oversized, not_utf8, not_json, not_object, missing_field, wrong_type,
  unknown_kind, invalid_value, bad_ts, absurd_ts.

Decisions:
- JSON null means absent: a null required field is `missing_field`.
- A UTF-8 byte order mark is rejected (`not_json`, RFC 8259 section 8.1), as are
  NaN/Infinity, lone surrogate escapes and nesting deeper than 1024 (orjson's
  limit). Duplicate keys: the last one wins.
- Integers are defined by value as in JSON Schema: 1.7e12 is the integer
  1700000000000; a number with a fractional part is `wrong_type`. Booleans are
  never numbers.
- RFC 3339 strings: 'T'/'t' separator, 'Z'/'z' or +hh:mm/-hh:mm offset required,
  valid calendar date, no leap second, any number of fraction digits (truncated
  to milliseconds). The plausible range is on the written year (2000..2099,
  before the offset is applied), so the instant may fall slightly outside the
  integer range [2000-01-01Z, 2100-01-01Z) that applies to epoch milliseconds.
- `Invalid.detail` names the field and the rule, never a payload value.
- Message text is checked (at most 20000 characters) and dropped.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from datetime import date
from typing import Any, Final

import orjson

from pipeline.model import wire
from pipeline.model.events import KINDS, PRIORITIES, Exposure, Interaction, Invalid

__all__ = ["FAMILIES", "REASONS", "TS_MAX_MS", "TS_MIN_MS", "validate", "validate_row"]

REASONS: Final[tuple[str, ...]] = (
    "empty",
    "oversized",
    "not_utf8",
    "not_json",
    "not_object",
    "missing_field",
    "wrong_type",
    "unknown_kind",
    "invalid_value",
    "bad_ts",
    "absurd_ts",
)
FAMILIES: Final[tuple[str, ...]] = ("interaction", "exposure")

TS_MIN_MS: Final = 946_684_800_000  # 2000-01-01T00:00:00Z, inclusive
TS_MAX_MS: Final = 4_102_444_800_000  # 2100-01-01T00:00:00Z, exclusive
YEAR_MIN: Final = 2000
YEAR_MAX: Final = 2099
MAX_ID_LEN: Final = 128
MAX_TEXT_LEN: Final = 20_000
MAX_COUNT: Final = 10**12

_CHANNEL_RE: Final = re.compile(r"[a-z0-9_-]{1,32}")  # used with fullmatch
_TS_RE: Final = re.compile(
    r"([0-9]{4})-([0-9]{2})-([0-9]{2})[Tt]([0-9]{2}):([0-9]{2}):([0-9]{2})"
    r"(?:\.([0-9]+))?(?:[Zz]|([+-])([0-9]{2}):([0-9]{2}))"
)  # used with fullmatch; field ranges are checked in code
_EPOCH_ORDINAL: Final = date(1970, 1, 1).toordinal()

_NEEDS_POST: Final = frozenset(("like", "comment", "share"))
_KINDS: Final = frozenset(KINDS)
_PRIORITIES: Final = frozenset(PRIORITIES)

_I_REQUIRED: Final = ("event_id", "kind", "channel", "account_id", "ts")
_I_REQUIRED_STR: Final = ("event_id", "kind", "channel", "account_id")
_I_OPTIONAL_IDS: Final = ("post_id", "actor_id", "in_reply_to", "thread_id", "issue_type")
_I_OPTIONAL_STR: Final = (*_I_OPTIONAL_IDS, "priority", "text")
_E_REQUIRED: Final = ("account_id", "channel", "ts")
_E_COUNTS: Final = ("followers", "impressions", "reach")
_ALL_FIELDS: Final = (*_I_REQUIRED, *_I_OPTIONAL_STR, "sentiment", *_E_COUNTS)


# Every Invalid the validator can return except `oversized` is built once here:
# the error path allocates nothing, and no detail can ever carry a payload value.
def _table(reason: str, fields: Iterable[str], rule: str) -> dict[str, Invalid]:
    return {f: Invalid(reason, f"{f}: {rule}") for f in fields}


_EMPTY: Final = Invalid("empty", "message: no value")
_NOT_UTF8: Final = Invalid("not_utf8", "message: not valid UTF-8")
_NOT_JSON: Final = Invalid("not_json", "message: not valid JSON")
_NOT_OBJECT: Final = Invalid("not_object", "message: must be a JSON object")
_MISSING: Final = _table("missing_field", _ALL_FIELDS, "required")
_MISSING_POST: Final = Invalid(
    "missing_field", "post_id: required when kind is like, comment, share"
)
_MISSING_REPLY_TO: Final = Invalid("missing_field", "in_reply_to: required when kind is reply")
_MISSING_COUNTS: Final = Invalid(
    "missing_field", "followers|impressions|reach: at least one required"
)
_NOT_STR: Final = _table("wrong_type", _ALL_FIELDS, "must be a string")
_TS_TYPE: Final = Invalid(
    "wrong_type", "ts: must be an RFC 3339 string or integer epoch milliseconds"
)
_SENTIMENT_TYPE: Final = Invalid("wrong_type", "sentiment: must be a number")
_NOT_INT: Final = _table("wrong_type", _E_COUNTS, "must be an integer")
_UNKNOWN_KIND: Final = Invalid("unknown_kind", f"kind: must be one of {', '.join(KINDS)}")
_ID_LEN: Final = _table("invalid_value", _ALL_FIELDS, f"length must be 1..{MAX_ID_LEN}")
_CHANNEL: Final = Invalid("invalid_value", "channel: must match [a-z0-9_-]{1,32}")
_PRIORITY: Final = Invalid("invalid_value", f"priority: must be one of {', '.join(PRIORITIES)}")
_SENTIMENT: Final = Invalid("invalid_value", "sentiment: must be in [-1, 1]")
_TEXT_LEN: Final = Invalid("invalid_value", f"text: length must be <= {MAX_TEXT_LEN}")
_COUNT_RANGE: Final = _table("invalid_value", _E_COUNTS, "must be in [0, 10**12]")
_TS_SYNTAX: Final = Invalid(
    "bad_ts", "ts: must be RFC 3339 YYYY-MM-DDThh:mm:ss[.frac](Z|+hh:mm|-hh:mm)"
)
_TS_FIELDS: Final = Invalid("bad_ts", "ts: hour, minute, second or offset out of range")
_TS_DATE: Final = Invalid("bad_ts", "ts: not a calendar date")
_TS_YEAR: Final = Invalid("absurd_ts", f"ts: written year must be {YEAR_MIN}..{YEAR_MAX}")
_TS_RANGE: Final = Invalid(
    "absurd_ts", f"ts: epoch milliseconds must be in [{TS_MIN_MS}, {TS_MAX_MS})"
)


def validate(
    raw: bytes | None, *, kind_family: str, max_bytes: int = 65536
) -> Interaction | Exposure | Invalid:
    """Validate one message value of `kind_family` ("interaction" or "exposure").

    Never raises on bad input; raises ValueError for an unknown kind_family.
    """
    row = validate_row(raw, kind_family=kind_family, max_bytes=max_bytes, src=None)
    if isinstance(row, Invalid):
        return row
    if row[0] == wire.INTERACTION:
        return Interaction(*row[wire.I_ID : wire.I_SRC])
    return Exposure(*row[wire.X_ACCOUNT : wire.X_SRC])


def validate_row(
    raw: bytes | None, *, kind_family: str, max_bytes: int, src: list[Any] | None
) -> wire.Row | Invalid:
    """`validate`, straight into the internal topic's row format (`src`: the
    message's [topic, partition, offset, broker time in ms]): the router's path,
    without an event object per message. The same checks decide both."""
    if kind_family == "interaction":
        check: Callable[[dict[str, Any], list[Any] | None], wire.Row | Invalid] = _interaction
    elif kind_family == "exposure":
        check = _exposure
    else:
        raise ValueError(f"kind_family must be one of {FAMILIES}")
    if not raw:
        return _EMPTY
    if len(raw) > max_bytes:
        return Invalid("oversized", f"message: larger than {max_bytes} bytes")
    try:
        obj = orjson.loads(raw)
    except orjson.JSONDecodeError:
        # orjson rejects invalid UTF-8 too; tell the two apart on the error path only.
        try:
            raw.decode("utf-8")
        except UnicodeDecodeError:
            return _NOT_UTF8
        return _NOT_JSON
    if type(obj) is not dict:
        return _NOT_OBJECT
    return check(obj, src)


def _interaction(o: dict[str, Any], src: list[Any] | None) -> wire.Row | Invalid:
    # missing_field
    for f in _I_REQUIRED:
        if o.get(f) is None:
            return _MISSING[f]
    kind = o["kind"]
    if type(kind) is str:
        if kind in _NEEDS_POST and o.get("post_id") is None:
            return _MISSING_POST
        if kind == "reply" and o.get("in_reply_to") is None:
            return _MISSING_REPLY_TO
    # wrong_type
    for f in _I_REQUIRED_STR:
        if type(o[f]) is not str:
            return _NOT_STR[f]
    ts = o["ts"]
    if not _ts_type_ok(ts):
        return _TS_TYPE
    for f in _I_OPTIONAL_STR:
        v = o.get(f)
        if v is not None and type(v) is not str:
            return _NOT_STR[f]
    sentiment = o.get("sentiment")
    st = type(sentiment)
    if sentiment is not None and st is not float and st is not int:
        return _SENTIMENT_TYPE
    # unknown_kind
    if kind not in _KINDS:
        return _UNKNOWN_KIND
    # invalid_value
    for f in ("event_id", "account_id"):
        if len(o[f]) > MAX_ID_LEN or not o[f]:
            return _ID_LEN[f]
    channel = o["channel"]
    if _CHANNEL_RE.fullmatch(channel) is None:
        return _CHANNEL
    for f in _I_OPTIONAL_IDS:
        v = o.get(f)
        if v is not None and (len(v) > MAX_ID_LEN or not v):
            return _ID_LEN[f]
    priority = o.get("priority")
    if priority is None:
        priority = "normal"
    elif priority not in _PRIORITIES:
        return _PRIORITY
    if sentiment is not None:
        if not -1 <= sentiment <= 1:
            return _SENTIMENT
        sentiment = float(sentiment)
    text = o.get("text")
    if text is not None and len(text) > MAX_TEXT_LEN:
        return _TEXT_LEN
    # bad_ts, absurd_ts
    ts_ms = _ts_ms(ts)
    if isinstance(ts_ms, Invalid):
        return ts_ms
    return [
        wire.INTERACTION,
        o["event_id"],
        kind,
        channel,
        o["account_id"],
        ts_ms,
        o.get("post_id"),
        o.get("actor_id"),
        o.get("in_reply_to"),
        o.get("thread_id"),
        o.get("issue_type"),
        priority,
        sentiment,
        src,
    ]


def _exposure(o: dict[str, Any], src: list[Any] | None) -> wire.Row | Invalid:
    # missing_field
    for f in _E_REQUIRED:
        if o.get(f) is None:
            return _MISSING[f]
    followers = o.get("followers")
    impressions = o.get("impressions")
    reach = o.get("reach")
    if followers is None and impressions is None and reach is None:
        return _MISSING_COUNTS
    # wrong_type
    account_id = o["account_id"]
    if type(account_id) is not str:
        return _NOT_STR["account_id"]
    channel = o["channel"]
    if type(channel) is not str:
        return _NOT_STR["channel"]
    ts = o["ts"]
    if not _ts_type_ok(ts):
        return _TS_TYPE
    post_id = o.get("post_id")
    if post_id is not None and type(post_id) is not str:
        return _NOT_STR["post_id"]
    for f, v in (("followers", followers), ("impressions", impressions), ("reach", reach)):
        if v is not None and not _int_ok(v):
            return _NOT_INT[f]
    # invalid_value
    if len(account_id) > MAX_ID_LEN or not account_id:
        return _ID_LEN["account_id"]
    if _CHANNEL_RE.fullmatch(channel) is None:
        return _CHANNEL
    if post_id is not None and (len(post_id) > MAX_ID_LEN or not post_id):
        return _ID_LEN["post_id"]
    for f, v in (("followers", followers), ("impressions", impressions), ("reach", reach)):
        if v is not None and not 0 <= v <= MAX_COUNT:
            return _COUNT_RANGE[f]
    # bad_ts, absurd_ts
    ts_ms = _ts_ms(ts)
    if isinstance(ts_ms, Invalid):
        return ts_ms
    return [
        wire.EXPOSURE,
        account_id,
        channel,
        ts_ms,
        post_id,
        None if followers is None else int(followers),
        None if impressions is None else int(impressions),
        None if reach is None else int(reach),
        src,
    ]


def _int_ok(v: object) -> bool:
    """An integer by JSON Schema's definition (by value); booleans are not."""
    return type(v) is int or (type(v) is float and v.is_integer())


def _ts_type_ok(ts: object) -> bool:
    return type(ts) is str or _int_ok(ts)


def _ts_ms(ts: str | int | float) -> int | Invalid:
    """Epoch milliseconds of a ts that passed `_ts_type_ok`, or why it is bad."""
    if type(ts) is not str:
        ms = int(ts)
        if ms < TS_MIN_MS or ms >= TS_MAX_MS:
            return _TS_RANGE
        return ms
    m = _TS_RE.fullmatch(ts)
    if m is None:
        return _TS_SYNTAX
    year, month, day, hh, mm, ss, frac, sign, off_h, off_m = m.groups()
    hour, minute, second = int(hh), int(mm), int(ss)
    if hour > 23 or minute > 59 or second > 59:  # second 60 (leap second) is rejected
        return _TS_FIELDS
    offset = 0
    if sign is not None:
        oh, om = int(off_h), int(off_m)
        if oh > 23 or om > 59:
            return _TS_FIELDS
        offset = oh * 3600 + om * 60
        if sign == "-":
            offset = -offset
    y = int(year)
    try:
        days = date(y, int(month), int(day)).toordinal() - _EPOCH_ORDINAL
    except ValueError:  # month 00/13, day 00 or past the month's end, year 0000
        return _TS_DATE
    if y < YEAR_MIN or y > YEAR_MAX:
        return _TS_YEAR
    ms = int(frac[:3].ljust(3, "0")) if frac else 0
    return (days * 86400 + hour * 3600 + minute * 60 + second - offset) * 1000 + ms

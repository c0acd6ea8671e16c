"""Sample input messages (schema v1) for tests, demos and the traffic generator.

- MALFORMED: (name, expected reason, raw value) for kind_family "interaction".
- MALFORMED_EXPOSURE: the same for kind_family "exposure".
- VALID / VALID_EXPOSURE: (name, raw value) that `pipeline.ingest.validation.validate`
  accepts.

Every malformed interaction that has a string event_id has a distinct one
("m-<name>"), so its dead letter is easy to find. Every raw value is <= 80 KB.
"""

from __future__ import annotations

from typing import Any, Final

import orjson

__all__ = [
    "MALFORMED",
    "MALFORMED_EXPOSURE",
    "VALID",
    "VALID_EXPOSURE",
    "malformed_interaction_payloads",
]


class _Drop:
    """Marker: remove the field from the base object."""


DROP: Final = _Drop()

_TS: Final = "2024-05-01T12:00:00Z"  # = 1714564800000 ms
_TS_MS: Final = 1_714_564_800_000


def _obj(base: dict[str, Any], fields: dict[str, Any]) -> dict[str, Any]:
    obj = dict(base)
    for k, v in fields.items():
        if v is DROP:
            obj.pop(k, None)
        else:
            obj[k] = v
    return obj


def _interaction(event_id: str, /, **fields: Any) -> dict[str, Any]:
    base = {
        "event_id": event_id,
        "kind": "comment",
        "channel": "instagram",
        "account_id": "brand-1",
        "ts": _TS,
        "post_id": "p-1",
    }
    return _obj(base, fields)


def _m(name: str, reason: str, **fields: Any) -> tuple[str, str, bytes]:
    """A malformed interaction: the base comment with `fields` changed."""
    return name, reason, orjson.dumps(_interaction(f"m-{name}", **fields))


def _m_tail(name: str, reason: str, tail: bytes, **fields: Any) -> tuple[str, str, bytes]:
    """A malformed interaction: the base comment, then `tail` spliced in before '}'."""
    raw = orjson.dumps(_interaction(f"m-{name}", **fields))
    return name, reason, raw[:-1] + tail + b"}"


_LONG_ID: Final = "m-event_id_too_long-".ljust(129, "x")
_DEEP: Final = b"[" * 2000 + b"]" * 2000

MALFORMED: Final[list[tuple[str, str, bytes]]] = [
    # before JSON parsing
    ("empty_bytes", "empty", b""),
    _m("oversized_text", "oversized", text="x" * 70_000),
    _m_tail("invalid_utf8_bytes", "not_utf8", b',"text":"\xff\xfe broken"'),
    _m_tail("latin1_text", "not_utf8", b',"text":"caf\xe9"'),
    _m_tail("utf8_encoded_surrogate", "not_utf8", b',"text":"\xed\xa0\x80"'),
    ("invalid_utf8_and_not_json", "not_utf8", b"\x80\x81\x82 garbage"),
    # JSON syntax
    ("truncated_json", "not_json", b'{"event_id": "m-truncated_json", "kind": "li'),
    _m_tail("nan_literal", "not_json", b',"sentiment":NaN'),
    _m_tail("infinity_literal", "not_json", b',"sentiment":Infinity'),
    _m_tail("deep_nesting_2000", "not_json", b',"nested":' + _DEEP),
    _m_tail("lone_surrogate_escape", "not_json", b',"text":"\\ud800"'),
    _m_tail("trailing_comma", "not_json", b","),
    (
        "bom_prefixed",
        "not_json",
        b"\xef\xbb\xbf" + orjson.dumps(_interaction("m-bom_prefixed")),
    ),
    (
        "trailing_garbage",
        "not_json",
        orjson.dumps(_interaction("m-trailing_garbage")) + b" xyz",
    ),
    (
        "two_objects",
        "not_json",
        orjson.dumps(_interaction("m-two_objects-a"))
        + orjson.dumps(_interaction("m-two_objects-b")),
    ),
    ("single_quotes", "not_json", b"{'event_id': 'm-single_quotes', 'kind': 'like'}"),
    ("whitespace_only", "not_json", b"  \n "),
    # not an object
    ("json_array", "not_object", orjson.dumps([_interaction("m-json_array")])),
    ("json_string", "not_object", b'"m-json_string"'),
    ("json_number", "not_object", b"1714564800000"),
    ("null_literal", "not_object", b"null"),
    ("true_literal", "not_object", b"true"),
    # missing_field
    _m("missing_event_id", "missing_field", event_id=DROP),
    _m("missing_kind", "missing_field", kind=DROP),
    _m("missing_channel", "missing_field", channel=DROP),
    _m("missing_account_id", "missing_field", account_id=DROP),
    _m("missing_ts", "missing_field", ts=DROP),
    _m("null_channel", "missing_field", channel=None),
    _m("null_ts", "missing_field", ts=None),
    _m("like_without_post_id", "missing_field", kind="like", post_id=DROP),
    _m("share_post_id_null", "missing_field", kind="share", post_id=None),
    _m("reply_without_in_reply_to", "missing_field", kind="reply", post_id=DROP),
    ("empty_object", "missing_field", b"{}"),
    # wrong_type
    ("event_id_number", "wrong_type", orjson.dumps(_interaction("x", event_id=42))),
    _m("kind_number", "wrong_type", kind=5),
    _m("kind_list", "wrong_type", kind=["like"]),
    _m("channel_object", "wrong_type", channel={"name": "instagram"}),
    _m("account_id_number", "wrong_type", account_id=1001),
    _m("ts_fractional_float", "wrong_type", ts=1_714_564_800_000.5),
    _m("ts_bool", "wrong_type", ts=True),
    _m("ts_object", "wrong_type", ts={"$date": _TS}),
    _m("post_id_number", "wrong_type", post_id=77),
    _m("actor_id_list", "wrong_type", actor_id=["u-1"]),
    _m("priority_number", "wrong_type", priority=1),
    _m("sentiment_string", "wrong_type", sentiment="positive"),
    _m("sentiment_bool", "wrong_type", sentiment=False),
    _m("text_number", "wrong_type", text=3),
    # unknown_kind
    _m("kind_love", "unknown_kind", kind="love"),
    _m("kind_upper_case", "unknown_kind", kind="LIKE"),
    _m("kind_empty", "unknown_kind", kind=""),
    _m("kind_plural", "unknown_kind", kind="likes"),
    _m_tail("duplicate_key_last_wins", "unknown_kind", b',"kind":"love"'),
    # invalid_value
    ("event_id_129_chars", "invalid_value", orjson.dumps(_interaction(_LONG_ID))),
    ("event_id_empty", "invalid_value", orjson.dumps(_interaction(""))),
    _m("account_id_empty", "invalid_value", account_id=""),
    _m("channel_with_space", "invalid_value", channel="Insta Gram"),
    _m("channel_upper_case", "invalid_value", channel="Instagram"),
    _m("channel_33_chars", "invalid_value", channel="c" * 33),
    _m("channel_empty", "invalid_value", channel=""),
    _m("channel_trailing_newline", "invalid_value", channel="instagram\n"),
    _m("channel_non_ascii", "invalid_value", channel="instagrám"),
    _m("post_id_empty", "invalid_value", post_id=""),
    _m("in_reply_to_129_chars", "invalid_value", kind="reply", in_reply_to="r" * 129),
    _m("priority_asap", "invalid_value", priority="asap"),
    _m("priority_upper_case", "invalid_value", priority="HIGH"),
    _m("sentiment_2", "invalid_value", sentiment=2),
    _m("sentiment_below_minus_1", "invalid_value", sentiment=-1.0001),
    _m("text_20001_chars", "invalid_value", text="t" * 20_001),
    # bad_ts
    _m("ts_yesterday", "bad_ts", ts="yesterday"),
    _m("ts_feb_30", "bad_ts", ts="2024-02-30T00:00:00Z"),
    _m("ts_feb_29_non_leap_year", "bad_ts", ts="2023-02-29T00:00:00Z"),
    _m("ts_month_13", "bad_ts", ts="2024-13-01T00:00:00Z"),
    _m("ts_without_offset", "bad_ts", ts="2024-05-01T12:00:00"),
    _m("ts_space_separator", "bad_ts", ts="2024-05-01 12:00:00Z"),
    _m("ts_date_only", "bad_ts", ts="2024-05-01"),
    _m("ts_leap_second", "bad_ts", ts="2016-12-31T23:59:60Z"),
    _m("ts_hour_24", "bad_ts", ts="2024-05-01T24:00:00Z"),
    _m("ts_offset_without_colon", "bad_ts", ts="2024-05-01T12:00:00+0200"),
    _m("ts_offset_hour_24", "bad_ts", ts="2024-05-01T12:00:00+24:00"),
    _m("ts_trailing_newline", "bad_ts", ts=_TS + "\n"),
    _m("ts_empty_fraction", "bad_ts", ts="2024-05-01T12:00:00.Z"),
    _m("ts_numeric_string", "bad_ts", ts="1714564800000"),
    _m("ts_fullwidth_digits", "bad_ts", ts="\uff12\uff10\uff12\uff14-05-01T12:00:00Z"),
    _m("ts_empty_string", "bad_ts", ts=""),
    # absurd_ts
    _m("ts_zero", "absurd_ts", ts=0),
    _m("ts_negative", "absurd_ts", ts=-1),
    _m("ts_epoch_seconds", "absurd_ts", ts=1_714_564_800),
    _m("ts_epoch_microseconds", "absurd_ts", ts=1_714_564_800_000_000),
    _m("ts_just_below_2000", "absurd_ts", ts=946_684_799_999),
    _m("ts_at_2100", "absurd_ts", ts=4_102_444_800_000),
    _m("ts_huge_integral_float", "absurd_ts", ts=1e20),
    _m_tail("ts_integer_beyond_64_bits", "absurd_ts", b',"ts":100000000000000000000000'),
    _m("ts_1970_string", "absurd_ts", ts="1970-01-01T00:00:00Z"),
    _m("ts_year_2100_string", "absurd_ts", ts="2100-01-01T00:00:00Z"),
    _m("ts_year_1999_offset_into_2000", "absurd_ts", ts="1999-12-31T23:30:00-01:00"),
    _m("ts_year_9999", "absurd_ts", ts="9999-12-31T23:59:59Z"),
]


def _exposure(**fields: Any) -> bytes:
    base = {"account_id": "brand-1", "channel": "instagram", "ts": _TS, "followers": 125_000}
    return orjson.dumps(_obj(base, fields))


MALFORMED_EXPOSURE: Final[list[tuple[str, str, bytes]]] = [
    ("empty_bytes", "empty", b""),
    ("oversized", "oversized", _exposure(note="n" * 70_000)),
    ("invalid_utf8", "not_utf8", _exposure()[:-1] + b',"note":"\xc3\x28"}'),
    ("truncated_json", "not_json", _exposure()[:-5]),
    ("json_array", "not_object", b"[" + _exposure() + b"]"),
    ("missing_account_id", "missing_field", _exposure(account_id=DROP)),
    ("missing_ts", "missing_field", _exposure(ts=DROP)),
    ("no_counts", "missing_field", _exposure(followers=DROP)),
    ("all_counts_null", "missing_field", _exposure(followers=None, impressions=None, reach=None)),
    ("followers_string", "wrong_type", _exposure(followers="1000")),
    ("reach_fractional", "wrong_type", _exposure(reach=10.5)),
    ("impressions_bool", "wrong_type", _exposure(impressions=True)),
    ("channel_number", "wrong_type", _exposure(channel=7)),
    ("ts_float", "wrong_type", _exposure(ts=1_714_564_800_000.25)),
    ("followers_negative", "invalid_value", _exposure(followers=-1)),
    ("reach_above_10_12", "invalid_value", _exposure(reach=10**12 + 1)),
    ("channel_upper_case", "invalid_value", _exposure(channel="Instagram")),
    ("post_id_empty", "invalid_value", _exposure(post_id="")),
    ("ts_no_offset", "bad_ts", _exposure(ts="2024-05-01T12:00:00")),
    ("ts_zero", "absurd_ts", _exposure(ts=0)),
    ("ts_1999", "absurd_ts", _exposure(ts="1999-06-01T00:00:00Z")),
]


def _v(name: str, **fields: Any) -> tuple[str, bytes]:
    return name, orjson.dumps(_interaction(f"v-{name}", **fields))


VALID: Final[list[tuple[str, bytes]]] = [
    _v("comment_minimal"),
    _v("like_epoch_ms", kind="like", ts=_TS_MS, actor_id="u-1"),
    _v("share_full", kind="share", actor_id="u-2", thread_id="t-1", issue_type="promo"),
    _v("mention_no_post", kind="mention", post_id=DROP, channel="x", sentiment=-0.8),
    _v("dm_urgent", kind="dm", post_id=None, channel="facebook", priority="urgent"),
    _v("reply_to_dm", kind="reply", post_id=DROP, in_reply_to="v-dm_urgent"),
    _v("comment_optional_nulls", actor_id=None, thread_id=None, issue_type=None, text=None),
    _v("comment_priority_null", priority=None, sentiment=None),
    _v("comment_sentiment_minus_1", sentiment=-1),
    _v("comment_sentiment_plus_1", sentiment=1.0),
    _v("comment_unicode_text", text="Où est ma commande ? 🙂 注文はどこ", actor_id="ü-1"),
    _v("comment_extra_fields", lang="fr", meta={"source": "api", "v": [1, 2]}, schema=1),
    _v("comment_text_20000_chars", text="t" * 20_000),
    _v("comment_ts_fraction_truncated", ts="2024-05-01T12:00:00.123999Z"),
    _v("comment_ts_one_fraction_digit", ts="2024-05-01T12:00:00.5Z"),
    _v("comment_ts_positive_offset", ts="2024-05-01T17:30:00+05:30"),
    _v("comment_ts_negative_offset", ts="2024-05-01T04:00:00-08:00"),
    _v("comment_ts_minus_zero_offset", ts="2024-05-01T12:00:00-00:00"),
    _v("comment_ts_lower_case_t_z", ts="2024-05-01t12:00:00z"),
    _v("comment_ts_leap_day", ts="2024-02-29T23:59:59Z"),
    _v("comment_ts_integral_float", ts=1.7145648e12),
    _v("comment_ts_min_epoch", ts=946_684_800_000),
    _v("comment_ts_max_epoch", ts=4_102_444_799_999),
    _v("comment_ts_min_string", ts="2000-01-01T00:00:00Z"),
    _v("comment_ts_max_string", ts="2099-12-31T23:59:59.999Z"),
    _v("comment_ts_year_2000_offset_before", ts="2000-01-01T00:30:00+01:00"),
    _v("comment_ts_year_2099_offset_after", ts="2099-12-31T23:30:00-01:00"),
    _v("comment_max_lengths", account_id="a" * 128, channel="c" * 32, post_id="p" * 128),
    _v("comment_channel_charset", channel="my_channel-2"),
    _v("like_priority_low", kind="like", priority="low"),
    _v("mention_priority_high", kind="mention", priority="high", post_id=None),
]


VALID_EXPOSURE: Final[list[tuple[str, bytes]]] = [
    ("followers_only", _exposure()),
    ("impressions_only", _exposure(followers=DROP, impressions=5400)),
    ("reach_only_epoch", _exposure(followers=None, reach=3100, ts=_TS_MS)),
    ("all_counts_post", _exposure(post_id="p-1", impressions=5400, reach=0)),
    ("zero_and_max", _exposure(followers=0, reach=10**12)),
    ("integral_float_count", _exposure(followers=1e3)),
    ("extra_fields_offset", _exposure(ts="2024-05-01T14:00:00+02:00", source="api")),
]


def malformed_interaction_payloads() -> list[tuple[str, bytes]]:
    """(expected reason, raw value) for every malformed interaction sample."""
    return [(reason, raw) for _, reason, raw in MALFORMED]

"""Fuzz: Hypothesis-generated payloads, invalid by construction or valid, mixed over every
input topic and partition, through one real worker.

Every payload carries its label: the dead-letter reason it must get, or "valid" with
the event it must count as. Before anything is produced, `validate` must agree with
each label, so a generator bug fails in generation, not as a worker bug.

The worker then has to keep up, dead-letter every invalid message exactly once (by
source topic, partition and offset) with the right reason and an intact identity,
count the valid ones exactly (windows equal the truth), keep its metrics exact and
never let the message text out. Text (with SENTINEL) is put only where the contract
promises to remove it: in the top-level `text` of values that are JSON objects
(undecodable bytes, truncated JSON and non-objects are embedded as they came).

Hypothesis draws at most 8,192 choices per example (a few hundred payloads), so the
payloads are drawn as BATCHES examples of one batch each, generate phase only (no
shrinking, no database), and collected; the worker runs once, on all of them.
Set ENGAGEMENT_FUZZ_SEED to replay a run's payloads.
"""

from __future__ import annotations

import base64
import codecs
import hashlib
import json
import os
import random
import re
import time
import urllib.request
from collections import Counter
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis import strategies as st

from pipeline.ingest.deadletter import KEY_CAP
from pipeline.ingest.validation import TS_MAX_MS, TS_MIN_MS, validate
from pipeline.model.events import KINDS, PRIORITIES, Exposure, Interaction, Invalid
from tests.integration.conftest import RAW, Env, wait_for
from tests.integration.test_windows import BASE_MS, FIELDS, published, truth
from tests.unit.strategies import json_values

pytestmark = pytest.mark.integration

SENTINEL = "PRIVATE-FUZZ-SENTINEL-4d2a"
MAX_BYTES = 65536  # limits.max_message_bytes (default)
HOUR_MS = 3_600_000
BATCHES, BATCH_SIZE = 100, 30  # about 3,000 payloads
INTERACTION_TOPICS = ("likes", "comments", "shares", "mentions", "dms", "replies")
NEEDS_POST = ("like", "comment", "share")
OPTIONAL_IDS = ("post_id", "actor_id", "in_reply_to", "thread_id", "issue_type")
KNOWN = {
    *("event_id", "kind", "channel", "account_id", "ts", *OPTIONAL_IDS, "priority"),
    *("sentiment", "text", "followers", "impressions", "reach"),
}
CHANNEL_RE = re.compile(r"[a-z0-9_-]{1,32}")
DEEP = "@@deep-7f1c@@"  # placeholder for a nested value orjson cannot encode
FUTURE_MS = int(time.time() * 1000) + 2 * 86_400_000  # far past limits.max_future_s

# Large lateness, no idle advance: no valid event can be too late; close_all ends it.
CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 7200
grace_s = 0
idle_after_s = 3600

[dedup]
horizon_s = 9000
"""


@dataclass
class Case:
    topic: str  # social.<topic>
    value: bytes | None
    reason: str | None  # the expected dead-letter reason; None: valid
    redact: bool = False  # a JSON object with a top-level "text": must be redacted
    what: str = ""  # which generator made it
    event: dict[str, Any] | None = None  # valid: the event as truth() takes it
    key: bytes | None = None
    partition: int | None = None


# -- building blocks -------------------------------------------------------------------
chars = st.characters(codec="utf-8")
short = st.text(chars, min_size=1, max_size=8)
ids = st.one_of(
    short, st.sampled_from(["a", "u-1", "ü", "🦄 x"]), st.builds(lambda c: c * 128, chars)
)
accounts = st.one_of(st.sampled_from(["acme", "globex", "initech"]), ids)
channels = st.one_of(
    st.sampled_from(["instagram", "x", "tiktok"]),
    st.from_regex(CHANNEL_RE, fullmatch=True).filter(lambda c: c != "closer"),
)
not_str = json_values(4, 3, 4).filter(lambda v: v is not None and not isinstance(v, str))
int64 = st.integers(-(2**63), 2**63 - 1)
not_number = st.one_of(  # nor a string: wrong for every field the schemas define
    st.booleans(), st.lists(int64, max_size=2), st.dictionaries(short, int64, max_size=2)
)
fractional = st.floats(allow_nan=False, allow_infinity=False).filter(lambda f: not f.is_integer())
not_int_or_str = not_number | fractional
long_id = st.builds(lambda c, n: c * n, chars, st.integers(129, 300))


def rfc3339(ms: int, offset_min: int | None = None, digits: str = "", lower: bool = False) -> str:
    """`ms` in RFC 3339: "Z" or a UTC offset, extra fraction digits, lower-case t/z."""
    local = datetime.fromtimestamp(ms // 1000, tz=UTC) + timedelta(minutes=offset_min or 0)
    out = local.strftime("%Y-%m-%dT%H:%M:%S")
    if ms % 1000 or digits:
        out += f".{ms % 1000:03d}{digits}"
    if offset_min is None:
        out += "Z"
    else:
        sign = "-" if offset_min < 0 else "+"
        out += f"{sign}{abs(offset_min) // 60:02d}:{abs(offset_min) % 60:02d}"
    return out.lower() if lower else out


@st.composite
def ts_as(draw: st.DrawFn, ms: int) -> int | float | str:
    """One of the many ways to write the instant `ms` validly."""
    style = draw(st.sampled_from(["int", "float", "string", "string", "offset"]))
    if style == "int":
        return ms
    if style == "float":
        return float(ms)  # an integer by value
    offset = draw(st.integers(-(23 * 60 + 59), 23 * 60 + 59)) if style == "offset" else None
    return rfc3339(ms, offset, draw(st.text("0123456789", max_size=4)), draw(st.booleans()))


def pick(draw: st.DrawFn, strategy: st.SearchStrategy[Any], required: bool = False) -> Any:
    """absent (returns ...), null or a value."""
    how = "value" if required else draw(st.sampled_from(["absent", "null", "value"]))
    return ... if how == "absent" else None if how == "null" else draw(strategy)


def put(obj: dict[str, Any], field: str, value: Any) -> None:
    if value is not ...:
        obj[field] = value


def big_string(draw: st.DrawFn, max_chars: int, max_bytes: int) -> str:
    c = draw(chars)
    unit = len(orjson.dumps(c)) - 2  # control characters are escaped as \u00XX
    return c * draw(st.integers(1, min(max_chars, max_bytes // unit)))


@st.composite
def interaction(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    """A valid interaction and its event time."""
    kind = draw(st.sampled_from(KINDS))
    ms = BASE_MS + draw(st.integers(0, HOUR_MS - 1))
    ev = {"event_id": draw(ids), "kind": kind, "channel": draw(channels)}
    ev.update(account_id=draw(accounts), ts=draw(ts_as(ms)))
    for f in OPTIONAL_IDS:
        need = (f == "post_id" and kind in NEEDS_POST) or (f == "in_reply_to" and kind == "reply")
        put(ev, f, pick(draw, ids, need))
    put(ev, "priority", pick(draw, st.sampled_from(PRIORITIES)))
    put(ev, "sentiment", pick(draw, st.floats(-1, 1) | st.sampled_from([-1, 0, 1])))
    big = draw(st.sampled_from(["", "", "", "text", "note", "deep"]))
    if big == "text":  # large, under both the text and the message limit
        ev["text"] = SENTINEL + big_string(draw, 20_000 - len(SENTINEL), 50_000)
    else:
        put(ev, "text", pick(draw, st.text(chars, max_size=10).map(SENTINEL.__add__)))
    if big == "note":
        ev["note"] = big_string(draw, 60_000, 55_000)
    elif big == "deep":  # moderately deep: within what the parser takes
        ev["meta"] = DEEP, draw(st.integers(2, 1000))
    elif draw(st.booleans()):  # unknown fields are allowed
        ev[draw(short.filter(lambda k: k not in KNOWN))] = draw(json_values(4, 3, 4))
    return ev, ms


@st.composite
def exposure(draw: st.DrawFn) -> tuple[dict[str, Any], int]:
    ms = BASE_MS + draw(st.integers(0, HOUR_MS - 1))
    x = {"account_id": draw(accounts), "channel": draw(channels), "ts": draw(ts_as(ms))}
    put(x, "post_id", pick(draw, ids))
    counts = st.integers(0, 10**12) | st.integers(0, 10**6).map(float)
    first = draw(st.sampled_from(["followers", "impressions", "reach"]))
    for f in ("followers", "impressions", "reach"):
        put(x, f, pick(draw, counts, required=f == first))
    return x, ms


def dumps(obj: dict[str, Any]) -> bytes:
    """orjson, with a DEEP placeholder (DEEP, depth) replaced by nested arrays."""
    deep = {k: v for k, v in obj.items() if isinstance(v, tuple)}
    raw = orjson.dumps({k: (DEEP if k in deep else v) for k, v in obj.items()})
    for _, depth in deep.values():
        raw = raw.replace(orjson.dumps(DEEP), b"[" * depth + b"]" * depth, 1)
    return raw


def splice(obj: dict[str, Any], tail: bytes) -> bytes:
    """The object's JSON with `tail` (`"key":value` bytes) as its last member."""
    return dumps(obj)[:-1] + b"," + tail + b"}"


# -- invalid by construction -------------------------------------------------------------
bad_ts = st.one_of(
    st.text(chars, max_size=8).map(lambda t: "x" + t),
    st.sampled_from(
        [
            *("", "2026-01-05 10:00:00Z", "2026-01-05T10:00:00", "2026-01-05"),
            *("2026-01-05T10:00Z", "2026-01-05T10:00:00.Z", "2026-01-05T10:00:00+0100"),
            *(" 2026-01-05T10:00:00Z", "0000-01-01T00:00:00Z", "2026-02-29T00:00:00Z"),
            "2026-04-31T00:00:00Z",
        ]
    ),
    st.builds("2026-01-05T{:02d}:00:00Z".format, st.integers(24, 99)),
    st.builds("2026-01-05T10:00:{:02d}Z".format, st.integers(60, 99)),
    st.builds("2026-01-05T10:00:00+{:02d}:00".format, st.integers(24, 99)),
    st.builds("2026-{:02d}-05T10:00:00Z".format, st.sampled_from([0, 13, 42, 99])),
    st.builds("2026-01-{:02d}T10:00:00Z".format, st.sampled_from([0, 32, 99])),
)
absurd_ts = st.one_of(
    st.integers(-(2**63), TS_MIN_MS - 1),
    st.integers(TS_MAX_MS, 2**64 - 1),
    st.integers(TS_MAX_MS, 10**300).map(float),
    st.builds(
        "{:04d}-{:02d}-{:02d}T12:00:00Z".format,
        st.integers(1, 1999) | st.integers(2100, 9999),
        st.integers(1, 12),
        st.integers(1, 28),
    ),
)
future_ts = st.integers(FUTURE_MS, TS_MAX_MS - 1).flatmap(
    lambda ms: st.sampled_from([ms, rfc3339(ms)])
)
bad_channel = st.text(chars, max_size=40).filter(lambda c: not CHANNEL_RE.fullmatch(c))


@st.composite
def mutated_interaction(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    """A valid interaction with exactly one thing wrong, the reason, what was changed."""
    ev, _ = draw(interaction())
    ev.pop("note", None)  # room for a large wrong value under the size limit
    m = draw(st.sampled_from(sorted(INTERACTION_MUTATIONS)))
    if m == "missing":
        f = draw(st.sampled_from(["event_id", "kind", "channel", "account_id", "ts"]))
        if draw(st.booleans()):
            ev[f] = None
        else:
            del ev[f]
    elif m in ("missing_post", "missing_reply_to"):
        ev["kind"] = draw(st.sampled_from(NEEDS_POST)) if m == "missing_post" else "reply"
        ev.pop("post_id" if m == "missing_post" else "in_reply_to", None)
    elif m == "wrong_type":
        f = draw(st.sampled_from(["event_id", "kind", "channel", "account_id", *OPTIONAL_IDS]))
        ev[f] = draw(not_str | st.integers(2, 900).map(lambda d: (DEEP, d)))
    elif m == "wrong_type_ts":
        ev["ts"] = draw(not_int_or_str)
    elif m == "wrong_type_other":
        f = draw(st.sampled_from(["priority", "text", "sentiment"]))
        ev[f] = draw(not_number | st.text(chars, max_size=4) if f == "sentiment" else not_str)
    elif m == "unknown_kind":
        ev["kind"] = draw(st.text(chars, max_size=8).filter(lambda k: k not in KINDS))
    elif m == "invalid_id":
        f = draw(st.sampled_from(["event_id", "account_id", *OPTIONAL_IDS]))
        ev[f] = draw(st.just("") | long_id)
    elif m == "invalid_other":
        f = draw(st.sampled_from(["channel", "priority", "sentiment", "text"]))
        ev[f] = draw(
            {
                "channel": bad_channel,
                "priority": st.text(chars, max_size=8).filter(lambda p: p not in PRIORITIES),
                "sentiment": st.floats(allow_nan=False, allow_infinity=False).filter(
                    lambda s: abs(s) > 1
                ),
                "text": st.integers(20_001, 30_000).map(lambda n: SENTINEL.ljust(n, "é")),
            }[f]
        )
    else:  # bad_ts, absurd_ts, future_ts
        ev["ts"] = draw({"bad_ts": bad_ts, "absurd_ts": absurd_ts, "future_ts": future_ts}[m])
    return ev, INTERACTION_MUTATIONS[m], m


INTERACTION_MUTATIONS = {
    "missing": "missing_field",
    "missing_post": "missing_field",
    "missing_reply_to": "missing_field",
    "wrong_type": "wrong_type",
    "wrong_type_ts": "wrong_type",
    "wrong_type_other": "wrong_type",
    "unknown_kind": "unknown_kind",
    "invalid_id": "invalid_value",
    "invalid_other": "invalid_value",
    "bad_ts": "bad_ts",
    "absurd_ts": "absurd_ts",
    "future_ts": "future_ts",
}


@st.composite
def mutated_exposure(draw: st.DrawFn) -> tuple[dict[str, Any], str, str]:
    x, _ = draw(exposure())
    counts = ("followers", "impressions", "reach")
    m = draw(st.sampled_from(["missing", "no_counts", "wrong_type", "invalid", "ts"]))
    if m == "missing":
        x.pop(draw(st.sampled_from(["account_id", "channel", "ts"])))
        return x, "missing_field", m
    if m == "no_counts":
        for f in counts:
            x.pop(f, None) if draw(st.booleans()) else x.update({f: None})
        return x, "missing_field", m
    if m == "wrong_type":
        f = draw(st.sampled_from(["account_id", "channel", "post_id", "ts", *counts]))
        x[f] = draw(not_str if f in ("account_id", "channel", "post_id") else not_int_or_str)
        return x, "wrong_type", m
    if m == "invalid":
        f = draw(st.sampled_from(["account_id", "channel", "post_id", *counts]))
        x[f] = draw(
            bad_channel
            if f == "channel"
            else st.just("") | long_id
            if f in ("account_id", "post_id")
            else st.integers(-(2**63), -1) | st.integers(10**12 + 1, 2**64 - 1)
        )
        return x, "invalid_value", m
    reason = draw(st.sampled_from(["bad_ts", "absurd_ts", "future_ts"]))
    x["ts"] = draw({"bad_ts": bad_ts, "absurd_ts": absurd_ts, "future_ts": future_ts}[reason])
    return x, reason, reason


@st.composite
def malformed(draw: st.DrawFn) -> tuple[bytes | None, str, bool, str]:
    """A value that is not a JSON object of either family: (value, reason, whether it is
    a JSON object with a top-level text after all, which must be redacted, what)."""
    ev, _ = draw(interaction())
    ev.pop("note", None)
    if len(ev.get("text") or "") > 100:
        ev["text"] = SENTINEL
    has_text = "text" in ev
    plain = {k: v for k, v in ev.items() if k != "text"}
    m = draw(st.sampled_from(MALFORMED_KINDS))
    if m == "empty":
        return draw(st.sampled_from([b"", None])), "empty", False, m
    if m == "oversized":
        n = draw(st.integers(MAX_BYTES + 1, 200_000))
        if draw(st.booleans()):
            return draw(st.binary(min_size=1, max_size=4)).ljust(n, b"\x00"), m, False, m
        return dumps({**ev, "text": SENTINEL.ljust(n, "x")}), m, True, m
    if m == "not_utf8_bytes":  # 0xff is never part of UTF-8
        data = draw(st.binary(max_size=200))
        i = draw(st.integers(0, len(data)))
        return data[:i] + b"\xff" + data[i:], "not_utf8", False, m
    if m == "not_utf8_field":
        return splice(plain, b'"note":"caf\xe9"'), "not_utf8", False, m
    if m == "utf16":  # JSON, but starts with 0xff 0xfe
        return codecs.BOM_UTF16_LE + dumps(ev).decode().encode("utf-16-le"), "not_utf8", has_text, m
    if m == "not_json_text":
        return ("#" + draw(st.text(chars, max_size=30))).encode(), "not_json", False, m
    if m == "truncated":
        raw = dumps(plain)
        cut = raw[: draw(st.integers(1, len(raw) - 1))]
        try:
            cut.decode()
        except UnicodeDecodeError:
            return cut, "not_utf8", False, m
        return cut, "not_json", False, m
    if m == "bom":
        return codecs.BOM_UTF8 + dumps(ev), "not_json", has_text, m
    if m == "nan":
        nan = draw(st.sampled_from([b"NaN", b"-Infinity"]))
        return splice(ev, b'"sentiment":' + nan), "not_json", has_text, m
    if m == "lone_surrogate":
        return splice(ev, b'"note":"\\ud83d"'), "not_json", has_text, m
    if m == "too_deep":  # deeper than the parser's limit of 1024
        depth = draw(st.integers(1025, 5000))
        shape = draw(st.sampled_from(["arrays", "objects", "field", "field"]))
        if shape == "arrays":
            return b"[" * depth + b"]" * depth, "not_json", False, m
        if shape == "objects":
            return b'{"a":' * depth + b"1" + b"}" * depth, "not_json", False, m
        return dumps({**ev, "nested": (DEEP, depth)}), "not_json", has_text, m
    if m == "deep_array":  # deep, but within the limit
        depth = draw(st.integers(1, 1024))
        return b"[" * depth + b"]" * depth, "not_object", False, m
    value = draw(json_values(6, 4, 8).filter(lambda v: not isinstance(v, dict)))
    return orjson.dumps(value), "not_object", False, m


MALFORMED_KINDS = [
    *("empty", "oversized", "not_utf8_bytes", "not_utf8_field", "utf16", "not_json_text"),
    *("truncated", "bom", "nan", "lone_surrogate", "too_deep", "too_deep", "deep_array"),
    "not_object",
]
ROUTES = ["account", "account", "account", "none", "partition", "bytes", "huge"]


@st.composite
def payload(draw: st.DrawFn) -> dict[str, Any]:
    """One message, labeled: topic, obj (a dict to encode, or bytes), reason (None:
    valid), ms (valid: event time), redact, and how it is keyed."""
    what = draw(st.sampled_from(MIX))
    topic = draw(st.sampled_from(INTERACTION_TOPICS))
    out: dict[str, Any] = {"reason": None, "ms": 0, "redact": None, "what": what}
    if what == "valid":
        out["obj"], out["ms"] = draw(interaction())
    elif what == "exposure":
        topic = "exposure"
        out["obj"], out["ms"] = draw(exposure())
    elif what == "mutated":
        out["obj"], out["reason"], m = draw(mutated_interaction())
        out["what"] = f"mutated/{m}"
    elif what == "mutated_exposure":
        topic = "exposure"
        out["obj"], out["reason"], m = draw(mutated_exposure())
        out["what"] = f"mutated_exposure/{m}"
    elif what == "malformed":
        topic = draw(st.sampled_from([topic, "exposure"]))
        out["obj"], out["reason"], out["redact"], m = draw(malformed())
        out["what"] = f"malformed/{m}"
    elif draw(st.booleans()):  # a valid message of the other family misses its fields
        out["obj"], out["reason"], topic = draw(interaction())[0], "missing_field", "exposure"
    else:
        out["obj"], out["reason"] = draw(exposure())[0], "missing_field"
    out.update(
        topic=topic,
        route=draw(st.sampled_from(ROUTES)),
        partition=draw(st.integers(0, 3)),
        key=draw(st.binary(max_size=24)),
    )
    return out


MIX = [
    *["valid"] * 8,
    *["exposure"] * 2,
    *["mutated"] * 4,
    *("mutated_exposure", "malformed", "malformed", "wrong_topic"),
]


# -- from drawn payloads to messages -----------------------------------------------------
def family(topic: str) -> str:
    return "exposure" if topic == "exposure" else "interaction"


def build(d: dict[str, Any], n: int, seen: set[Any]) -> Case:
    """The message of a drawn payload, checked against its label. Valid events get a
    unique id; a valid snapshot that repeats an (account, channel, instant) moves on by
    a millisecond (which of the two would set a window's followers would depend on the
    order they arrive in)."""
    obj, reason, ms = d["obj"], d["reason"], d["ms"]
    event = None
    if reason is None and d["topic"] == "exposure":
        while (obj["account_id"], obj["channel"], ms) in seen:
            ms = BASE_MS + (ms - BASE_MS + 1) % HOUR_MS
            obj["ts"] = ms
        seen.add((obj["account_id"], obj["channel"], ms))
        event = {"account_id": obj["account_id"], "channel": obj["channel"], "ts": ms}
        counts = {f: int(obj[f]) for f in ("followers", "impressions") if obj.get(f) is not None}
        event.update(counts)
    elif reason is None:
        suffix = f"#{n}"
        obj["event_id"] = obj["event_id"][: 128 - len(suffix)] + suffix
        event = {k: obj[k] for k in ("event_id", "kind", "channel", "account_id")}
        event["ts"] = ms
        if obj.get("actor_id") is not None:
            event["actor_id"] = obj["actor_id"]
    value = obj if obj is None or isinstance(obj, bytes) else dumps(obj)
    redact = d["redact"] if d["redact"] is not None else "text" in obj
    key: bytes | None = d["key"]
    partition = None
    if d["route"] == "account":
        account = obj.get("account_id") if isinstance(obj, dict) else None
        key = account.encode() if isinstance(account, str) else b"acme"
    elif d["route"] in ("none", "partition"):
        key = None
        partition = d["partition"] if d["route"] == "partition" else None
    elif d["route"] == "huge":
        key = key.ljust(KEY_CAP + 100, b"k")
    if value is None and key is None:
        key = b"tombstone"  # a message needs a key or a value
    check_label(value, d["topic"], reason, ms, obj)
    if reason is not None and not redact:  # text only where the contract removes it
        assert value is None or not any(form in value for form in sentinels()), value[:200]
    return Case(d["topic"], value, reason, redact, d["what"], event, key, partition)


def check_label(value: bytes | None, topic: str, reason: str | None, ms: int, obj: Any) -> None:
    """The validator agrees with the label given by construction."""
    got = validate(value, kind_family=family(topic), max_bytes=MAX_BYTES)
    if reason is None:
        assert isinstance(got, Interaction | Exposure), (got, topic, value[:300])
        assert (got.ts_ms, got.account_id, got.channel) == (
            ms,
            obj["account_id"],
            obj["channel"],
        )
    elif reason == "future_ts":  # valid by the schema; the worker rejects it by wall clock
        assert isinstance(got, Interaction | Exposure), (got, topic, value)
        assert got.ts_ms >= FUTURE_MS
    else:
        assert isinstance(got, Invalid), (reason, topic, (value or b"")[:300])
        assert got.reason == reason, (got, topic, (value or b"")[:300])


def sentinels() -> tuple[bytes, ...]:
    return tuple(SENTINEL.encode(e) for e in ("utf-8", "utf-16-le", "utf-16-be"))


def generate(fuzz_seed: int) -> list[Case]:
    cases: list[Case] = []
    seen: set[Any] = set()

    @seed(fuzz_seed)
    @settings(
        max_examples=BATCHES,
        deadline=None,
        database=None,
        phases=[Phase.generate],
        suppress_health_check=[
            HealthCheck.too_slow,
            HealthCheck.data_too_large,
            HealthCheck.filter_too_much,
            HealthCheck.large_base_example,
        ],
    )
    @given(st.lists(payload(), min_size=BATCH_SIZE, max_size=BATCH_SIZE))
    def batch(drawn: list[dict[str, Any]]) -> None:
        for d in drawn:
            cases.append(build(d, len(cases), seen))

    batch()
    return cases


# -- the test ----------------------------------------------------------------------------
def assigned(worker: Any) -> bool:
    """The worker has joined the group and holds partitions."""
    url = f"http://127.0.0.1:{worker.web_port}/healthz"
    try:
        with urllib.request.urlopen(url, timeout=2) as r:
            return bool(json.load(r)["partitions"])
    except OSError:  # not up yet, or 503
        worker.healthy()  # raises, with the log, if the worker exited
        return False


def check_dead_letter(d: dict[str, Any], case: Case) -> None:
    where = (d["topic"], d["partition"], d["offset"])
    assert d["reason"] == case.reason, where
    if case.value is None:
        assert (d["value_b64"], d["value_sha256"], d["value_size"]) == (None, None, None)
    else:
        assert d["value_sha256"] == hashlib.sha256(case.value).hexdigest(), where
        assert d["value_size"] == len(case.value), where
    if case.key is None:
        assert d["key_b64"] is None, where
    else:
        assert base64.b64decode(d["key_b64"]) == case.key[:KEY_CAP], where
        assert d["key_truncated"] == (len(case.key) > KEY_CAP), where
    embedded = base64.b64decode(d["value_b64"] or "")
    if case.redact:
        assert d["redacted"] == ["text"], where
    else:
        assert d["redacted"] == [], where
        assert (case.value or b"").startswith(embedded), where
        assert d["value_truncated"] or embedded == (case.value or b""), where
    leaks = [form for form in sentinels() if form in embedded]
    assert not leaks and SENTINEL not in json.dumps(d), f"message text in {where}"


def test_fuzzed_payloads_are_dead_lettered_once_and_valid_ones_counted_exactly(
    env: Env,
) -> None:
    fuzz_seed = int(os.environ.get("ENGAGEMENT_FUZZ_SEED") or random.getrandbits(32))
    print(f"\nfuzz seed {fuzz_seed} (ENGAGEMENT_FUZZ_SEED={fuzz_seed} replays the payloads)")
    t = time.monotonic()
    cases = generate(fuzz_seed)
    by_reason = Counter(c.reason for c in cases if c.reason is not None)
    print(f"generated {len(cases)} payloads in {time.monotonic() - t:.1f} s: {dict(by_reason)}")
    assert len(by_reason) >= 12, "the generator covers most reasons"

    app_id = f"{env.prefix}fuzz"
    worker = env.worker(CONFIG, app_id=app_id).start()
    wait_for(lambda: assigned(worker), 60, "partition assignment", worker)
    t0 = time.monotonic()
    sent = [
        (
            c,
            env.producer.send(
                env.topic(f"social.{c.topic}"), c.value, c.key, partition=c.partition
            ),
        )
        for c in cases
    ]
    env.producer.flush()
    at: dict[tuple[str, int, int], Case] = {}
    for c, fut in sent:
        md = fut.get(timeout=30)
        at[(md.topic, md.partition, md.offset)] = c
    env.close_all(BASE_MS + 6 * HOUR_MS)  # every window of the data becomes final
    t_produced = time.monotonic()
    total = len(cases) + len(RAW) * env.raw_partitions

    # keeps up: every input message is processed and committed, in bounded time
    wait_for(lambda: env.committed(app_id, "social.") >= total, 60, "all offsets committed", worker)
    t_done = time.monotonic()
    assert env.committed(app_id, "social.") == total
    print(
        f"produced {total} messages in {t_produced - t0:.1f} s; the worker committed them all "
        f"{t_done - t_produced:.1f} s later: {total / (t_done - t0):,.0f} messages/s overall"
    )

    # every invalid message dead-lettered exactly once, no valid one
    invalid = {w: c for w, c in at.items() if c.reason is not None}
    dead = env.wait_records(
        "engagement.deadletter", lambda rs: len(rs) >= len(invalid), timeout_s=30, worker=worker
    )
    places = Counter((d["topic"], d["partition"], d["offset"]) for d in dead)
    assert [w for w, n in places.items() if n > 1] == [], "dead-lettered more than once"
    assert sorted(set(places) - set(invalid)) == [], "valid messages dead-lettered"
    assert sorted(set(invalid) - set(places)) == [], "invalid messages not dead-lettered"
    problems, kinds = [], Counter[str]()
    for d in dead:
        case = invalid[(d["topic"], d["partition"], d["offset"])]
        try:
            check_dead_letter(d, case)
        except AssertionError as exc:
            value = (case.value or b"")[:120]
            value_repr = f"{value!r}{'...' if len(value) == 120 else ''}"
            problems.append(f"{case.what} -> {case.reason} {value_repr}: {exc}")
            kinds[case.what] += 1
    assert not problems, f"wrong dead letters {dict(kinds)}:\n" + "\n".join(problems[:8])

    # valid ones counted exactly
    events = [c.event for c in cases if c.event is not None and c.topic != "exposure"]
    exposures = [c.event for c in cases if c.event is not None and c.topic == "exposure"]
    expected = truth(events, exposures, (60, 300))
    got = published(env, expected, worker, timeout_s=60)
    assert sorted(set(got) ^ set(expected)) == [], "unexpected or missing windows"
    for key, exp in expected.items():
        assert len(got[key]) == 1, f"window {key} published {len(got[key])} times"
        assert {f: got[key][0][f] for f in FIELDS} == exp, key

    # metrics
    samples = worker.metrics()
    invalid_metric = {
        dict(labels)["reason"]: v
        for (name, labels), v in samples.items()
        if name == "engagement_invalid_events_total" and v
    }
    assert invalid_metric == dict(by_reason)
    counted = sum(v for (name, _), v in samples.items() if name == "engagement_events_total")
    assert counted == len(events) + len(INTERACTION_TOPICS) * env.raw_partitions  # + closers
    assert worker.metric("engagement_duplicate_events_total") == 0
    assert worker.metric("engagement_late_events_total", disposition="dropped") == 0

    assert worker.healthy()
    assert SENTINEL not in worker.log_path.read_text(errors="replace")

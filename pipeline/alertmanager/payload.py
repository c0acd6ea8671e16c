"""alert.v1 record -> one alert of Alertmanager's v2 API (POST /api/v2/alerts).

An alert.v1 record is an event, not a state: nothing ever says it is over. So the
alert is posted with `startsAt` = the record's `emitted_at` and `endsAt` =
`emitted_at` + the resolve timeout: it resolves by itself, and both are read from the
record alone, so a re-delivery posts the very same alert.

Labels identify the alert and carry what routing, grouping, silences and inhibition
match on: `alertname` (the alert's `type`), `severity`, `account`, `channel` (absent
for an alert across all channels), `metric` and `alert_id`. `alert_id` is
deterministic (what was detected, not when), so a re-delivered record has the same
label set and is the same Alertmanager alert (notified once), while two different
alerts of one type and account (two windows, two inbound messages) stay two alerts.
Routes group by `alertname`, `account`, `channel` (never by `...`), so one
notification still collects an account's alerts of one type. Annotations carry the
rest: `message`, `observed`, `expected`, `threshold`, the window, `event_id`.
alert.v1 holds no message text nor personal data, and nothing else is copied.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson

SEVERITIES = ("info", "warning", "critical")
_UTC_TS = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]+)?Z$")
_REQUIRED = (
    "alert_id",
    "schema_version",
    "type",
    "severity",
    "account_id",
    "channel",
    "metric",
    "window_start",
    "window_end",
    "observed",
    "expected",
    "threshold",
    "message",
    "emitted_at",
)


class InvalidAlert(ValueError):
    """A record that is not an alert.v1: `reason` is short and never holds its content."""

    def __init__(self, reason: str) -> None:
        self.reason = reason
        super().__init__(reason)


@dataclass(frozen=True, slots=True)
class AmAlert:
    """One alert for Alertmanager, and the alert.v1 id it came from (for log lines)."""

    alert_id: str
    labels: dict[str, str]
    annotations: dict[str, str]
    starts_at_ms: int
    ends_at_ms: int

    def to_json(self) -> dict[str, Any]:
        return {
            "labels": self.labels,
            "annotations": self.annotations,
            "startsAt": rfc3339(self.starts_at_ms),
            "endsAt": rfc3339(self.ends_at_ms),
        }

    def resolved_at(self, now_ms: int) -> bool:
        """Already over when posted (the bridge is behind by more than the timeout)."""
        return self.ends_at_ms <= now_ms


def rfc3339(ms: int) -> str:
    t = datetime.fromtimestamp(ms / 1000, tz=UTC)
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{ms % 1000:03d}Z"


def parse_ts_ms(text: str) -> int:
    if not isinstance(text, str) or not _UTC_TS.match(text):
        raise InvalidAlert("bad_timestamp")
    try:
        t = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise InvalidAlert("bad_timestamp") from None
    return int(t.timestamp() * 1000)  # fractions beyond milliseconds are cut off


def _number(value: Any) -> str:
    """An annotation value: JSON's shape of the number (12, 0.05, 1e-05)."""
    return orjson.dumps(value).decode()


def _is_number(value: Any) -> bool:
    return type(value) in (int, float) and math.isfinite(value)


def check(doc: Any) -> dict[str, Any]:
    """The record if it is an alert.v1 this bridge can post, else InvalidAlert."""
    if not isinstance(doc, dict):
        raise InvalidAlert("not_object")
    for name in _REQUIRED:
        if name not in doc:
            raise InvalidAlert(f"missing_field:{name}")
    if doc["schema_version"] != 1:
        raise InvalidAlert("unsupported_schema_version")
    for name in ("alert_id", "type", "account_id", "metric", "message"):
        if not isinstance(doc[name], str) or (name != "message" and not doc[name]):
            raise InvalidAlert(f"wrong_type:{name}")
    if doc["severity"] not in SEVERITIES:
        raise InvalidAlert("wrong_type:severity")
    if doc["channel"] is not None and (not isinstance(doc["channel"], str)):
        raise InvalidAlert("wrong_type:channel")
    if not _is_number(doc["observed"]):
        raise InvalidAlert("wrong_type:observed")
    for name in ("expected", "threshold"):
        if doc[name] is not None and not _is_number(doc[name]):
            raise InvalidAlert(f"wrong_type:{name}")
    for name in ("window_start", "window_end", "emitted_at"):
        parse_ts_ms(doc[name])
    if "event_id" in doc and doc["event_id"] is not None and not isinstance(doc["event_id"], str):
        raise InvalidAlert("wrong_type:event_id")
    return doc


def decode(value: bytes | None) -> dict[str, Any]:
    if value is None:
        raise InvalidAlert("empty")
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        raise InvalidAlert("not_json") from None
    return check(doc)


def to_alertmanager(doc: dict[str, Any], resolve_timeout_s: float) -> AmAlert:
    """The Alertmanager alert of a checked alert.v1 record (see the module docstring)."""
    labels = {
        "alertname": doc["type"],
        "severity": doc["severity"],
        "account": doc["account_id"],
        "metric": doc["metric"],
        "alert_id": doc["alert_id"],
    }
    if doc["channel"]:  # Alertmanager drops empty labels anyway: absent, not ""
        labels["channel"] = doc["channel"]
    annotations = {
        "message": doc["message"],
        "observed": _number(doc["observed"]),
        "window_start": doc["window_start"],
        "window_end": doc["window_end"],
    }
    for name in ("expected", "threshold"):
        if doc[name] is not None:
            annotations[name] = _number(doc[name])
    if doc.get("event_id"):
        annotations["event_id"] = doc["event_id"]
    if doc.get("early") is True:
        annotations["early"] = "true"
    starts_at_ms = parse_ts_ms(doc["emitted_at"])
    timeout = timedelta(seconds=resolve_timeout_s)
    ends_at_ms = starts_at_ms + int(timeout.total_seconds() * 1000)
    return AmAlert(doc["alert_id"], labels, annotations, starts_at_ms, ends_at_ms)


def body(alerts: list[AmAlert]) -> bytes:
    """The request body of one POST /api/v2/alerts: a JSON list."""
    return orjson.dumps([a.to_json() for a in alerts])

"""alert.v1 -> Alertmanager alert: labels that identify the alert and nothing personal,
annotations, startsAt/endsAt from the record alone."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from pipeline.alertmanager.payload import (
    InvalidAlert,
    body,
    check,
    decode,
    parse_ts_ms,
    rfc3339,
    to_alertmanager,
)
from pipeline.model import records

ROOT = Path(__file__).resolve().parents[3]
SCHEMA = json.loads((ROOT / "schemas" / "alert.v1.json").read_text(encoding="utf-8"))
NOW = datetime(2026, 11, 21, 20, 7, 3, 123456, tzinfo=UTC)


def alert(**over: Any) -> dict[str, Any]:
    doc = records.alert(
        ident="a1b2c3",
        type="response_sla_breach",
        severity="critical",
        account_id="acme",
        channel="instagram",
        metric="first_response_seconds",
        window_start="2026-11-21T20:00:00.000Z",
        window_end="2026-11-21T20:05:00.000Z",
        observed=3605.0,
        expected=None,
        threshold=3600.0,
        message="a dm waits past its SLA of 3600 s",
        now=NOW,
        event_id="dm-17",
    )
    doc.update(over)
    jsonschema.validate(doc, SCHEMA)
    return doc


def test_labels_identify_the_alert_and_hold_nothing_else() -> None:
    am = to_alertmanager(alert(), resolve_timeout_s=600)
    assert am.labels == {
        "alertname": "response_sla_breach",
        "severity": "critical",
        "account": "acme",
        "channel": "instagram",
        "metric": "first_response_seconds",
        "alert_id": "a1b2c3",
    }
    # neither the message nor the event id is a label
    assert "a dm waits" not in orjson.dumps(am.labels).decode()
    assert "dm-17" not in orjson.dumps(am.labels).decode()


def test_annotations_carry_the_values_and_leave_out_absent_ones() -> None:
    am = to_alertmanager(alert(), resolve_timeout_s=600)
    assert am.annotations == {
        "message": "a dm waits past its SLA of 3600 s",
        "observed": "3605.0",
        "threshold": "3600.0",
        "window_start": "2026-11-21T20:00:00.000Z",
        "window_end": "2026-11-21T20:05:00.000Z",
        "event_id": "dm-17",
    }
    early = to_alertmanager(alert(expected=12.5, early=True), resolve_timeout_s=600)
    assert early.annotations["expected"] == "12.5" and early.annotations["early"] == "true"


def test_an_alert_across_all_channels_has_no_channel_label() -> None:
    am = to_alertmanager(alert(channel=None), resolve_timeout_s=600)
    assert "channel" not in am.labels


def test_starts_at_emission_and_ends_after_the_resolve_timeout() -> None:
    am = to_alertmanager(alert(), resolve_timeout_s=600)
    doc = am.to_json()
    assert doc["startsAt"] == "2026-11-21T20:07:03.123Z"
    assert doc["endsAt"] == "2026-11-21T20:17:03.123Z"
    assert not am.resolved_at(am.ends_at_ms - 1) and am.resolved_at(am.ends_at_ms)


def test_a_redelivered_record_is_the_same_alert_and_another_window_another() -> None:
    first = alert()
    again = to_alertmanager(decode(orjson.dumps(first)), 600)
    assert again == to_alertmanager(first, 600)
    other = alert(alert_id="d4e5f6", window_start="2026-11-21T20:05:00.000Z")
    assert to_alertmanager(other, 600).labels != again.labels


def test_the_body_is_a_json_list_of_alerts() -> None:
    a, b = to_alertmanager(alert(), 60), to_alertmanager(alert(alert_id="x"), 60)
    doc = orjson.loads(body([a, b]))
    assert [d["labels"]["alert_id"] for d in doc] == ["a1b2c3", "x"]
    assert set(doc[0]) == {"labels", "annotations", "startsAt", "endsAt"}


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (None, "empty"),
        (b"\xff{", "not_json"),
        (b"[1]", "not_object"),
        (b'{"schema_version": 1}', "missing_field:alert_id"),
    ],
)
def test_what_is_not_json_an_object_or_complete_is_invalid(
    value: bytes | None, reason: str
) -> None:
    with pytest.raises(InvalidAlert) as exc:
        decode(value)
    assert exc.value.reason == reason


@pytest.mark.parametrize(
    ("over", "reason"),
    [
        ({"schema_version": 2}, "unsupported_schema_version"),
        ({"type": ""}, "wrong_type:type"),
        ({"account_id": 7}, "wrong_type:account_id"),
        ({"severity": "page"}, "wrong_type:severity"),
        ({"channel": 3}, "wrong_type:channel"),
        ({"observed": "1"}, "wrong_type:observed"),
        ({"observed": True}, "wrong_type:observed"),
        ({"threshold": float("nan")}, "wrong_type:threshold"),
        ({"emitted_at": "2026-11-21 20:00:00"}, "bad_timestamp"),
        ({"window_end": "2026-13-40T20:00:00Z"}, "bad_timestamp"),
        ({"event_id": 5}, "wrong_type:event_id"),
    ],
)
def test_each_broken_field_is_named_in_the_reason(over: dict[str, Any], reason: str) -> None:
    doc = {**alert(), **over}
    with pytest.raises(InvalidAlert) as exc:
        check(doc)
    assert exc.value.reason == reason
    assert "a dm waits" not in str(exc.value)  # never the content


def test_timestamps_round_trip_to_the_millisecond() -> None:
    assert parse_ts_ms("2026-11-21T20:07:03Z") % 1000 == 0
    ms = parse_ts_ms("2026-11-21T20:07:03.123456Z")
    assert rfc3339(ms) == "2026-11-21T20:07:03.123Z"

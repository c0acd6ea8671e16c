"""pipeline.model.records: alert.v1 built in one place, whoever raises the alert."""

from __future__ import annotations

import ast
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path

from pipeline.model import records

ROOT = Path(__file__).resolve().parents[3]


def test_emitted_at_is_utc_with_microseconds() -> None:
    at = datetime(2026, 12, 1, 10, 0, 0, 5, tzinfo=timezone(timedelta(hours=2)))
    assert records.emitted_at(at) == "2026-12-01T08:00:00.000005Z"
    assert records.emitted_at(datetime(2026, 12, 1, 8, 0)) == "2026-12-01T08:00:00.000000Z"
    now = datetime.fromisoformat(records.emitted_at().replace("Z", "+00:00"))
    assert abs(now - datetime.now(tz=UTC)) < timedelta(seconds=5)


def test_the_id_is_about_the_alert_not_its_time() -> None:
    a = records.alert_id("threshold", "r", "acme", "x", 60, 0)
    assert a == records.alert_id("threshold", "r", "acme", "x", 60, 0) and len(a) == 32
    assert a != records.alert_id("threshold", "r", "acme", "x", 60, 60_000)


def test_no_other_module_writes_an_alert_or_window_schema_version() -> None:
    """The builders' contract lives here: nobody else spells out alert_id or
    emitted_at keys, or a schema version of alert.v1 / window.v1."""
    offenders = []
    for path in (ROOT / "pipeline").rglob("*.py"):
        if path.name == "records.py" or path.parent.name == "ingest":  # deadletter.v1
            continue
        if path.parent.name == "alertmanager":  # reads alert.v1: its label alert_id is
            continue  # Alertmanager's, not a record's
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Dict):
                spelled = {k.value for k in node.keys if isinstance(k, ast.Constant)}
                if spelled & {"alert_id", "emitted_at"} or (
                    "schema_version" in spelled
                    and not any(
                        isinstance(v, ast.Attribute) and v.attr == "SCHEMA_VERSION"
                        for v in node.values
                    )
                ):
                    offenders.append(str(path.relative_to(ROOT)))
    assert offenders == []

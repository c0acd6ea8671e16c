"""The output records' shared parts, once: alert.v1's builder, its id and its send
time. `alert_id` is a hash of what the alert is about, never of when it was sent, so
a re-emission after a crash carries the same id."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime
from typing import Any

SCHEMA_VERSION = 1  # of window.v1 and alert.v1


def alert_id(*parts: object) -> str:
    return hashlib.sha256("|".join(map(str, parts)).encode()).hexdigest()[:32]


def emitted_at(now: datetime | None = None) -> str:
    """RFC 3339 in UTC with microseconds; an aware time in another zone is converted,
    a naive one is taken as UTC."""
    sent = now or datetime.now(tz=UTC)
    if sent.tzinfo is not None:
        sent = sent.astimezone(UTC)
    return sent.strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def alert(
    *,
    ident: str,
    type: str,
    severity: str,
    account_id: str,
    channel: str | None,
    metric: str,
    window_start: str,
    window_end: str,
    observed: float,
    expected: float | None,
    threshold: float | None,
    message: str,
    now: datetime | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """An alert.v1 record (`extra`: optional fields such as event_id)."""
    return {
        "alert_id": ident,
        "schema_version": SCHEMA_VERSION,
        "type": type,
        "severity": severity,
        "account_id": account_id,
        "channel": channel,
        "metric": metric,
        "window_start": window_start,
        "window_end": window_end,
        "observed": observed,
        "expected": expected,
        "threshold": threshold,
        "message": message,
        "emitted_at": emitted_at(now),
        **extra,
    }

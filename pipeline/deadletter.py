"""Dead-letter records: why a message was rejected and where it came from.

The original bytes travel base64-encoded so nothing is lost, but they are never
logged, and the reason and detail never quote the payload.
"""

from __future__ import annotations

import base64
from datetime import UTC, datetime
from typing import Any

import orjson

from pipeline.events import Invalid

SCHEMA_VERSION = 1


def _b64(data: bytes | None) -> str | None:
    return None if data is None else base64.b64encode(data).decode("ascii")


def _now() -> str:
    return datetime.now(tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record(
    invalid: Invalid,
    topic: str,
    partition: int,
    offset: int,
    key: bytes | None,
    value: bytes | None,
) -> bytes:
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "reason": invalid.reason,
            "detail": invalid.detail,
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": _b64(key),
            "value_b64": _b64(value),
            "received_at": _now(),
        }
    )


def too_late_record(event: dict[str, Any], src: list[Any]) -> bytes:
    """An event whose window was already final when it arrived. The canonical event
    (without text, which validation dropped) is kept so it can be re-aggregated."""
    topic, partition, offset = src[0], src[1], src[2]
    return orjson.dumps(
        {
            "schema_version": SCHEMA_VERSION,
            "reason": "too_late",
            "detail": "ts: window already final when the event arrived",
            "topic": topic,
            "partition": partition,
            "offset": offset,
            "key_b64": None,
            "value_b64": _b64(orjson.dumps(event)),
            "received_at": _now(),
        }
    )

"""Compact encoding of validated events between the router and the aggregator.

The router forwards batches to the internal topic as one JSON object per
batch: {"e": [row, ...]}, and progress reports as {"p": {input partition:
[newest event ts, lag]}}. A row is a positional list, cheaper to encode and
decode than an object per event. Rows never carry message text.
"""

from __future__ import annotations

from typing import Any

import orjson

from pipeline.model.events import Exposure, Interaction

INTERACTION = 0
EXPOSURE = 1

# Positions in an interaction row
I_ID, I_KIND, I_CHANNEL, I_ACCOUNT, I_TS = 1, 2, 3, 4, 5
I_POST, I_ACTOR, I_REPLY_TO, I_THREAD, I_ISSUE, I_PRIORITY, I_SENTIMENT = 6, 7, 8, 9, 10, 11, 12
I_SRC = 13  # [topic, partition, offset, broker_ts_ms]
# Positions in an exposure row
X_ACCOUNT, X_CHANNEL, X_TS, X_POST, X_FOLLOWERS, X_IMPRESSIONS, X_REACH, X_SRC = range(1, 9)

Row = list[Any]


def interaction_row(ev: Interaction, src: list[Any]) -> Row:
    return [
        INTERACTION,
        ev.event_id,
        ev.kind,
        ev.channel,
        ev.account_id,
        ev.ts_ms,
        ev.post_id,
        ev.actor_id,
        ev.in_reply_to,
        ev.thread_id,
        ev.issue_type,
        ev.priority,
        ev.sentiment,
        src,
    ]


def exposure_row(ev: Exposure, src: list[Any]) -> Row:
    return [
        EXPOSURE,
        ev.account_id,
        ev.channel,
        ev.ts_ms,
        ev.post_id,
        ev.followers,
        ev.impressions,
        ev.reach,
        src,
    ]


def row_ts(row: Row) -> int:
    """The event time of an interaction or exposure row."""
    ts: int = row[I_TS] if row[0] == INTERACTION else row[X_TS]
    return ts


def row_src(row: Row) -> list[Any]:
    """[topic, partition, offset, broker_ts_ms] of the message a row came from."""
    src: list[Any] = row[I_SRC] if row[0] == INTERACTION else row[X_SRC]
    return src


def encode_batch(rows: list[Row]) -> bytes:
    return orjson.dumps({"e": rows})


def encode_progress(report: dict[str, list[int | None]]) -> bytes:
    """A router's progress report: input partition -> [newest event ts, lag]."""
    return orjson.dumps({"p": report})


def decode_message(raw: bytes) -> tuple[list[Row], dict[str, list[int | None]] | None]:
    """(rows, progress report) of one internal message; either may be empty."""
    msg = orjson.loads(raw)
    return msg.get("e", []), msg.get("p")


def row_as_event(row: Row) -> dict[str, Any]:
    """The canonical event of a row as a JSON-ready dict (for dead-letter records)."""
    keys: tuple[str, ...]
    if row[0] == INTERACTION:
        keys = (
            "event_id",
            "kind",
            "channel",
            "account_id",
            "ts",
            "post_id",
            "actor_id",
            "in_reply_to",
            "thread_id",
            "issue_type",
            "priority",
            "sentiment",
        )
        out = dict(zip(keys, row[1:13], strict=True))
    else:
        keys = ("account_id", "channel", "ts", "post_id", "followers", "impressions", "reach")
        out = dict(zip(keys, row[1:8], strict=True))
    return {k: v for k, v in out.items() if v is not None}

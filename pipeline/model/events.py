"""Validated, canonical forms of the raw input messages (schema v1).

`text` is deliberately absent: message text is personal data and is dropped at
validation, so no later stage can log it or copy it into an output.
"""

from __future__ import annotations

from dataclasses import dataclass

KINDS: tuple[str, ...] = ("like", "comment", "share", "mention", "dm", "reply")
INBOUND_KINDS: tuple[str, ...] = ("comment", "mention", "dm")
PRIORITIES: tuple[str, ...] = ("low", "normal", "high", "urgent")


@dataclass(frozen=True, slots=True)
class Interaction:
    """A like, comment, share, mention, DM or brand reply."""

    event_id: str
    kind: str
    channel: str
    account_id: str
    ts_ms: int
    post_id: str | None = None
    actor_id: str | None = None
    in_reply_to: str | None = None
    thread_id: str | None = None
    issue_type: str | None = None
    priority: str = "normal"
    sentiment: float | None = None


@dataclass(frozen=True, slots=True)
class Exposure:
    """An audience snapshot: followers is a level; impressions and reach are
    counts for the interval since the previous snapshot of the same key."""

    account_id: str
    channel: str
    ts_ms: int
    post_id: str | None = None
    followers: int | None = None
    impressions: int | None = None
    reach: int | None = None


@dataclass(frozen=True, slots=True)
class Invalid:
    """Why a message was rejected. `detail` names fields, never payload text."""

    reason: str
    detail: str

"""The state of one partition of the internal events topic, as plain data: what a
changelog record restores and what the unit tests build directly."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.detection.series import AccountSeries
from pipeline.model import wire
from pipeline.responses.tracker import ResponseState
from pipeline.windows.dedup import MASK, SeenIds
from pipeline.windows.valve import Sources
from pipeline.windows.watermark import WatermarkState

WindowKey = tuple[str, str, int, int]  # account_id, channel, size_ms, start_ms
# Default for how long an input partition's last progress report counts.
SOURCE_STALE_MS = 40_000


@dataclass(slots=True)
class WindowAgg:
    counts: dict[str, int] = field(default_factory=dict)
    actors: set[str] = field(default_factory=set)
    late: int = 0
    impressions: int | None = None
    reach: int | None = None
    max_event_ms: int = 0
    newest_broker_ms: int = 0  # broker append time of the newest contributing message
    scored: int = 0  # interactions with a sentiment
    negative: int = 0  # of which at or below the negative threshold


@dataclass(frozen=True, slots=True)
class FinalWindow:
    start_ms: int
    end_ms: int
    record: dict[str, Any]  # the published engagement.windows value
    newest_broker_ms: int


@dataclass(slots=True)
class PartitionState:
    windows: dict[WindowKey, WindowAgg] = field(default_factory=dict)
    dedup: SeenIds = field(default_factory=SeenIds)  # event ids, as hashes
    followers: dict[tuple[str, str], list[tuple[int, int]]] = field(default_factory=dict)
    watermark: WatermarkState = field(default_factory=WatermarkState)
    sources: Sources = field(default_factory=lambda: Sources(SOURCE_STALE_MS))
    emitted_through_ms: int | None = None
    applied_offset: int = -1
    # Open windows by end time, and a heap of those ends: closing touches only the
    # windows that close, however many are open (a held watermark keeps many open).
    by_end: dict[int, list[WindowKey]] = field(default_factory=dict)
    ends: list[int] = field(default_factory=list)
    cooldowns: dict[str, int] = field(default_factory=dict)
    seq: int = 0
    # (seq, max window end, max event ts) of every retained delta, oldest first
    deltas: deque[tuple[int, int, int]] = field(default_factory=deque)
    responses: ResponseState = field(default_factory=ResponseState)
    detection: dict[str, AccountSeries] = field(default_factory=dict)  # account -> series
    # Alerts raised while their window was open, not yet settled by its close:
    # alert_id -> [window end ms, account for a detector alert or ""]. In the marker.
    early: dict[str, list[Any]] = field(default_factory=dict)
    # Derived, never persisted. Interaction windows the current batch added to (early
    # alerts look at these); the channels of each open (account, size, start).
    touched: set[WindowKey] = field(default_factory=set)
    groups: dict[tuple[str, int, int], list[str]] = field(default_factory=dict)
    spike_bars: dict[str, tuple[Any, tuple[int, int], dict[str, Any]]] = field(default_factory=dict)


@dataclass(slots=True)
class Delta:
    """What one batch changed; the changelog record that replays it."""

    seq: int
    offset: int
    rows: list[wire.Row]  # accepted rows
    late_idx: list[int]  # indices of rows that arrived behind the watermark
    max_window_end_ms: int
    max_ts_ms: int
    # Rows too late for any window that still matter to response pairing (inbound
    # messages and replies): kept for the response state, and for dedup, only.
    too_late: list[wire.Row] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        d = {
            "s": self.seq,
            "o": self.offset,
            "r": self.rows,
            "l": self.late_idx,
            "we": self.max_window_end_ms,
            "mx": self.max_ts_ms,
        }
        if self.too_late:
            d["t"] = self.too_late
        return d

    @classmethod
    def from_json(cls, d: Mapping[str, Any]) -> Delta:
        return cls(d["s"], d["o"], d["r"], d["l"], d["we"], d["mx"], d.get("t") or [])

    def response_rows(self) -> list[wire.Row]:
        """What the response tracker applies: accepted rows, then too-late ones."""
        return self.rows + self.too_late if self.too_late else self.rows


@dataclass(slots=True)
class Applied:
    delta: Delta | None  # None when the batch was already applied (or accepted nothing)
    duplicates: int = 0
    too_late: list[wire.Row] = field(default_factory=list)
    late_counted: int = 0
    skipped: bool = False


@dataclass(frozen=True, slots=True)
class AggregatorConfig:
    sizes_ms: tuple[int, ...]
    lateness_ms: int
    grace_ms: int
    idle_after_ms: int
    horizon_ms: int
    max_ids: int
    weights: Mapping[str, float]
    rate_basis: Mapping[str, str]
    default_basis: str = "followers"
    source_stale_ms: int = SOURCE_STALE_MS
    max_cooldown_ms: int = 0  # longest alert cooldown: older cooldown entries are dropped
    negative_below: float = -0.25  # a sentiment at or below this is negative
    # Kinds that response pairing needs even when too late for their window
    response_kinds: frozenset[str] = frozenset({"comment", "mention", "dm", "reply"})


def dedup_key(row: wire.Row) -> int:
    """An interaction is identified by its channel and event_id (ids are unique per
    platform). A snapshot has no id, but one account, channel and post reports at
    most once per instant, so a redelivered snapshot is recognised too. The two
    kinds of key hash tuples of different lengths, so they are not made alike.
    The hash is kept in 59 bits (see `pipeline.windows.dedup`)."""
    if row[0] == wire.INTERACTION:
        return hash((row[wire.I_CHANNEL], row[wire.I_ID])) & MASK
    key = (row[wire.X_ACCOUNT], row[wire.X_CHANNEL], row[wire.X_POST], row[wire.X_TS])
    return hash(key) & MASK

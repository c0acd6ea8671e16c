"""What many unit tests share: clocks, window settings, rows as the router writes
them, a partition fed batch by batch, and the published schemas' validators."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from pipeline.config.settings import Settings
from pipeline.model import wire
from pipeline.model.events import KINDS, Exposure, Interaction
from pipeline.windows.aggregator import (
    Aggregator,
    AggregatorConfig,
    Applied,
    FinalWindow,
    PartitionState,
)

SCHEMA_DIR = Path(__file__).resolve().parents[2] / "schemas"
FORMATS = FormatChecker()


def load(name: str) -> dict[str, Any]:
    schema: dict[str, Any] = json.loads((SCHEMA_DIR / name).read_text(encoding="utf-8"))
    return schema


def schema_validator(name: str) -> Draft202012Validator:
    return Draft202012Validator(load(name), format_checker=FORMATS)


SEC, MIN = 1000, 60_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = (datetime(2026, 11, 21, 10, 0, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
WALL = 1_900_000_000_000  # wall clock: unrelated to event time
FLUSH_ACCOUNT = "~flush"
WEIGHTS = dict(Settings().weights)  # like 1, comment 2, share 3, mention 2, dm 1, reply 0

_src_offsets = itertools.count()


def cfg(**over: Any) -> AggregatorConfig:
    base: dict[str, Any] = {
        "sizes_ms": (MIN, 5 * MIN),
        "lateness_ms": 10 * SEC,
        "grace_ms": 5 * SEC,
        "idle_after_ms": 10 * SEC,
        "horizon_ms": 600 * SEC,
        "max_ids": 100_000,
        "weights": WEIGHTS,
        "rate_basis": {"acme": "impressions"},
        "default_basis": "followers",
    }
    base.update(over)
    return AggregatorConfig(**base)


def ia(
    event_id: str,
    ts: int,
    kind: str = "like",
    account: str = "acme",
    channel: str = "x",
    actor: str | None = None,
    broker_ms: int | None = None,
) -> wire.Row:
    ev = Interaction(
        event_id=event_id,
        kind=kind,
        channel=channel,
        account_id=account,
        ts_ms=ts,
        post_id="p1" if kind in ("like", "comment", "share") else None,
        actor_id=actor,
        in_reply_to="m-0" if kind == "reply" else None,
    )
    src = [f"social.{kind}s", 0, next(_src_offsets), ts + 40 if broker_ms is None else broker_ms]
    return wire.interaction_row(ev, src)


def ex(
    ts: int,
    account: str = "acme",
    channel: str = "x",
    followers: int | None = None,
    impressions: int | None = None,
    reach: int | None = None,
) -> wire.Row:
    ev = Exposure(account, channel, ts, None, followers, impressions, reach)
    return wire.exposure_row(ev, ["social.exposure", 0, next(_src_offsets), ts + 40])


def counts(**n: int) -> dict[str, int]:
    return {k: n.get(k, 0) for k in KINDS}


Key = tuple[str, str, int, int]  # account, channel, size_seconds, start_ms


def key(fw: FinalWindow) -> Key:
    r = fw.record
    return (r["account_id"], r["channel"], r["size_seconds"], fw.start_ms)


class Run:
    """One partition fed batch by batch at consecutive offsets."""

    def __init__(self, config: AggregatorConfig | None = None) -> None:
        self.agg = Aggregator(config or cfg())
        self.state = PartitionState()
        self.offset = -1

    def apply(self, rows: list[wire.Row], wall: int = WALL) -> Applied:
        self.offset += 1
        return self.agg.apply_batch(self.state, rows, self.offset, wall)

    def close(self, wall: int = WALL) -> list[FinalWindow]:
        return self.agg.close_windows(self.state, wall)

    def flush(self, wall: int = WALL) -> dict[Key, dict[str, Any]]:
        """Push a far-future event, close, and return the real windows by key."""
        self.apply([ia(f"flush-{self.offset}", BASE + 86_400 * SEC, account=FLUSH_ACCOUNT)], wall)
        out = {}
        for fw in self.close(wall):
            if fw.record["account_id"] != FLUSH_ACCOUNT:
                assert key(fw) not in out
                out[key(fw)] = fw.record
        return out

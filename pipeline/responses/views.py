"""What `GET /api/v1/accounts/{account_id}/response-times` returns, from the tables."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ddsketch import DDSketch

from pipeline.responses import sketch
from pipeline.responses.tracker import ResponseState, Table, TableKey
from pipeline.windows.arithmetic import rfc3339

COUNTERS = ("unmatched_replies", "expired_unanswered", "evicted")


def _grouped(tables: dict[TableKey, Table], part: Callable[[TableKey], str]) -> dict[str, Any]:
    """First response summaries grouped by one part of the table key."""
    groups: dict[str, list[DDSketch]] = {}
    for key, t in tables.items():
        groups.setdefault(part(key), []).append(t.first)
    return {name: sketch.summary(sketch.merged(sks)) for name, sks in sorted(groups.items())}


def account_view(account: str, st: ResponseState, watermark_ms: int | None) -> dict[str, Any]:
    """The account's response times, from the state of the partition that owns it."""
    tables = st.tables.get(account, {})
    open_ts = [e.ts_ms for e in st.inbound.get(account, {}).values() if e.open]
    counters = dict.fromkeys(COUNTERS, 0) | dict(st.counters.get(account, {}))
    with_sla = sum(t.with_sla for t in tables.values())
    within = sum(t.within_sla for t in tables.values())
    oldest = min(open_ts, default=None)
    view: dict[str, Any] = {
        "account_id": account,
        "first_response_seconds": sketch.summary(sketch.merged(t.first for t in tables.values())),
        "by_channel": _grouped(tables, lambda k: k[0]),
        "by_kind": _grouped(tables, lambda k: k[1]),
        "by_priority": _grouped(tables, lambda k: k[2]),
        "by_issue_type": _grouped(tables, lambda k: k[3] or "unspecified"),
        "subsequent_response_seconds": sketch.summary(
            sketch.merged(t.subsequent for t in tables.values())
        ),
        "open": {
            "count": len(open_ts),
            "oldest_age_seconds": (
                None
                if oldest is None or watermark_ms is None
                else max(0.0, (watermark_ms - oldest) / 1000)
            ),
        },
        "within_sla_ratio": within / with_sla if with_sla else None,
        "answered_with_sla": with_sla,
        "as_of": None if watermark_ms is None else rfc3339(watermark_ms),
        **counters,
    }
    business = [t.business for t in tables.values() if t.business is not None]
    if business:
        view["first_response_business_seconds"] = sketch.summary(sketch.merged(business))
    return view

"""What `GET /api/v1/accounts/{account_id}/response-times` returns, from the tables."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from ddsketch import DDSketch

from pipeline import sketch
from pipeline.responses import ResponseState, Table, TableKey
from pipeline.windows import rfc3339

COUNTERS = ("unmatched_replies", "expired_unanswered", "evicted")


def _grouped(
    tables: dict[TableKey, Table], part: Callable[[TableKey], str], pick: str
) -> dict[str, Any]:
    groups: dict[str, list[DDSketch]] = {}
    for key, t in tables.items():
        sk = getattr(t, pick)
        if sk is not None:
            groups.setdefault(part(key), []).append(sk)
    return {name: sketch.summary(sketch.merged(sks)) for name, sks in sorted(groups.items())}


def account_view(
    account: str, states: Iterable[ResponseState], watermark_ms: int | None
) -> dict[str, Any]:
    """The account's response times; `states` are the partitions this worker owns
    (the account is in at most one of them)."""
    tables: dict[TableKey, Table] = {}
    open_ts: list[int] = []
    counters: dict[str, int] = dict.fromkeys(COUNTERS, 0)
    for st in states:
        tables.update(st.tables.get(account, {}))
        open_ts.extend(e.ts_ms for e in st.inbound.get(account, {}).values() if e.open)
        for name, n in st.counters.get(account, {}).items():
            counters[name] = counters.get(name, 0) + n
    with_sla = sum(t.with_sla for t in tables.values())
    within = sum(t.within_sla for t in tables.values())
    oldest = min(open_ts, default=None)
    view: dict[str, Any] = {
        "account_id": account,
        "first_response_seconds": sketch.summary(sketch.merged(t.first for t in tables.values())),
        "by_channel": _grouped(tables, lambda k: k[0], "first"),
        "by_kind": _grouped(tables, lambda k: k[1], "first"),
        "by_priority": _grouped(tables, lambda k: k[2], "first"),
        "by_issue_type": _grouped(tables, lambda k: k[3] or "unspecified", "first"),
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

"""A partition's response-time state as changelog bytes, and back.

Inbound messages stay open for days, far longer than the deltas that carried them
are kept, so the tracker's state is snapshotted whole (in parts below the broker's
message size limit). Restoring loads the newest durable snapshot and replays the
retained deltas written after it. The schedule (deadlines, expiries) is derived
from the entries, so it is rebuilt rather than stored.
"""

from __future__ import annotations

import heapq
import sys
from collections import Counter
from collections.abc import Iterator
from operator import attrgetter, itemgetter
from typing import Any

import orjson

from pipeline.responses import sketch
from pipeline.responses.tracker import (
    DEGRADE,
    FIRST,
    ORPHAN,
    Inbound,
    InboundKey,
    ResponseState,
    ResponseTracker,
    Table,
)

PART_BYTES = 512 * 1024


_KEY = (itemgetter(0), itemgetter(1))  # channel, event_id
_FIELDS = tuple(
    attrgetter(f) for f in ("ts_ms", "kind", "priority", "issue", "replies", "first_ms", "alerted")
)


def _columns(account: str, entries: dict[InboundKey, Inbound]) -> list[Any]:
    """An account's inbound messages as columns: a list per field, not a list per
    message. Hundreds of thousands are held per partition, and a column is built
    and encoded three times faster (the snapshot holds the event loop meanwhile)."""
    keys, values = list(entries), list(entries.values())
    return [account, *(list(map(get, keys)) for get in _KEY)] + [
        list(map(get, values)) for get in _FIELDS
    ]


def snapshot(st: ResponseState, seq: int) -> list[bytes]:
    """The state, covering every delta up to `seq`, as one or more parts."""
    doc = {
        "seq": seq,
        "inbound_columns": [_columns(a, entries) for a, entries in st.inbound.items()],
        "orphans": [
            [a, c, i, times]
            for a, waiting in st.orphans.items()
            for (c, i), times in waiting.items()
        ],
        "tables": [
            [
                a,
                *key,
                sketch.to_json(t.first),
                None if t.business is None else sketch.to_json(t.business),
                sketch.to_json(t.subsequent),
                t.with_sla,
                t.within_sla,
            ]
            for a, tables in st.tables.items()
            for key, t in tables.items()
        ],
        "buckets": [
            [*key, start, sketch.to_json(sk)]
            for key, buckets in st.buckets.items()
            for start, sk in buckets.items()
        ],
        "last_eval": [[*key, end] for key, end in st.last_eval.items()],
        "degraded": [list(key) for key in st.degraded],
        "counters": {a: dict(c) for a, c in st.counters.items()},
    }
    raw = orjson.dumps(doc)
    return [raw[i : i + PART_BYTES] for i in range(0, len(raw), PART_BYTES)] or [raw]


def restore(tracker: ResponseTracker, parts: list[bytes]) -> ResponseState:
    """The state a snapshot holds, with its schedule rebuilt; empty without one."""
    st = ResponseState()
    if not parts:
        return st
    doc = orjson.loads(b"".join(parts))
    st.snap_seq = doc["seq"]
    intern = sys.intern  # as the tracker does: one copy of each name
    for a, c, i, ts, kind, priority, issue, replies, first, alerted in _inbound_rows(doc):
        a, c = intern(a), intern(c)
        kind, priority, issue = intern(kind), intern(priority), intern(issue)
        entry = Inbound(ts, kind, priority, issue, replies or None, first, alerted)
        st.inbound.setdefault(a, {})[(c, i)] = entry
        st.tracked += 1
        heapq.heappush(st.expiries, (ts, a, c, i))
        if entry.open:
            st.open_counts[(c, kind)] += 1
        if replies:
            heapq.heappush(st.due, (min(replies), FIRST, a, c, i))
        if first is None:
            tracker.schedule_sla(st, a, (c, i), entry)
    wait_ms = tracker.cfg.orphan_wait_s * 1000
    for a, c, i, times in doc["orphans"]:
        st.orphans.setdefault(a, {})[(c, i)] = times
        st.orphan_count += 1
        heapq.heappush(st.due, (min(times) + wait_ms, ORPHAN, a, c, i))
    for a, c, kind, priority, issue, first, business, subsequent, with_sla, within in doc["tables"]:
        st.tables.setdefault(a, {})[(c, kind, priority, issue)] = Table(
            sketch.from_json(first),
            None if business is None else sketch.from_json(business),
            sketch.from_json(subsequent),
            with_sla,
            within,
        )
    for a, kind, priority, start, sk in doc["buckets"]:
        st.buckets.setdefault((a, kind, priority), {})[start] = sketch.from_json(sk)
    for a, kind, priority, end in doc["last_eval"]:
        st.last_eval[(a, kind, priority)] = end
    st.degraded = {(a, k, p) for a, k, p in doc["degraded"]}
    step = tracker.cfg.degradation_step_s * 1000
    for key, buckets in st.buckets.items():
        # the next evaluation the live run had scheduled
        first_end = min(buckets) + step
        last = st.last_eval.get(key)
        heapq.heappush(st.due, (first_end if last is None else last + step, DEGRADE, *key))
    st.counters = {a: Counter(c) for a, c in doc["counters"].items()}
    return st


def _inbound_rows(doc: dict[str, Any]) -> Iterator[list[Any]]:
    """[account, channel, event_id, ts, kind, priority, issue, replies, first, alerted]
    per message, from columns or from the row per message of earlier snapshots."""
    yield from doc.get("inbound", ())
    for account, *columns in doc.get("inbound_columns", ()):
        for values in zip(*columns, strict=True):
            yield [account, *values]

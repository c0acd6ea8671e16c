"""A partition's state from its recovered changelog records: a pure function of
those records (no broker, no clock), so every crash point can be tested without one.

What it reads (pipeline.durability.keys): the deltas, the marker, the response
snapshot the marker names, the per-account detector records and, when the marker
names an outbox, the outputs a crash left unpublished, which the caller publishes
again before anything else."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from pipeline.detection.series import AccountSeries
from pipeline.durability import keys
from pipeline.responses import snapshot as response_snapshot
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows.aggregator import Aggregator, Delta, PartitionState


@dataclass
class Restored:
    state: PartitionState
    outbox: list[list[Any]] = field(default_factory=list)  # outputs to publish again
    outbox_parts: int = 0  # outbox records to clear once they are published
    deltas: int = 0  # delta records read
    marker: bool = False  # whether a marker was found

    def summary(self) -> str:
        """What was recovered, for the log (None of it personal data)."""
        s = self.state
        return (
            f"{self.deltas} deltas, applied offset {s.applied_offset}, {len(self.outbox)} "
            f"outputs to republish, response snapshot through delta {s.responses.snap_seq}, "
            f"{s.responses.tracked} inbound messages tracked"
        )


def restore(
    data: Mapping[bytes, bytes],
    p: int,
    aggregator: Aggregator,
    tracker: ResponseTracker,
) -> Restored:
    """Partition p as its changelog records (`data`: key -> value) leave it."""
    prefix = keys.deltas(p)
    deltas = [
        Delta.from_json(orjson.loads(v)) for k, v in data.items() if k.startswith(prefix) and v
    ]
    raw_marker = data.get(keys.marker(p))
    marker = orjson.loads(raw_marker) if raw_marker else {}
    state = PartitionState()
    aggregator.restore(state, deltas, marker)
    # Response state: the newest durable snapshot, then the deltas written after it.
    gen, n_parts, _ = marker.get("responses") or (0, 0, 0)
    snap = [data[keys.snapshot(p, gen, i)] for i in range(n_parts)]
    state.responses = response_snapshot.restore(tracker, snap)
    state.responses.snap_gen, state.responses.snap_parts = gen, n_parts
    for d in sorted(deltas, key=lambda d: d.seq):
        if d.seq > state.responses.snap_seq:
            tracker.apply_rows(state.responses, d.response_rows())
    # Detector state: one record per account, as of the last published close.
    detectors = keys.detectors(p)
    for k, v in data.items():
        if k.startswith(detectors) and v:
            state.detection[keys.detector_account(p, k)] = AccountSeries.from_json(orjson.loads(v))
    out = Restored(state, deltas=len(deltas), marker=bool(marker))
    parts = int(marker.get("outbox_parts") or 0)
    if parts:
        out.outbox = [e for i in range(parts) for e in orjson.loads(data[keys.outbox(p, i)])]
        out.outbox_parts = parts
        for kind, account, value, _ in out.outbox:  # newer than the per-account records
            if kind == "detector":
                if value:
                    state.detection[account] = AccountSeries.from_json(orjson.loads(value))
                else:
                    state.detection.pop(account, None)
    return out

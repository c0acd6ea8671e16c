"""pipeline.durability.restore: a partition rebuilt from its changelog records, with
no broker, goes on exactly as the partition that wrote them."""

from __future__ import annotations

import random
from typing import Any

import orjson
import pytest

from pipeline.detection.series import AccountSeries
from pipeline.durability import keys
from pipeline.durability.restore import restore
from pipeline.model import wire
from pipeline.responses.settings import ResponseSettings
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows.aggregator import Aggregator, PartitionState
from tests.unit.fixtures import BASE, SEC, WALL, cfg, ia

P = 3


class Partition:
    """What the worker does to one partition, with the records it writes kept in a
    dict as the changelog table holds them (a tombstone removes the key)."""

    def __init__(self) -> None:
        self.agg = Aggregator(cfg())
        self.tracker = ResponseTracker(ResponseSettings())
        self.state = PartitionState()
        self.records: dict[bytes, bytes] = {}
        self.offset = -1

    def apply(self, rows: list[wire.Row]) -> None:
        self.offset += 1
        applied = self.agg.apply_batch(self.state, rows, self.offset, WALL)
        if applied.delta is not None:
            self.records[keys.delta(P, applied.delta.seq)] = orjson.dumps(applied.delta.to_json())
            self.tracker.apply_rows(self.state.responses, applied.delta.response_rows())

    def close(self) -> list[dict[str, Any]]:
        out = [fw.record for fw in self.agg.close_windows(self.state, WALL)]
        self.records[keys.marker(P)] = orjson.dumps(self.agg.marker(self.state))
        return out


def batches(seed: int, n: int = 12) -> list[list[wire.Row]]:
    rng = random.Random(seed)
    out = []
    for b in range(n):
        rows = []
        for i in range(rng.randint(1, 20)):
            ts = BASE + b * 20 * SEC + rng.randint(-15, 15) * SEC  # some late, some reordered
            kind = rng.choice(["like", "like", "comment", "share", "dm", "mention"])
            account = rng.choice(["acme", "globex"])
            event_id = f"e{b}-{i}" if rng.random() > 0.15 else f"e{max(0, b - 1)}-{i}"  # dups
            rows.append(ia(event_id, ts, kind=kind, account=account))
        out.append(rows)
    return out


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("cut", [1, 4, 9])
def test_a_restored_partition_goes_on_as_the_one_that_wrote_its_records(
    seed: int, cut: int
) -> None:
    work = batches(seed)
    whole = Partition()
    outputs = []
    for i, rows in enumerate(work):
        whole.apply(rows)
        if i == cut - 1:
            outputs += whole.close()
            records = dict(whole.records)  # what was durable at the cut, after a close
            mark = len(outputs)
        elif i % 3 == 2:
            outputs += whole.close()
    whole.apply([ia("flush", BASE + 3600 * SEC)])
    outputs += whole.close()

    # Rebuild from the records of the cut, then replay what came after it.
    again = Partition()
    restored = restore(records, P, again.agg, again.tracker)
    again.state, again.records, again.offset = restored.state, records, cut - 1
    assert restored.deltas == len([k for k in records if k.startswith(keys.deltas(P))])
    assert restored.outbox == [] and restored.marker
    replayed = []
    for i, rows in enumerate(work[cut:], start=cut):
        again.apply(rows)
        if i % 3 == 2:
            replayed += again.close()
    again.apply([ia("flush", BASE + 3600 * SEC)])
    replayed += again.close()
    assert replayed and outputs[mark:] == replayed
    mine, theirs = again.state.responses, whole.state.responses
    assert (mine.inbound, mine.tracked, mine.open_counts) == (
        theirs.inbound,
        theirs.tracked,
        theirs.open_counts,
    )
    assert again.state.dedup == whole.state.dedup


def test_only_the_partitions_own_records_are_read_and_the_outbox_comes_back() -> None:
    one = Partition()
    one.apply([ia("a", BASE), ia("b", BASE + 5 * SEC, kind="dm")])
    records = dict(one.records)
    # Another partition's records in the same table, and partition 30 (prefix "d:3" too).
    (delta,) = [k for k in records if k.startswith(keys.deltas(P))]
    records[keys.delta(30, 0)] = records[delta]
    records[keys.detector(30, "acme")] = orjson.dumps(AccountSeries(0, 0).to_json())
    series = AccountSeries(BASE, BASE)
    records[keys.detector(P, "acme")] = orjson.dumps(series.to_json())
    entries = [
        ["window", "acme", '{"account_id": "acme"}', BASE],
        [
            "detector",
            "acme",
            orjson.dumps(AccountSeries(BASE + 60_000, BASE).to_json()).decode(),
            0,
        ],
        ["detector", "gone", "", 0],
    ]
    records[keys.outbox(P, 0)] = orjson.dumps(entries)
    records[keys.marker(P)] = orjson.dumps({**one.agg.marker(one.state), "outbox_parts": 1})
    got = restore(records, P, Aggregator(cfg()), ResponseTracker(ResponseSettings()))
    assert got.deltas == 1 and got.outbox_parts == 1 and got.outbox == entries
    assert set(got.state.detection) == {"acme"}  # the outbox's record is the newer one
    assert got.state.detection["acme"].through_ms == BASE + 60_000
    assert len(got.state.dedup) == 2
    assert got.state.responses.open_counts == one.state.responses.open_counts

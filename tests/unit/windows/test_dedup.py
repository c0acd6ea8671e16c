"""The dedup set: what it holds, what it forgets and in which order, and its size."""

from __future__ import annotations

import tracemalloc

from hypothesis import given
from hypothesis import strategies as st

from pipeline.model import wire
from pipeline.windows.dedup import BUCKET_MS, SeenIds
from pipeline.windows.state import dedup_key
from tests.unit.fixtures import BASE, ex, ia

MIN = BUCKET_MS


def test_holds_each_key_once() -> None:
    seen = SeenIds()
    seen.add(1, BASE)
    seen.add(1, BASE + 5 * MIN)  # the same id again, at another time
    seen.add(2, BASE)
    assert 1 in seen and 2 in seen and 3 not in seen and len(seen) == 2


def test_forgets_minutes_that_end_by_the_cutoff() -> None:
    seen = SeenIds()
    seen.add(1, BASE)
    seen.add(2, BASE + MIN - 1)
    seen.add(3, BASE + MIN)
    seen.forget(BASE + MIN - 1, max_ids=100)  # the first minute is not over yet
    assert len(seen) == 3
    seen.forget(BASE + MIN, max_ids=100)
    assert 1 not in seen and 2 not in seen and 3 in seen and len(seen) == 1


def test_beyond_max_ids_the_oldest_go_first_in_the_order_they_came() -> None:
    seen = SeenIds()
    for k in (10, 11, 12):
        seen.add(k, BASE + 2 * MIN)  # a later minute, first to come
    for k in (1, 2, 3):
        seen.add(k, BASE)
    seen.forget(BASE - MIN, max_ids=4)
    assert sorted(k for k in (1, 2, 3, 10, 11, 12) if k in seen) == [3, 10, 11, 12]
    seen.forget(BASE - MIN, max_ids=2)
    assert sorted(k for k in (3, 10, 11, 12) if k in seen) == [11, 12]


def test_interactions_and_snapshots_have_distinct_keys() -> None:
    assert dedup_key(ia("e1", BASE)) == dedup_key(ia("e1", BASE + 7))  # same id, same key
    assert dedup_key(ia("e1", BASE)) != dedup_key(ia("e2", BASE))
    assert dedup_key(ex(BASE, followers=10)) == dedup_key(ex(BASE, followers=11))
    assert dedup_key(ex(BASE, followers=10)) != dedup_key(ex(BASE + 1, followers=10))
    assert 0 <= dedup_key(ia("e1", BASE)) < 2**59


@given(
    st.lists(st.tuples(st.integers(0, 40), st.integers(0, 10 * MIN)), max_size=80),
    st.integers(0, 12 * MIN),
    st.integers(0, 60),
)
def test_forgetting_matches_a_model(adds: list[tuple[int, int]], before: int, max_ids: int) -> None:
    seen = SeenIds()
    model: list[tuple[int, int]] = []  # (key, minute) in the order they came
    for key, ts in adds:
        seen.add(key, ts)
        if key not in {k for k, _ in model}:
            model.append((key, ts // MIN))
    seen.forget(before, max_ids)
    kept = [(k, m) for k, m in model if (m + 1) * MIN > before]
    kept.sort(key=lambda km: km[1])  # stable: by minute, then in the order they came
    kept = kept[max(0, len(kept) - max_ids) :]
    assert {k for k, _ in kept} == {k for k, _ in model if k in seen}
    assert len(seen) == len(kept)


def test_a_remembered_id_takes_under_100_bytes() -> None:
    n = 200_000
    rows = [ia(f"event-{i:09d}", BASE + i * 3) for i in range(n)]  # 10 minutes
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    seen = SeenIds()
    for row in rows:
        seen.add(dedup_key(row), wire.row_ts(row))
    per_id = (tracemalloc.get_traced_memory()[0] - before) / n  # set, ints, arrays
    tracemalloc.stop()
    assert len(seen) == n
    assert per_id < 100, per_id

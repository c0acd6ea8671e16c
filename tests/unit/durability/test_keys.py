"""pipeline.durability.keys: one key scheme, whose prefixes find exactly one
partition's records."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from pipeline.durability import keys

partitions = st.integers(min_value=0, max_value=1023)


@given(partitions, partitions, st.text(min_size=1), st.integers(0, 10**9))
def test_a_prefix_finds_its_partition_only(p: int, q: int, account: str, seq: int) -> None:
    assert keys.delta(p, seq).startswith(keys.deltas(p))
    assert keys.detector(p, account).startswith(keys.detectors(p))
    if p != q:  # "d:1:" is not a prefix of "d:10:..."
        assert not keys.delta(q, seq).startswith(keys.deltas(p))
        assert not keys.detector(q, account).startswith(keys.detectors(p))
    assert keys.detector_account(p, keys.detector(p, account)) == account  # colons too


@given(partitions, st.integers(0, 10**11), st.integers(0, 10**11))
def test_deltas_sort_by_sequence(p: int, a: int, b: int) -> None:
    assert (keys.delta(p, a) < keys.delta(p, b)) == (a < b)


def test_each_kind_of_record_has_its_own_letter() -> None:
    made = [
        keys.delta(3, 1),
        keys.marker(3),
        keys.outbox(3, 1),
        keys.detector(3, "1"),
        keys.snapshot(3, 1, 1),
    ]
    assert len({k[:2] for k in made}) == len(made)
    assert keys.marker(3) == b"m:3" and keys.snapshot(3, 2, 0) == b"r:3:2:0"

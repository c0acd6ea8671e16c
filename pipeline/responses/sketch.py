"""Response-time distributions: DDSketch with 1% relative accuracy.

DDSketch (DataDog's `ddsketch` library) answers any quantile within 1% of the true
value's order statistic, merges exactly (so per channel x kind x priority sketches
add up to an account's), and needs one counter per logarithmic bucket: from 1 s to a
month at 1% is about 850 buckets, however many responses.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from ddsketch import DDSketch

RELATIVE_ACCURACY = 0.01


def new() -> DDSketch:
    return DDSketch(relative_accuracy=RELATIVE_ACCURACY)


def merged(sketches: Iterable[DDSketch]) -> DDSketch:
    out = new()
    for sk in sketches:
        if sk.count:
            out.merge(sk)
    return out


def summary(sk: DDSketch) -> dict[str, Any]:
    """{count, mean, p50, p90, p99} in seconds; the statistics are null without data."""
    n = int(sk.count)
    if not n:
        return {"count": 0, "mean": None, "p50": None, "p90": None, "p99": None}
    return {
        "count": n,
        "mean": sk.sum / n,
        "p50": quantile(sk, 0.5),
        "p90": quantile(sk, 0.9),
        "p99": quantile(sk, 0.99),
    }


def quantile(sk: DDSketch, q: float) -> float:
    value = float(sk.get_quantile_value(q) or 0.0)
    # the sketch answers a bucket's representative value: never outside what was seen
    return min(max(value, sk._min), sk._max)


def to_json(sk: DDSketch) -> list[Any]:
    """[count, sum, min, max, zero count, [[bucket, count], ...]]: only non-empty buckets.
    The library's own serialization needs protobuf; these fields are all it holds."""
    store = sk._store
    bins = [[store.offset + i, n] for i, n in enumerate(store.bins) if n]
    return [sk.count, sk.sum, sk._min, sk._max, sk._zero_count, bins]


def from_json(data: list[Any]) -> DDSketch:
    count, total, lo, hi, zeros, bins = data
    sk = new()
    for key, n in bins:
        sk._store.add(key, n)
    if count:  # an empty sketch's min and max are infinities, which JSON has not
        sk._count, sk._sum, sk._min, sk._max, sk._zero_count = count, total, lo, hi, zeros
    return sk

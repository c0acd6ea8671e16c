"""The event ids a partition remembers for dedup, in well under 100 bytes each.

An id is kept as a 59-bit hash (`pipeline.windows.state.dedup_key`: Python's hash
of the id's parts, keyed per process; the set is rebuilt from the changelog's rows
at restore, so a hash never outlives the process that made it). A hash below
2**59 is a 32-byte int; the set holds it once, and a bucket per minute of event
time keeps the hashes in the order they came (8 bytes each, in an `array`) so that
they are forgotten a minute at a time. Two different ids share a hash with
probability 2**-59: with 2,000,000 ids held, a new event is taken for a
duplicate with probability about 3.5e-12, once in about 290 billion events.
"""

from __future__ import annotations

from array import array

MASK = (1 << 59) - 1  # below 2**59 an int takes 32 bytes, not 36
BUCKET_MS = 60_000


class SeenIds:
    """Event id hashes, forgotten by event time (oldest minute first)."""

    __slots__ = ("_buckets", "_ids")

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._buckets: dict[int, array[int]] = {}  # minute of event time -> hashes

    def __contains__(self, key: int) -> bool:
        return key in self._ids

    def __len__(self) -> int:
        return len(self._ids)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SeenIds) and self._ids == other._ids

    def __repr__(self) -> str:
        return f"SeenIds({len(self._ids)} ids in {len(self._buckets)} minutes)"

    def add(self, key: int, ts_ms: int) -> None:
        """Remember a key (from `dedup_key`) under its event's minute."""
        if key in self._ids:
            return
        self._ids.add(key)
        minute = ts_ms // BUCKET_MS
        bucket = self._buckets.get(minute)
        if bucket is None:
            bucket = self._buckets[minute] = array("q")
        bucket.append(key)

    def forget(self, before_ms: int, max_ids: int) -> None:
        """Forget every minute that ends at or before `before_ms`, then the oldest
        ids (oldest minute first, in the order they came) beyond `max_ids`."""
        ids, buckets = self._ids, self._buckets
        for minute in sorted(buckets):
            over = len(ids) - max_ids
            if (minute + 1) * BUCKET_MS <= before_ms or over >= len(buckets[minute]):
                ids.difference_update(buckets.pop(minute))
            elif over > 0:
                bucket = buckets[minute]
                ids.difference_update(bucket[:over])
                del bucket[:over]
                return
            else:
                return

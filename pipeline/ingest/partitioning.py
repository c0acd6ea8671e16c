"""The partition that owns an account: where its events, windows, responses and
detectors live. Competitors are placed with their brand, so share of voice sees
both sides in one partition."""

from __future__ import annotations

import zlib
from collections.abc import Mapping


def partition_for(key: str, partitions: int) -> int:
    """Stable across processes and languages (crc32, unlike Python's hash())."""
    return zlib.crc32(key.encode()) % partitions


def owner(account_id: str, homes: Mapping[str, str], partitions: int) -> int:
    """`homes`: competitor -> brand (`DetectionSettings.homes()`)."""
    return partition_for(homes.get(account_id, account_id), partitions)

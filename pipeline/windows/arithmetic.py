"""Tumbling-window arithmetic in event time (milliseconds since the epoch, UTC).

Windows are aligned to the epoch, so a 60 s window always starts on a minute.
"""

from __future__ import annotations

import time


def window_start(ts_ms: int, size_ms: int) -> int:
    """Start of the tumbling window of `size_ms` that contains `ts_ms`."""
    return ts_ms - ts_ms % size_ms


def window_bounds(ts_ms: int, size_ms: int) -> tuple[int, int]:
    """[start, end) of the window containing `ts_ms`; end is exclusive."""
    start = ts_ms - ts_ms % size_ms
    return start, start + size_ms


def is_final(end_ms: int, watermark_ms: int | None, grace_ms: int) -> bool:
    """A window is final once the watermark has passed its end plus grace."""
    return watermark_ms is not None and watermark_ms >= end_ms + grace_ms


def rfc3339(ts_ms: int) -> str:
    """UTC RFC 3339 with millisecond precision, e.g. 2026-11-21T10:00:00.000Z."""
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts_ms // 1000))
    return f"{stamp}.{ts_ms % 1000:03d}Z"

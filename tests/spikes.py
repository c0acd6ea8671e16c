"""A synthetic engagement series with a daily rhythm, one spike and one drop, as
events, and the window values the detectors read (the offline truth)."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Any

DAY_MS = 86_400_000
STEP_MS = 300_000


@dataclass(frozen=True)
class Spikes:
    events: list[dict[str, Any]]
    values: list[tuple[int, float]]  # (window start, likes) for every window
    spike_ms: int  # start of the spike window
    drop_ms: int  # start of the first empty window
    end_ms: int  # end of the last window with events


def generate(day0_ms: int, account: str = "acme", seed: int = 5) -> Spikes:
    """Three days of likes (about 30 per 5 min, a daily swing of +-10), then on the
    fourth day a 10x spike in the 10:00 window and no events from 16:00 to 17:00."""
    rnd = random.Random(seed)
    spike_ms = day0_ms + 3 * DAY_MS + 10 * 3_600_000
    drop_ms = day0_ms + 3 * DAY_MS + 16 * 3_600_000
    end_ms = day0_ms + 3 * DAY_MS + 19 * 3_600_000
    events: list[dict[str, Any]] = []
    values: list[tuple[int, float]] = []
    for start in range(day0_ms, end_ms, STEP_MS):
        hour = (start % DAY_MS) / 3_600_000
        mean = 30 + 10 * math.sin(2 * math.pi * hour / 24)
        n = max(0, round(rnd.gauss(mean, math.sqrt(mean))))
        if start == spike_ms:
            n *= 10
        if drop_ms <= start < drop_ms + 3_600_000:
            n = 0
        values.append((start, float(n)))
        for i in range(n):
            events.append(
                {
                    "event_id": f"{account}-{start}-{i}",
                    "kind": "like",
                    "channel": "instagram",
                    "account_id": account,
                    "ts": start + rnd.randrange(STEP_MS),
                    "post_id": f"p{rnd.randrange(20)}",
                    "actor_id": f"u{rnd.randrange(5000)}",
                }
            )
    events.sort(key=lambda e: e["ts"])
    return Spikes(events, values, spike_ms, drop_ms, end_ms)

"""`engagement replay --settle`: wait until the workers have made a whole file final.

A file is final when every partition of the internal topic has published
through a watermark past the file's last event time plus grace, and its
spike/drop detectors have been fed every window up to there: every response to
the file's messages is settled, every SLA deadline up to then judged, every
window that ended by then published and judged by the detectors. The windows that hold the very last
events close as the watermark passes their end (plus grace); with every input
IDLE it advances by wall time, so they follow within one window size.

The status of each partition comes from `GET /api/v1/status` of the worker given,
and of the workers it names for the partitions it does not own.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TextIO

from pipeline.windows.arithmetic import rfc3339

Fetch = Callable[[str], dict[str, Any]]  # status URL -> parsed document; raises OSError


@dataclass(slots=True)
class Reading:
    """The partitions as seen at one instant."""

    total: int | None = None
    partitions: dict[int, dict[str, Any]] = field(default_factory=dict)
    unreachable: dict[str, str] = field(default_factory=dict)  # worker URL -> error
    grace_ms: int = 0


def status_url(base: str) -> str:
    return base.rstrip("/") + "/api/v1/status"


def read(base_url: str, fetch: Fetch) -> Reading:
    """Ask the worker at `base_url`, then each worker it names for other partitions."""
    out = Reading()
    queue, asked = [base_url.rstrip("/")], set()
    while queue:
        url = queue.pop(0)
        if url in asked:
            continue
        asked.add(url)
        try:
            doc = fetch(status_url(url))
        except (OSError, ValueError) as exc:
            out.unreachable[url] = str(exc) or type(exc).__name__
            continue
        out.total = int(doc["partitions_total"])
        out.grace_ms = int(float(doc.get("grace_s", 0)) * 1000)
        for p, v in doc["partitions"].items():
            out.partitions[int(p)] = v
        queue.extend(u.rstrip("/") for u in doc.get("elsewhere", {}).values())
    return out


@dataclass(frozen=True, slots=True)
class Verdict:
    settled: bool
    behind: list[str]  # one line per partition not final yet, or not served


def judge(reading: Reading, last_ts_ms: int) -> Verdict:
    """Whether every partition published past `last_ts_ms` plus grace."""
    target = last_ts_ms + reading.grace_ms + 1
    if reading.total is None:
        reasons = "; ".join(f"{u}: {e}" for u, e in reading.unreachable.items())
        return Verdict(False, [f"no worker answered ({reasons or 'none asked'})"])
    behind: list[str] = []
    for p in range(reading.total):
        v = reading.partitions.get(p)
        if v is None:
            behind.append(f"partition {p}: not served by any worker reached")
            continue
        published = v.get("published_through_ms")
        if published is None or published < target:
            at = v.get("published_through") or "nothing yet"
            behind.append(f"partition {p}: published through {at}, held by {v.get('held_by')}")
        elif not v.get("detectors_caught_up", True):
            behind.append(f"partition {p}: spike/drop detectors still feeding older windows")
    return Verdict(not behind, behind)


def wait(
    base_url: str,
    last_ts_ms: int,
    *,
    timeout_s: float,
    fetch: Fetch,
    stream: TextIO,
    quiet: bool = False,
    interval_s: float = 0.5,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> Verdict:
    """Poll until the file is final or `timeout_s` passes; progress on `stream`."""
    start = clock()
    last_line: float | None = None
    while True:
        verdict = judge(read(base_url, fetch), last_ts_ms)
        elapsed = clock() - start
        if verdict.settled:
            if not quiet:
                stream.write(
                    f"settled in {elapsed:.1f} s: every partition published past the "
                    f"file's last event ({rfc3339(last_ts_ms)})\n"
                )
            return verdict
        if elapsed >= timeout_s:
            stream.write(f"replay: not settled after {timeout_s:g} s; still open:\n")
            for line in verdict.behind:
                stream.write(f"  {line}\n")
            return verdict
        if not quiet and (last_line is None or elapsed - last_line >= 2.0):
            last_line = elapsed
            stream.write(
                f"settling ({elapsed:.0f} s): {len(verdict.behind)} partitions not final; "
                f"{verdict.behind[0]}\n"
            )
            stream.flush()
        sleep(interval_s)

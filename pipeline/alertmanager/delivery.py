"""Delivery decisions of the bridge: what an Alertmanager answer means, how long to wait
before trying again, and which consumer offsets are safe to commit.

At least once: an offset is committed only when every record before it is settled,
that is accepted (2xx) by Alertmanager or skipped (not an alert.v1, or refused by
Alertmanager as malformed). Connection errors, timeouts, 5xx, 429 and any other 4xx
(a wrong URL or path, missing credentials: the alerts are fine, the setup is not) are
tried again, with exponential backoff, jittered and capped, until Alertmanager takes
the batch; nothing is dropped for a transient failure. With several Alertmanager URLs
(an HA cluster, whose members deduplicate notifications among themselves) each batch
is posted to every one and counts as accepted when at least one accepted it, as
Prometheus does.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from pipeline.alertmanager.payload import AmAlert, body


class Verdict(enum.Enum):
    ACCEPTED = "accepted"
    REJECTED = "rejected"  # the alerts themselves are malformed: retrying cannot help
    RETRY = "retry"


# 400 (Alertmanager's validation error), 422 (its request schema) and 413 (too large:
# a batch is split into single alerts; a single alert that large is malformed).
_REJECTS = frozenset({400, 413, 422})


def classify(status: int | None) -> Verdict:
    """One answer: an HTTP status, or None when there was none (refused, reset, timeout)."""
    if status is not None and 200 <= status < 300:
        return Verdict.ACCEPTED
    if status in _REJECTS:
        return Verdict.REJECTED
    return Verdict.RETRY


def combine(statuses: Sequence[int | None]) -> Verdict:
    """The answers of every Alertmanager URL to one post."""
    verdicts = {classify(s) for s in statuses}
    if Verdict.ACCEPTED in verdicts:
        return Verdict.ACCEPTED
    if Verdict.RETRY in verdicts or not verdicts:
        return Verdict.RETRY
    return Verdict.REJECTED


def retry_reason(status: int | None) -> str:
    """Metric label of a failed attempt (bounded: five values)."""
    if status is None:
        return "unreachable"
    if status >= 500:
        return "http_5xx"
    if status == 429:
        return "http_429"
    if 400 <= status < 500:
        return "http_4xx"
    return "http_other"


def backoff_s(attempt: int, base_s: float, cap_s: float, rand: Callable[[], float]) -> float:
    """Wait before retry number `attempt` (0 first): exponential, capped at `cap_s`, with
    equal jitter (half fixed, half random), so bridges that failed together do not
    retry together and the wait still grows."""
    step = min(cap_s, base_s * 2.0 ** min(attempt, 62))
    return step / 2 + rand() * step / 2


class Stopped(Exception):
    """The bridge is stopping: the batch is left unsettled, nothing of it is committed."""


Post = Callable[[bytes], list[int | None]]  # body -> one status per Alertmanager URL
TP = tuple[str, int]  # (topic, partition)


@dataclass(slots=True)
class Retry:
    """How to try again; `sleep` returns False when the bridge is stopping."""

    sleep: Callable[[float], bool]
    rand: Callable[[], float]
    base_s: float = 0.2
    cap_s: float = 30.0
    on_failure: Callable[[str, int], None] = lambda reason, attempt: None


@dataclass(slots=True)
class Delivery:
    """What became of each alert of a batch, by index: accepted or rejected."""

    accepted: list[int] = field(default_factory=list)
    rejected: list[int] = field(default_factory=list)
    posts: int = 0


def _until_decided(payload: bytes, post: Post, retry: Retry, out: Delivery) -> Verdict:
    attempt = 0
    while True:
        statuses = post(payload)
        out.posts += 1
        verdict = combine(statuses)
        if verdict is not Verdict.RETRY:
            return verdict
        failed = next((s for s in statuses if classify(s) is Verdict.RETRY), None)
        retry.on_failure(retry_reason(failed), attempt)
        if not retry.sleep(backoff_s(attempt, retry.base_s, retry.cap_s, retry.rand)):
            raise Stopped
        attempt += 1


def deliver(alerts: Sequence[AmAlert], post: Post, retry: Retry) -> Delivery:
    """Post the batch as one list; if Alertmanager refuses it as malformed, post its
    alerts one by one to find which (re-posting the good ones is harmless: same labels,
    same alert). Raises Stopped if asked to stop while retrying."""
    out = Delivery()
    if not alerts:
        return out
    if _until_decided(body(list(alerts)), post, retry, out) is Verdict.ACCEPTED:
        out.accepted = list(range(len(alerts)))
        return out
    if len(alerts) == 1:
        out.rejected = [0]
        return out
    for i, alert in enumerate(alerts):
        verdict = _until_decided(body([alert]), post, retry, out)
        (out.accepted if verdict is Verdict.ACCEPTED else out.rejected).append(i)
    return out


class Offsets:
    """Per partition, the offsets fetched and not yet settled; the position safe to
    commit is the first unsettled offset (or one past the last settled)."""

    def __init__(self) -> None:
        self._open: dict[TP, deque[list[int | bool]]] = {}
        self._committed: dict[TP, int] = {}
        self._position: dict[TP, int] = {}

    def fetched(self, tp: TP, offset: int) -> None:
        queue = self._open.setdefault(tp, deque())
        if queue and offset <= int(queue[-1][0]):
            raise ValueError(f"offset {offset} fetched out of order on {tp}")
        queue.append([offset, False])

    def settled(self, tp: TP, offset: int) -> None:
        queue = self._open.get(tp)
        for item in queue or ():
            if item[0] == offset:
                item[1] = True
                break
        else:
            raise KeyError(f"offset {offset} was not fetched on {tp}")
        while queue and queue[0][1]:
            self._position[tp] = int(queue.popleft()[0]) + 1

    def to_commit(self) -> dict[TP, int]:
        """Positions that moved since the last `committed` (the next offset to read)."""
        return {tp: pos for tp, pos in self._position.items() if self._committed.get(tp) != pos}

    def committed(self, positions: dict[TP, int]) -> None:
        self._committed.update(positions)

    def forget(self, tps: Sequence[TP]) -> None:
        """Partitions taken away by a rebalance: their open records are someone else's."""
        for tp in tps:
            self._open.pop(tp, None)
            self._committed.pop(tp, None)
            self._position.pop(tp, None)

    def open_count(self) -> int:
        return sum(len(q) for q in self._open.values())

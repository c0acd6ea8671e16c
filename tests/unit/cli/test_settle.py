"""`replay --settle` logic without a worker: reading every worker's status, judging
whether a file is final, and giving up with what is still open."""

from __future__ import annotations

import io
from typing import Any

import pytest

from pipeline.cli import settle
from pipeline.windows.aggregator import PartitionState
from pipeline.windows.status import document, partition_status
from pipeline.windows.valve import Sources
from tests.unit.fixtures import cfg

LAST = 1_511_740_800_000
A, B = "http://127.0.0.1:6066", "http://127.0.0.1:6067"


def part(published: int | None, held: str = "x:0: backlog of 3 messages") -> dict[str, Any]:
    return {"published_through_ms": published, "published_through": None, "held_by": held}


def doc(parts: dict[int, Any], elsewhere: dict[int, str], total: int = 4) -> dict[str, Any]:
    return {
        "partitions_total": total,
        "partitions": {str(p): v for p, v in parts.items()},
        "elsewhere": {str(p): u for p, u in elsewhere.items()},
        "grace_s": 5.0,
    }


def fetcher(docs: dict[str, Any]) -> settle.Fetch:
    def fetch(url: str) -> dict[str, Any]:
        base = url.removesuffix("/api/v1/status")
        if base not in docs:
            raise ConnectionRefusedError("connection refused")
        value: dict[str, Any] = docs[base]
        return value

    return fetch


def test_reads_every_worker_named_and_judges_against_last_event_plus_grace() -> None:
    target = LAST + 5_000 + 1
    docs = {
        A: doc({0: part(target), 2: part(target)}, {1: B, 3: B}),
        B: doc({1: part(target), 3: part(target - 1)}, {0: A, 2: A}),
    }
    reading = settle.read(A, fetcher(docs))
    assert sorted(reading.partitions) == [0, 1, 2, 3] and reading.grace_ms == 5_000
    verdict = settle.judge(reading, LAST)
    assert not verdict.settled
    assert verdict.behind == [
        "partition 3: published through nothing yet, held by x:0: backlog of 3 messages"
    ]
    docs[B]["partitions"]["3"] = part(target)
    assert settle.judge(settle.read(A, fetcher(docs)), LAST).settled


def test_a_partition_no_reachable_worker_serves_is_open() -> None:
    docs = {A: doc({0: part(LAST + 10_000)}, {1: B}, total=2)}
    verdict = settle.judge(settle.read(A, fetcher(docs)), LAST)
    assert verdict.behind == ["partition 1: not served by any worker reached"]


def test_no_worker_at_all_is_open_with_the_reason() -> None:
    verdict = settle.judge(settle.read(A, fetcher({})), LAST)
    assert not verdict.settled and "connection refused" in verdict.behind[0]


def test_wait_gives_up_after_the_timeout_listing_what_is_open() -> None:
    now = [0.0]
    out = io.StringIO()
    verdict = settle.wait(
        A,
        LAST,
        timeout_s=3,
        fetch=fetcher({A: doc({0: part(None)}, {}, total=1)}),
        stream=out,
        clock=lambda: now[0],
        sleep=lambda s: now.__setitem__(0, now[0] + s),
    )
    assert not verdict.settled
    text = out.getvalue()
    assert "settling (0 s): 1 partitions not final" in text
    assert "replay: not settled after 3 s; still open:\n  partition 0:" in text


def test_wait_returns_once_settled() -> None:
    out = io.StringIO()
    answers = iter([part(LAST), part(LAST + 5_001)])
    verdict = settle.wait(
        A,
        LAST,
        timeout_s=60,
        fetch=lambda url: doc({0: next(answers)}, {}, total=1),
        stream=out,
        clock=lambda: 0.0,
        sleep=lambda s: None,
    )
    assert verdict.settled and "settled in 0.0 s" in out.getvalue()


@pytest.mark.parametrize("catching_up", [True, False])
def test_the_status_document_names_what_holds_each_partition(catching_up: bool) -> None:
    config = cfg()
    state = PartitionState(sources=Sources(40_000, required=True, expected=frozenset({"a:0"})))
    v = partition_status(
        state, config, published_ms=None, catching_up=catching_up, lag=0, wall_ms=10**12
    )
    assert v["held_by"] == (
        "re-reading its backlog after a restore"
        if catching_up
        else "a:0: holding: not reported yet"
    )
    state.sources.update({"a:0": [LAST, 0]}, 10**12)
    state.sources.update({"a:0": [LAST, 0]}, 10**12 + 10_000)  # a keepalive
    v = partition_status(
        state, config, published_ms=LAST, catching_up=False, lag=0, wall_ms=10**12 + 10_000
    )
    assert v["inputs"]["a:0"]["status"] == "IDLE"
    assert v["held_by"] == "every input partition is IDLE: advancing by wall time"
    assert v["published_through"] == "2017-11-27T00:00:00.000Z"
    d = document({0: v}, total=2, owners={0: A, 1: B}, cfg=config)
    assert d["elsewhere"] == {"1": B} and d["partitions_total"] == 2
    assert d["window_sizes_s"] == [60, 300] and d["grace_s"] == 5.0


def test_a_partition_whose_detectors_trail_is_not_final_yet() -> None:
    v = {**part(LAST + 10_000), "detectors_caught_up": False}
    verdict = settle.judge(settle.read(A, fetcher({A: doc({0: v}, {}, total=1)})), LAST)
    assert verdict.behind == ["partition 0: spike/drop detectors still feeding older windows"]
    v["detectors_caught_up"] = True
    assert settle.judge(settle.read(A, fetcher({A: doc({0: v}, {}, total=1)})), LAST).settled

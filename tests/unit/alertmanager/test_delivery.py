"""Delivery decisions: which answers are retried, backoff, splitting a refused batch,
and the offsets safe to commit."""

from __future__ import annotations

from typing import Any

import orjson
import pytest

from pipeline.alertmanager.delivery import (
    Offsets,
    Retry,
    Stopped,
    Verdict,
    backoff_s,
    classify,
    combine,
    deliver,
    retry_reason,
)
from pipeline.alertmanager.payload import AmAlert

TP = ("engagement.alerts", 0)


def am(n: int) -> AmAlert:
    return AmAlert(f"id{n}", {"alertname": "t", "alert_id": f"id{n}"}, {}, 0, 1000)


@pytest.mark.parametrize(
    ("status", "verdict"),
    [
        (200, Verdict.ACCEPTED),
        (204, Verdict.ACCEPTED),
        (400, Verdict.REJECTED),
        (413, Verdict.REJECTED),
        (422, Verdict.REJECTED),
        (None, Verdict.RETRY),
        (500, Verdict.RETRY),
        (503, Verdict.RETRY),
        (429, Verdict.RETRY),
        (404, Verdict.RETRY),  # a wrong URL: the alerts are fine, keep them
        (401, Verdict.RETRY),
        (302, Verdict.RETRY),
    ],
)
def test_classify(status: int | None, verdict: Verdict) -> None:
    assert classify(status) is verdict


def test_one_accepting_alertmanager_of_several_is_enough() -> None:
    assert combine([None, 200]) is Verdict.ACCEPTED
    assert combine([400, 503]) is Verdict.RETRY
    assert combine([400, 422]) is Verdict.REJECTED
    assert combine([]) is Verdict.RETRY


def test_retry_reasons_are_few() -> None:
    assert {retry_reason(s) for s in (None, 500, 503, 429, 404, 401, 302)} == {
        "unreachable",
        "http_5xx",
        "http_429",
        "http_4xx",
        "http_other",
    }


def test_backoff_grows_exponentially_is_capped_and_jittered() -> None:
    low = [backoff_s(a, 0.2, 30.0, lambda: 0.0) for a in range(12)]
    high = [backoff_s(a, 0.2, 30.0, lambda: 1.0) for a in range(12)]
    assert low[:4] == pytest.approx([0.1, 0.2, 0.4, 0.8])
    assert high[:4] == pytest.approx([0.2, 0.4, 0.8, 1.6])
    assert max(high) == 30.0 and high[-1] == 30.0 and low[-1] == 15.0
    assert backoff_s(10_000, 0.2, 30.0, lambda: 0.5) == pytest.approx(22.5)


class Script:
    """An Alertmanager that answers from a script: a function of the posted alert ids."""

    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.posted: list[list[str]] = []

    def __call__(self, data: bytes) -> list[int | None]:
        ids = [a["labels"]["alert_id"] for a in orjson.loads(data)]
        self.posted.append(ids)
        return list(self.answer(ids, len(self.posted)))


def retry(sleeps: list[float], stop_after: int = 1000) -> Retry:
    def sleep(delay_s: float) -> bool:
        sleeps.append(delay_s)
        return len(sleeps) < stop_after

    return Retry(sleep=sleep, rand=lambda: 1.0, base_s=0.1, cap_s=1.0)


def test_a_batch_is_one_post() -> None:
    post = Script(lambda ids, n: [200])
    out = deliver([am(1), am(2), am(3)], post, retry([]))
    assert post.posted == [["id1", "id2", "id3"]]
    assert out.accepted == [0, 1, 2] and out.rejected == []


def test_failures_are_retried_with_backoff_until_accepted() -> None:
    sleeps: list[float] = []
    failures: list[tuple[str, int]] = []
    post = Script(lambda ids, n: [None] if n <= 2 else [503] if n <= 6 else [200])
    r = retry(sleeps)
    r.on_failure = lambda reason, attempt: failures.append((reason, attempt))
    out = deliver([am(1)], post, r)
    assert out.accepted == [0] and out.posts == 7
    assert sleeps == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0])
    assert failures[:3] == [("unreachable", 0), ("unreachable", 1), ("http_5xx", 2)]


def test_stopping_while_retrying_leaves_the_batch_unsettled() -> None:
    post = Script(lambda ids, n: [503])
    with pytest.raises(Stopped):
        deliver([am(1)], post, retry([], stop_after=3))
    assert len(post.posted) == 3


def test_a_refused_batch_is_posted_alert_by_alert_to_find_the_malformed_one() -> None:
    post = Script(lambda ids, n: [400] if "id2" in ids else [200])
    out = deliver([am(1), am(2), am(3)], post, retry([]))
    assert post.posted == [["id1", "id2", "id3"], ["id1"], ["id2"], ["id3"]]
    assert out.accepted == [0, 2] and out.rejected == [1]


def test_a_single_refused_alert_is_rejected_without_retry() -> None:
    post = Script(lambda ids, n: [422])
    out = deliver([am(1)], post, retry([]))
    assert out.rejected == [0] and out.posts == 1


def test_nothing_to_deliver_posts_nothing() -> None:
    post = Script(lambda ids, n: [200])
    assert deliver([], post, retry([])).posts == 0 and post.posted == []


def test_offsets_commit_up_to_the_first_unsettled_record() -> None:
    o = Offsets()
    for off in (5, 6, 7, 8):
        o.fetched(TP, off)
    assert o.to_commit() == {}
    o.settled(TP, 6)
    assert o.to_commit() == {}  # 5 is still open
    o.settled(TP, 5)
    assert o.to_commit() == {TP: 7}
    o.committed({TP: 7})
    assert o.to_commit() == {}
    o.settled(TP, 8)
    assert o.to_commit() == {}
    o.settled(TP, 7)
    assert o.to_commit() == {TP: 9} and o.open_count() == 0


def test_offsets_per_partition_and_forgotten_on_revocation() -> None:
    o = Offsets()
    other = ("engagement.alerts", 1)
    o.fetched(TP, 0)
    o.fetched(other, 10)
    o.settled(other, 10)
    assert o.to_commit() == {other: 11}
    o.forget([other])
    assert o.to_commit() == {} and o.open_count() == 1


def test_offsets_refuse_what_was_not_fetched_or_out_of_order() -> None:
    o = Offsets()
    o.fetched(TP, 3)
    with pytest.raises(ValueError):
        o.fetched(TP, 3)
    with pytest.raises(KeyError):
        o.settled(TP, 4)

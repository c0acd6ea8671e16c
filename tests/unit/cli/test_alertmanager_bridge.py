"""The bridge's loop with a scripted consumer and Alertmanager (no broker, no network):
offsets are committed only after Alertmanager accepted what precedes them."""

from __future__ import annotations

import logging
import threading
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
from prometheus_client import CollectorRegistry

from pipeline.cli import main
from pipeline.cli.alertmanager_bridge import Bridge, poster, serve
from pipeline.config.settings import Settings
from pipeline.model import records

TOPIC = "engagement.alerts"


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    value: bytes | None


class FakeConsumer:
    def __init__(self, batches: list[list[Record]], stop: threading.Event) -> None:
        self.batches, self.stop = batches, stop
        self.commits: list[dict[tuple[str, int], int]] = []
        self.subscribed: list[str] = []

    def subscribe(self, topics: list[str], listener: Any = None) -> None:
        self.subscribed = topics

    def poll(self, timeout_ms: int, max_records: int) -> dict[Any, list[Record]]:
        if not self.batches:
            self.stop.set()
            return {}
        batch = self.batches.pop(0)
        return {"tp": batch}

    def commit(self, request: dict[Any, Any]) -> None:
        self.commits.append({(tp.topic, tp.partition): om.offset for tp, om in request.items()})

    def close(self, autocommit: bool = True) -> None:
        pass


def alert(n: int) -> bytes:
    return orjson.dumps(
        records.alert(
            ident=f"id{n}",
            type="threshold_above",
            severity="warning",
            account_id="acme",
            channel="x",
            metric="volume",
            window_start="2026-11-21T20:00:00Z",
            window_end="2026-11-21T20:01:00Z",
            observed=10.0,
            expected=None,
            threshold=5.0,
            message="SECRET-LOOKING SUMMARY",
        )
    )


def value(b: Bridge, name: str, **labels: str) -> float | None:
    return b.registry.get_sample_value(name, labels)


def bridge(
    batches: list[list[Record]], answer: Any, **settings: Any
) -> tuple[Bridge, FakeConsumer, list[list[str]]]:
    stop = threading.Event()
    consumer = FakeConsumer(batches, stop)
    posted: list[list[str]] = []

    def post(data: bytes) -> list[int | None]:
        ids = [a["labels"]["alert_id"] for a in orjson.loads(data)]
        posted.append(ids)
        return [answer(ids, len(posted))]

    s = Settings(alertmanager_backoff_max_s=0.01, **settings)
    b = Bridge(s, stop, CollectorRegistry(), consumer=consumer, post=post)
    return b, consumer, posted


def test_commits_after_acceptance_one_post_per_poll() -> None:
    batches = [[Record(TOPIC, 0, 0, alert(0)), Record(TOPIC, 0, 1, alert(1))]]
    b, consumer, posted = bridge(batches, lambda ids, n: 200)
    b.run()
    assert consumer.subscribed == [TOPIC]
    assert posted == [["id0", "id1"]]
    assert consumer.commits == [{(TOPIC, 0): 2}]


def test_nothing_is_committed_while_alertmanager_fails() -> None:
    batches = [[Record(TOPIC, 0, 0, alert(0))]]
    b, consumer, posted = bridge(batches, lambda ids, n: 503 if n < 4 else 200)
    b.run()
    assert len(posted) == 4 and consumer.commits == [{(TOPIC, 0): 1}]
    assert value(b, "engagement_alertmanager_post_retries_total", reason="http_5xx") == 3


def test_stopping_during_retries_commits_nothing() -> None:
    batches = [[Record(TOPIC, 0, 0, alert(0))]]
    b, consumer, posted = bridge(batches, lambda ids, n: None)
    original = b.retry.sleep
    b.retry.sleep = lambda d: original(d) and len(posted) < 3
    b.run()
    assert len(posted) == 3 and consumer.commits == []


def test_invalid_and_refused_records_are_skipped_logged_without_content(
    caplog: pytest.LogCaptureFixture,
) -> None:
    batches = [
        [
            Record(TOPIC, 1, 7, b"not json"),
            Record(TOPIC, 1, 8, alert(1)),
            Record(TOPIC, 1, 9, alert(2)),
        ]
    ]
    b, consumer, posted = bridge(batches, lambda ids, n: 400 if "id2" in ids else 200)
    with caplog.at_level(logging.ERROR):
        b.run()
    assert consumer.commits == [{(TOPIC, 1): 10}]
    assert posted == [["id1", "id2"], ["id1"], ["id2"]]
    text = caplog.text
    assert "engagement.alerts[1]@7: not an alert.v1 (not_json)" in text
    assert "engagement.alerts[1]@9 alert_id=id2: Alertmanager refused it" in text
    assert "SECRET" not in text and "not json" not in text.replace("not_json", "")
    skipped = "engagement_alertmanager_alerts_skipped_total"
    assert value(b, skipped, reason="invalid_record") == 1
    assert value(b, skipped, reason="rejected") == 1
    assert value(b, "engagement_alertmanager_alerts_posted_total") == 1


def test_the_topic_takes_the_prefix() -> None:
    _, consumer, _ = bridge([], lambda ids, n: 200, topic_prefix="staging.")
    assert consumer.subscribed == ["staging.engagement.alerts"]


@pytest.fixture
def web() -> Iterator[tuple[str, Bridge]]:
    b, _, _ = bridge([], lambda ids, n: 200)
    server = serve("127.0.0.1", 0, CollectorRegistry(), b.health)
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", b
    finally:
        server.shutdown()
        server.server_close()


def test_healthz_once_the_loop_turns(web: tuple[str, Bridge]) -> None:
    url, b = web
    with pytest.raises(urllib.error.HTTPError) as exc:
        urllib.request.urlopen(f"{url}/healthz", timeout=5)
    assert exc.value.code == 503
    b.health.tick()
    with urllib.request.urlopen(f"{url}/healthz", timeout=5) as r:
        assert r.status == 200
    with urllib.request.urlopen(f"{url}/metrics", timeout=5) as r:
        assert r.status == 200


def test_the_poster_reports_no_answer_as_none() -> None:
    post = poster(["http://127.0.0.1:1"], timeout_s=1)
    assert post(b"[]") == [None]


def test_the_command_is_registered() -> None:
    args = main.parser().parse_args(["alertmanager-bridge", "--wait", "3"])
    assert args.func is main.cmd_alertmanager_bridge and args.wait == 3.0

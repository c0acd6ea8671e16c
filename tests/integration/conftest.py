"""Integration fixtures: one broker per session, a fresh topic set and consumer group
per test, and a real worker process.

ENGAGEMENT_TEST_BROKER chooses the broker:
- unset or `embedded`: the suite starts the embedded broker itself;
- `apache-kafka`: the suite starts a single-node Apache Kafka 4.x (KRaft) from jars
  that Maven fetches once (needs `java` and `mvn`);
- `kafka://host:port`: an existing broker, for example `docker compose up kafka`,
  which listens on localhost:9092.
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

import orjson
import pytest
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.errors import CoordinatorNotAvailableError
from kafka.structs import TopicPartition
from prometheus_client.parser import text_string_to_metric_families

from pipeline.cli import broker
from pipeline.cli.topics import ensure_topics
from tests.kafka.apache_kafka import ApacheKafka, KafkaUnavailable, tools_present

ROOT = Path(__file__).resolve().parents[2]
RAW = ["likes", "comments", "shares", "mentions", "dms", "replies", "exposure"]
OUTPUTS = ["engagement.events", "engagement.windows", "engagement.alerts", "engagement.deadletter"]


def broker_choice() -> str:
    return os.environ.get("ENGAGEMENT_TEST_BROKER", "embedded") or "embedded"


def apache_kafka_pass() -> bool:
    """True when this run's broker is an Apache Kafka the suite started itself."""
    return broker_choice() == "apache-kafka"


# Tests that stop or reconfigure a broker start their own Apache Kafka; they run
# in the Apache Kafka pass of `make test` (one visible skip in the others).
needs_own_apache_kafka = pytest.mark.skipif(
    not apache_kafka_pass(),
    reason="starts its own Apache Kafka: runs with ENGAGEMENT_TEST_BROKER=apache-kafka",
)


def point_at_log(request: pytest.FixtureRequest, what: str, log: Path) -> None:
    """After a failed run, say where the broker's log was kept."""
    reporter = request.config.pluginmanager.get_plugin("terminalreporter")
    if request.session.testsfailed and reporter is not None:
        reporter.write_line(f"{what} log (kept): {log}")


@pytest.fixture(scope="session")
def bootstrap(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    choice = broker_choice()
    if choice == "apache-kafka":
        if not tools_present():
            pytest.fail("ENGAGEMENT_TEST_BROKER=apache-kafka needs `java` and `mvn` on PATH")
        kafka = ApacheKafka(tmp_path_factory.mktemp("apache-kafka"))
        try:
            kafka.start()
        except KafkaUnavailable as exc:
            pytest.fail(str(exc))
        try:
            yield kafka.bootstrap
        finally:
            kafka.stop()
            point_at_log(request, "Apache Kafka", kafka.log_path)
        return
    if choice != "embedded":
        servers = choice.removeprefix("kafka://")
        broker.wait_reachable(servers, timeout_s=10)
        yield servers
        return
    port = broker.free_port()
    log = tmp_path_factory.mktemp("broker") / "broker.log"
    proc = broker.start(port, log_path=log)
    try:
        yield f"127.0.0.1:{port}"
    finally:
        broker.stop(proc)
        point_at_log(request, "embedded broker", log)


class Service:
    """A real `engagement` command in its own process, with its own settings and
    web port (/healthz and /metrics)."""

    name = "service"
    command: tuple[str, ...] = ()

    def __init__(self, env: dict[str, str], log_path: Path, web_port: int) -> None:
        self.env, self.log_path, self.web_port = env, log_path, web_port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout_s: float = 60.0) -> Any:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", *self.command],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
        wait_for(lambda: self.healthy(), timeout_s, f"{self.name} /healthz", self)
        return self

    def healthy(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise AssertionError(f"{self.name} exited with {self.proc.returncode}:\n{self.log()}")
        try:
            with urllib.request.urlopen(
                f"http://127.0.0.1:{self.web_port}/healthz", timeout=1
            ) as r:
                return bool(r.status == 200)
        except OSError:
            return False

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        url = f"http://127.0.0.1:{self.web_port}/metrics"
        with urllib.request.urlopen(url, timeout=5) as r:
            text = r.read().decode()
        out = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                out[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return out

    def metric(self, name: str, **labels: str) -> float:
        return self.metrics().get((name, tuple(sorted(labels.items()))), 0.0)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]


class Worker(Service):
    """A real `engagement worker` process."""

    name = "worker"
    command = ("worker", "--loglevel", "info")


class Logged(Protocol):
    def log(self) -> str: ...


def wait_for(
    cond: Callable[[], Any], timeout_s: float, what: str, worker: Logged | None = None
) -> Any:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        result = cond()
        if result:
            return result
        time.sleep(0.2)
    tail = f"\nits log:\n{worker.log()}" if worker else ""
    raise AssertionError(f"timed out after {timeout_s} s waiting for {what}{tail}")


def generation(w: Worker) -> int | None:
    """The group generation this member last received its partitions in."""
    log = w.log_path.read_text(errors="replace")
    joined = list(re.finditer(r"Joined group '[^']+' \(generation (\d+)\)", log))
    if not joined or "Setting newly assigned partitions" not in log[joined[-1].end() :]:
        return None
    return int(joined[-1][1])


def wait_one_assignment(first: Worker, second: Worker) -> None:
    """Until both members of one group hold their partitions of the same generation."""
    wait_for(
        lambda: generation(second) is not None and generation(second) == generation(first),
        60,
        "both members to share one assignment",
        first,
    )


class Env:
    """One test's topics, producer and worker settings."""

    def __init__(self, bootstrap: str, tmp: Path) -> None:
        self.bootstrap = bootstrap
        self.tmp = tmp
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.partitions = 4
        self.raw_partitions = 4
        self.producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=5)
        self.workers: list[Worker] = []

    def topic(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def create_topics(self, raw_partitions: int | None = None) -> None:
        """Create this test's topics; input topics may have their own partition count,
        as producers' topics often do."""
        raw = [self.topic(f"social.{r}") for r in RAW]
        self.raw_partitions = raw_partitions or self.partitions
        ensure_topics(self.bootstrap, raw, self.raw_partitions)
        ensure_topics(self.bootstrap, [self.topic(n) for n in OUTPUTS], self.partitions)

    def fresh_topics(self, raw_partitions: int, partitions: int | None = None) -> None:
        """A new topic set: input topics with `raw_partitions`, the others with
        `partitions` (default: unchanged)."""
        self.prefix = f"t{uuid.uuid4().hex[:10]}."
        self.partitions = partitions or self.partitions
        self.create_topics(raw_partitions)

    def worker(self, config: str = "", app_id: str | None = None, **env: str) -> Worker:
        cfg = self.tmp / f"config-{len(self.workers)}.toml"
        cfg.write_text(config, encoding="utf-8")
        web_port = broker.free_port()
        full_env = {
            **os.environ,
            "ENGAGEMENT_BROKER": f"kafka://{self.bootstrap}",
            "ENGAGEMENT_WEB_PORT": str(web_port),
            "ENGAGEMENT_TOPIC_PREFIX": self.prefix,
            "ENGAGEMENT_APP_ID": app_id or f"{self.prefix}app",
            "ENGAGEMENT_PARTITIONS": str(self.partitions),
            "ENGAGEMENT_CONFIG": str(cfg),
            "ENGAGEMENT_DATA_DIR": str(self.tmp / "data"),
            **env,
        }
        w = Worker(full_env, self.tmp / f"worker-{len(self.workers)}.log", web_port)
        self.workers.append(w)
        return w

    def send(
        self,
        raw: str,
        value: bytes | dict[str, Any],
        key: bytes | None = None,
        partition: int | None = None,
    ) -> tuple[int, int]:
        """Produce to social.<raw>; returns (partition, offset)."""
        data = value if isinstance(value, bytes) else orjson.dumps(value)
        if key is None and isinstance(value, dict) and partition is None:
            key = str(value.get("account_id", "")).encode() or None
        md = self.producer.send(
            self.topic(f"social.{raw}"), value=data, key=key, partition=partition
        ).get(timeout=30)
        return md.partition, md.offset

    def read(self, name: str) -> list[Any]:
        """Every record currently in an output topic, parsed."""
        consumer = KafkaConsumer(
            bootstrap_servers=self.bootstrap,
            enable_auto_commit=False,
            consumer_timeout_ms=1500,
            auto_offset_reset="earliest",
        )
        try:
            tps = [TopicPartition(self.topic(name), p) for p in range(self.partitions)]
            consumer.assign(tps)
            consumer.seek_to_beginning(*tps)
            return [orjson.loads(m.value) for m in consumer]
        finally:
            consumer.close()

    def wait_records(
        self,
        name: str,
        cond: Callable[[list[Any]], bool],
        timeout_s: float = 60,
        worker: Worker | None = None,
    ) -> list[Any]:
        box: list[list[Any]] = []

        def check() -> bool:
            box[:] = [self.read(name)]
            return cond(box[0])

        wait_for(check, timeout_s, f"records on {name}", worker)
        return box[0]

    def close_all(self, at_ms: int) -> None:
        """One event at `at_ms` on every partition of every input topic (channel
        "closer", account "closer"): the watermark moves past everything before it."""
        for raw in RAW:
            for p in range(self.raw_partitions):
                if raw == "exposure":
                    value: dict[str, Any] = {"followers": 1, "post_id": f"closer-{p}"}
                else:
                    value = {
                        "event_id": f"closer-{raw}-{p}-{at_ms}",
                        "kind": "like",
                        "post_id": "closer",
                    }
                value.update(account_id="closer", channel="closer", ts=at_ms)
                self.send(raw, value, key=b"closer", partition=p)

    def committed(self, group: str, topic_prefix: str) -> int:
        """Sum of the group's committed offsets on this test's topics starting with
        `topic_prefix` (after the test prefix)."""
        admin = KafkaAdminClient(bootstrap_servers=self.bootstrap)
        try:
            offsets = admin.list_group_offsets({group: None}).get(group, {})
        except CoordinatorNotAvailableError:  # a new cluster's offsets topic is not up yet
            return 0
        finally:
            admin.close()
        want = self.topic(topic_prefix)
        return sum(
            o.offset for tp, o in offsets.items() if tp.topic.startswith(want) and o.offset > 0
        )

    def close(self) -> None:
        for w in self.workers:
            w.stop()
        self.producer.close()


@pytest.fixture
def env(bootstrap: str, tmp_path: Path) -> Iterator[Env]:
    e = Env(bootstrap, tmp_path)
    e.create_topics()
    try:
        yield e
    finally:
        e.close()

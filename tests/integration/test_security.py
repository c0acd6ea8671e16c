"""SASL and TLS against Apache Kafka: the worker and the generator log in with PLAIN,
SCRAM-SHA-256 and SCRAM-SHA-512, also over TLS; the password never reaches a log, and a
wrong one (or an untrusted certificate) stops the worker with a one-line error.

The broker is this module's own Apache Kafka with SASL_PLAINTEXT and SASL_SSL
listeners (its PLAINTEXT listener serves the test's producer and reader), so it needs
`java` and `mvn`, whatever ENGAGEMENT_TEST_BROKER says, and `openssl` for the TLS
certificates.
"""

from __future__ import annotations

import random
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.conftest import RAW, ROOT, Env, wait_for
from tests.integration.test_windows import BASE_MS, TOPIC_OF, by_key, make_events, truth
from tests.kafka.apache_kafka import (
    ApacheKafka,
    KafkaUnavailable,
    make_certificates,
    tools_present,
)

pytestmark = pytest.mark.integration

USER = "engagement"
# Distinctive, so any trace of it in a log is found.
PASSWORD = "Pw-7f3c9e-never-logged"
WRONG_PASSWORD = "Pw-wrong-2b81d0-never-logged"

CONFIG = """
[windows]
sizes_s = [60]
allowed_lateness_s = 900
grace_s = 0
idle_after_s = 3600

[dedup]
horizon_s = 1800
"""


@pytest.fixture(scope="module")
def kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApacheKafka]:
    if not tools_present():
        pytest.skip("needs `java` and `mvn` on PATH to run Apache Kafka with SASL")
    if not shutil.which("openssl"):
        pytest.skip("needs `openssl` on PATH for the broker's TLS certificate")
    broker = ApacheKafka(
        tmp_path_factory.mktemp("sasl-kafka"), sasl_users={USER: PASSWORD}, tls=True
    )
    try:
        broker.start()
    except KafkaUnavailable as exc:
        pytest.fail(f"Apache Kafka with SASL did not start: {exc}")
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def sasl_env(kafka: ApacheKafka, tmp_path: Path) -> Iterator[Env]:
    """Topics, producer and reader on the PLAINTEXT listener; workers get the SASL one."""
    env = Env(kafka.bootstrap, tmp_path)
    env.create_topics()
    try:
        yield env
    finally:
        env.close()


def sasl_vars(kafka: ApacheKafka, mechanism: str, password: str = PASSWORD) -> dict[str, str]:
    return {
        "ENGAGEMENT_BROKER": f"kafka://{kafka.sasl_bootstrap}",
        "ENGAGEMENT_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "ENGAGEMENT_SASL_MECHANISM": mechanism,
        "ENGAGEMENT_SASL_USERNAME": USER,
        "ENGAGEMENT_SASL_PASSWORD": password,
    }


def cli(
    args: list[str], env: dict[str, str], timeout_s: float = 90
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )


def tls_vars(kafka: ApacheKafka, mechanism: str, ca_file: Path | None = None) -> dict[str, str]:
    return {
        **sasl_vars(kafka, mechanism),
        "ENGAGEMENT_BROKER": f"kafka://{kafka.tls_bootstrap}",
        "ENGAGEMENT_SECURITY_PROTOCOL": "SASL_SSL",
        "ENGAGEMENT_SSL_CAFILE": str(ca_file or kafka.ca_file),
    }


@pytest.mark.parametrize(
    ("mechanism", "tls"),
    [("PLAIN", False), ("SCRAM-SHA-256", False), ("SCRAM-SHA-512", False), ("PLAIN", True),
     ("SCRAM-SHA-512", True)],
    ids=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "PLAIN-over-TLS", "SCRAM-SHA-512-over-TLS"],
)  # fmt: skip
def test_worker_logs_in_with_sasl_and_publishes_windows(
    kafka: ApacheKafka, sasl_env: Env, mechanism: str, tls: bool
) -> None:
    env = sasl_env
    events = make_events(random.Random(7), 60, ["acme", "globex"], span_ms=3 * 60_000)
    login = tls_vars(kafka, mechanism) if tls else sasl_vars(kafka, mechanism)
    worker = env.worker(CONFIG, **login).start()
    for ev in events:
        env.send(TOPIC_OF[ev["kind"]], ev)
    env.close_all(BASE_MS + 3600_000)
    expected = {key: w["counts"] for key, w in truth(events, [], (60,)).items()}

    def data(ws: list[dict[str, object]]) -> dict[object, object]:
        return {k: v for k, v in by_key(ws).items() if k[1] != "closer"}

    windows = env.wait_records(
        "engagement.windows",
        lambda ws: set(data(ws)) >= set(expected),
        timeout_s=90,
        worker=worker,
    )
    got = {key: ws[0]["counts"] for key, ws in by_key(windows).items() if key[1] != "closer"}
    assert got == expected
    worker.stop()
    log = worker.log_path.read_text(errors="replace")
    assert f"Authenticated as {USER} via {mechanism}" in log  # aiokafka's login line
    assert PASSWORD not in log


def test_password_stays_out_of_debug_logs(kafka: ApacheKafka, sasl_env: Env) -> None:
    """At debug level aiokafka logs every request, the SASL PLAIN token (which holds the
    password) included: the worker masks it."""
    worker = sasl_env.worker(CONFIG, **sasl_vars(kafka, "PLAIN"))
    with open(worker.log_path, "ab") as log:
        proc = subprocess.Popen(
            [sys.executable, "-m", "pipeline.cli", "worker", "--loglevel", "debug"],
            env=worker.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    try:
        worker.proc = proc  # so that wait_for prints its log, and close() stops it
        wait_for(lambda: worker.healthy(), 60, "worker /healthz", worker)
    finally:
        worker.stop()
    text = worker.log_path.read_text(errors="replace")
    assert "SaslAuthenticateRequest" in text  # the request that carries the password
    assert f"{USER}\\x00{USER}\\x00********" in text
    assert PASSWORD not in text


def test_generator_logs_in_with_sasl(kafka: ApacheKafka, sasl_env: Env) -> None:
    env = sasl_env
    worker = env.worker(**sasl_vars(kafka, "SCRAM-SHA-512"))  # for its environment only
    args = ["generate", "--rate", "20", "--backfill", "30", "--duration", "0", "--speed", "0"]
    done = cli(args, worker.env)
    assert done.returncode == 0, done.stderr
    assert PASSWORD not in done.stdout + done.stderr
    match = re.search(r"generated (\d+) messages", done.stdout)
    assert match and int(match[1]) > 0, done.stdout
    assert sum(len(env.read(f"social.{raw}")) for raw in RAW) == int(match[1])


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256"])
def test_wrong_password_stops_the_worker_with_a_one_line_error(
    kafka: ApacheKafka, sasl_env: Env, mechanism: str
) -> None:
    worker = sasl_env.worker(CONFIG, **sasl_vars(kafka, mechanism, WRONG_PASSWORD))
    started = time.monotonic()
    done = cli(["worker", "--loglevel", "info"], worker.env, timeout_s=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    assert time.monotonic() - started < 20, "a rejected login is not retried"
    # Log lines may come first (aiokafka warns that PLAIN sends the password in the
    # clear); the error itself is the last line, with no traceback.
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("engagement: the broker at "), output
    assert "rejected the login" in error and f"SASL {mechanism} as '{USER}'" in error
    assert "ENGAGEMENT_SASL_PASSWORD" in error
    assert "Traceback" not in output
    assert WRONG_PASSWORD not in output and PASSWORD not in output


def test_an_untrusted_broker_certificate_stops_the_worker_with_a_one_line_error(
    kafka: ApacheKafka, sasl_env: Env, tmp_path: Path
) -> None:
    """The broker's certificate checked against another CA: refused before any login."""
    other_ca, _ = make_certificates(tmp_path)
    worker = sasl_env.worker(CONFIG, **tls_vars(kafka, "PLAIN", ca_file=other_ca))
    done = cli(["worker", "--loglevel", "info"], worker.env, timeout_s=60)
    output = done.stdout + done.stderr
    assert done.returncode == 2, output
    error = done.stderr.strip().splitlines()[-1]
    assert error.startswith("engagement: "), output
    assert "certificate" in error, error
    assert "Traceback" not in output and PASSWORD not in output

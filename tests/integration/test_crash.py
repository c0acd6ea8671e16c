"""Crash safety: kill -9 while events flow, a broker restart, and a consumer-group
takeover. Every final window must equal the truth computed from the input, a
window published again must be identical, and every alert the truth calls for
must be there, with one alert_id per alert however often it is re-sent."""

from __future__ import annotations

import os
import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from pipeline.config.load import load
from pipeline.windows import thresholds
from tests.integration.conftest import (
    Env,
    Worker,
    needs_own_apache_kafka,
    wait_one_assignment,
)
from tests.integration.test_windows import BASE_MS, TOPIC_OF, make_events, truth, ts_ms
from tests.kafka.apache_kafka import ApacheKafka

pytestmark = pytest.mark.integration

BASE_CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 60
grace_s = 0
idle_after_s = 3600

[dedup]
horizon_s = 3600

[[alerts.thresholds]]
name = "busy"
metric = "volume"
op = "above"
value = {busy}
window_s = 60
severity = "warning"
cooldown_s = 120

[[alerts.thresholds]]
name = "quiet"
metric = "weighted_engagement"
op = "below"
value = {quiet}
window_s = 300
severity = "info"
cooldown_s = 0
"""

ACCOUNTS = [f"acct-{i}" for i in range(12)]


def config_for(expected: dict[tuple[str, str, int, str], dict[str, Any]]) -> str:
    """Thresholds at the medians of the true windows, so that any data set raises
    alerts on about half of its windows (fewer where the cooldown holds them)."""

    def median(values: list[float]) -> float:
        return sorted(values)[len(values) // 2]

    minute = [
        sum(w["counts"].values()) - w["counts"]["reply"] for k, w in expected.items() if k[2] == 60
    ]
    five = [w["weighted_engagement"] for k, w in expected.items() if k[2] == 300]
    return BASE_CONFIG.format(busy=median(minute), quiet=median(five))


def seed() -> int:
    """A new seed per run (printed, and settable to reproduce a failure)."""
    value = int(os.environ.get("ENGAGEMENT_TEST_SEED", random.randrange(1 << 30)))
    print(f"ENGAGEMENT_TEST_SEED={value}")
    return value


def live_order(
    rng: random.Random, events: list[dict[str, Any]], dup_rate: float
) -> list[tuple[dict[str, Any], bool]]:
    """Events roughly as a live stream sends them: in event-time order with local
    disorder (blocks of 1,000, about 12 s of event time, shuffled), some redelivered
    (half of those on another partition), a quarter unkeyed. -> (event, unkeyed)"""
    ordered = sorted(events, key=ts_ms)
    out: list[tuple[dict[str, Any], bool]] = []
    for i in range(0, len(ordered), 1000):
        block = [(ev, rng.random() < 0.25) for ev in ordered[i : i + 1000]]
        block += [(ev, rng.random() < 0.5) for ev, _ in block if rng.random() < dup_rate]
        rng.shuffle(block)
        out += block
    return out


class Feeder(threading.Thread):
    """Produces the stream at a steady pace in the background."""

    def __init__(
        self,
        env: Env,
        sends: list[tuple[dict[str, Any], bool]],
        rng: random.Random,
        per_s: float,
    ) -> None:
        super().__init__(daemon=True)
        self.env, self.sends, self.per_s = env, sends, per_s
        self.partition = [rng.randrange(env.raw_partitions) for _ in sends]
        self.sent = 0
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            start = time.monotonic()
            futures: list[Any] = []
            for i, (ev, unkeyed) in enumerate(self.sends):
                topic = self.env.topic(f"social.{TOPIC_OF[ev['kind']]}")
                value = orjson.dumps(ev)
                if unkeyed:
                    fut = self.env.producer.send(topic, value=value, partition=self.partition[i])
                else:
                    fut = self.env.producer.send(topic, value=value, key=ev["account_id"].encode())
                futures.append(fut)
                self.sent = i + 1
                if i % 500 == 499:
                    ahead = start + (i + 1) / self.per_s - time.monotonic()
                    if ahead > 0:
                        time.sleep(ahead)
            self.env.producer.flush(timeout=120)
            # The truth counts every event: one the broker never acknowledged would
            # look like an event the pipeline lost.
            failed = [f for f in futures if not f.succeeded()]
            if failed:
                raise AssertionError(
                    f"{len(failed)} of {len(futures)} sends not acknowledged: "
                    f"{failed[0].exception!r}"
                )
        except BaseException as exc:  # reported by finish()
            self.error = exc

    def finish(self, timeout_s: float = 300) -> None:
        self.join(timeout_s)
        assert not self.is_alive(), "the producer did not finish"
        if self.error:
            raise self.error


def expected_alerts(
    expected: dict[tuple[str, str, int, str], dict[str, Any]], config: str, tmp: Path
) -> dict[str, tuple[str, str, str, str]]:
    """alert_id -> (rule type, account, channel, window_start) for the true windows,
    evaluated in window order per series as the worker does."""
    cfg = tmp / "rules.toml"
    cfg.write_text(config, encoding="utf-8")
    rules = load(cfg, env={}).thresholds
    cooldowns: dict[str, int] = {}
    out = {}
    for (account, channel, size, start), w in sorted(expected.items(), key=lambda kv: kv[0][3]):
        start_ms = ts_ms({"ts": start})
        window = {
            **w,
            "account_id": account,
            "channel": channel,
            "size_seconds": size,
            "window_start": start,
            "window_end": "",
        }
        for a in thresholds.evaluate(window, start_ms, start_ms + size * 1000, rules, cooldowns):
            out[a["alert_id"]] = (a["type"], account, channel, start)
    return out


def check_exact(
    env: Env,
    expected: dict[tuple[str, str, int, str], dict[str, Any]],
    worker: Worker,
    config: str,
    timeout_s: float,
) -> None:
    """Wait for every true window, then compare windows and alerts field by field."""

    def data(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [r for r in records if r["channel"] != "closer"]

    def keys(records: list[dict[str, Any]]) -> set[tuple[str, str, int, str]]:
        return {
            (w["account_id"], w["channel"], w["size_seconds"], w["window_start"]) for w in records
        }

    windows = data(
        env.wait_records(
            "engagement.windows",
            lambda ws: keys(data(ws)) >= set(expected),
            timeout_s=timeout_s,
            worker=worker,
        )
    )
    copies: dict[tuple[str, str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for w in windows:
        copies[(w["account_id"], w["channel"], w["size_seconds"], w["window_start"])].append(w)
    assert set(copies) == set(expected), "unexpected windows"
    wrong = [
        (key, {k: (n, got[k]) for k, n in exp["counts"].items() if got[k] != n}, late)
        for key, exp in sorted(expected.items())
        for got, late in [(copies[key][0]["counts"], copies[key][0]["late_events"])]
        if got != exp["counts"] or late
    ]
    if wrong:  # all of them, and what the dead letters say, to tell a loss from lateness
        dead = Counter(d["reason"] for d in env.read("engagement.deadletter"))
        pytest.fail(
            f"{len(wrong)} windows differ from the truth (key, kind: (true, got), late): "
            f"{wrong[:8]}; dead letters by reason: {dict(dead)}"
        )
    republished = 0
    for key, exp in expected.items():
        first = copies[key][0]
        assert all(c == first for c in copies[key]), f"{key} republished with other contents"
        republished += len(copies[key]) - 1
        assert first["counts"] == exp["counts"], key
        assert first["unique_actors"] == exp["unique_actors"], key
        assert first["weighted_engagement"] == exp["weighted_engagement"], key
        assert first["late_events"] == 0, key
    print(f"{len(expected)} windows exact, {republished} republished copies")

    want = expected_alerts(expected, config, env.tmp)
    assert want, "the rules should raise some alerts on this data"
    got: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for a in data(env.read("engagement.alerts")):
        got[a["alert_id"]].append(a)
    assert set(got) == set(want), (
        f"missing alerts {sorted(set(want) - set(got))[:5]}, "
        f"unexpected {sorted(set(got) - set(want))[:5]}"
    )
    for alert_id, sent in got.items():
        kinds = {(a["type"], a["account_id"], a["channel"], a["window_start"]) for a in sent}
        assert kinds == {want[alert_id]}, f"alert {alert_id} names another window"
        bodies = {orjson.dumps({k: v for k, v in a.items() if k != "emitted_at"}) for a in sent}
        assert len(bodies) == 1, f"alert {alert_id} re-sent with other contents"
    print(f"{len(want)} alerts, {sum(map(len, got.values())) - len(want)} re-sent copies")
    assert env.read("engagement.deadletter") == []


def test_kill_9_three_times_while_100k_events_flow(env: Env) -> None:
    rng = random.Random(seed())
    events = make_events(rng, 100_000, ACCOUNTS, span_ms=20 * 60_000)
    sends = live_order(rng, events, dup_rate=0.05)
    expected = truth(events, [], (60, 300))
    config = config_for(expected)
    app_id = f"{env.prefix}crash"
    worker = env.worker(config, app_id=app_id).start()
    feeder = Feeder(env, sends, rng, per_s=5000)
    feeder.start()
    kills = []
    while len(kills) < 3 or feeder.is_alive():
        time.sleep(rng.uniform(2.0, 8.0))
        if len(kills) >= 3:
            break
        worker.kill()
        kills.append(feeder.sent)
        worker = env.worker(config, app_id=app_id).start()
    feeder.finish()
    print(f"killed with {kills} of {len(sends)} messages produced")
    assert len(kills) == 3 and kills[0] < len(sends), "the kills must land while events flow"
    env.close_all(BASE_MS + 3 * 3600_000)
    check_exact(env, expected, worker, config, timeout_s=240)


def test_two_workers_one_killed_survivor_takes_over(env: Env) -> None:
    rng = random.Random(seed())
    events = make_events(rng, 30_000, ACCOUNTS, span_ms=15 * 60_000)
    sends = live_order(rng, events, dup_rate=0.05)
    expected = truth(events, [], (60, 300))
    config = config_for(expected)
    app_id = f"{env.prefix}group"
    survivor = env.worker(config, app_id=app_id).start()
    doomed = env.worker(config, app_id=app_id).start()
    wait_one_assignment(survivor, doomed)  # both own partitions before the stream starts
    feeder = Feeder(env, sends, rng, per_s=3000)
    feeder.start()
    time.sleep(rng.uniform(3.0, 6.0))
    doomed.kill()
    feeder.finish()
    env.close_all(BASE_MS + 3 * 3600_000)
    check_exact(env, expected, survivor, config, timeout_s=240)


@pytest.fixture
def own_kafka(tmp_path: Path) -> Iterator[ApacheKafka]:
    kafka = ApacheKafka(tmp_path / "kafka").start()
    try:
        yield kafka
    finally:
        kafka.stop()


@needs_own_apache_kafka
def test_worker_reconnects_after_apache_kafka_restarts(
    own_kafka: ApacheKafka, tmp_path: Path
) -> None:
    env = Env(own_kafka.bootstrap, tmp_path)
    try:
        env.create_topics()
        rng = random.Random(seed())
        events = make_events(rng, 20_000, ACCOUNTS, span_ms=10 * 60_000)
        sends = live_order(rng, events, dup_rate=0.05)
        expected = truth(events, [], (60, 300))
        config = config_for(expected)
        half = len(sends) // 2
        worker = env.worker(config).start()
        first = Feeder(env, sends[:half], rng, per_s=4000)
        first.start()
        first.finish()
        time.sleep(rng.uniform(0.5, 3.0))
        own_kafka.stop()
        time.sleep(5)
        own_kafka.start()
        second = Feeder(env, sends[half:], rng, per_s=4000)
        second.start()
        second.finish()
        env.close_all(BASE_MS + 3 * 3600_000)
        check_exact(env, expected, worker, config, timeout_s=240)
        assert worker.proc is not None and worker.proc.poll() is None, "the worker exited"
    finally:
        env.close()

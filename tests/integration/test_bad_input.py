"""Malformed, late and too-late input through a real worker: dead letters, metrics, and
valid traffic still counted exactly."""

from __future__ import annotations

import base64
import hashlib
import time
from collections import Counter
from typing import Any

import orjson
import pytest

from pipeline.sim.samples import MALFORMED, MALFORMED_EXPOSURE
from tests.integration.conftest import Env, wait_for
from tests.integration.test_windows import BASE_MS, iso

pytestmark = pytest.mark.integration

CONFIG = """
[windows]
sizes_s = [60]
allowed_lateness_s = 0
grace_s = 0
idle_after_s = 3600
"""


def like(i: int, ts: int, account: str = "acme", **extra: Any) -> dict[str, Any]:
    return {
        "event_id": f"like-{i}",
        "kind": "like",
        "channel": "x",
        "account_id": account,
        "ts": ts,
        "post_id": "p1",
        "actor_id": f"a{i}",
        "text": "PRIVATE-SENTINEL",
        **extra,
    }


def test_every_malformed_message_is_dead_lettered_once(env: Env) -> None:
    assert len(MALFORMED) + len(MALFORMED_EXPOSURE) >= 20
    worker = env.worker(CONFIG).start()
    sent: dict[tuple[str, int, int], tuple[str, bytes]] = {}
    valid = 0
    for i, (_, reason, raw) in enumerate(MALFORMED):
        topic = ["likes", "comments", "mentions", "dms", "replies", "shares"][i % 6]
        p, o = env.send(topic, raw, key=b"acme")
        sent[(env.topic(f"social.{topic}"), p, o)] = (reason, raw)
        env.send("likes", like(i, BASE_MS + i * 100))  # valid traffic keeps flowing
        valid += 1
    for _, reason, raw in MALFORMED_EXPOSURE:
        p, o = env.send("exposure", raw, key=b"acme")
        sent[(env.topic("social.exposure"), p, o)] = (reason, raw)
    env.close_all(BASE_MS + 3_600_000)  # closes the valid windows

    dead = env.wait_records(
        "engagement.deadletter", lambda rs: len(rs) >= len(sent), timeout_s=60, worker=worker
    )
    got = {(d["topic"], d["partition"], d["offset"]): d for d in dead}
    assert len(dead) == len(sent), "a message was dead-lettered twice"
    assert set(got) == set(sent)
    for where, (reason, raw) in sent.items():
        assert got[where]["reason"] == reason, where
        d = got[where]
        # the original is identified exactly, and kept unless it held text
        assert (d["value_sha256"], d["value_size"]) == (hashlib.sha256(raw).hexdigest(), len(raw))
        embedded = base64.b64decode(d["value_b64"] or "")
        if d["redacted"]:
            assert d["redacted"] == ["text"] and "text" not in orjson.loads(embedded)
        elif d["value_truncated"]:
            assert raw.startswith(embedded)
        else:
            assert embedded == raw
        assert "PRIVATE-SENTINEL" not in d["detail"]
    assert any(d["redacted"] for d in dead), "the corpus holds parseable messages with text"
    by_reason = Counter(reason for reason, _ in sent.values())
    wait_for(
        lambda: worker.metric("engagement_invalid_events_total", reason=next(iter(by_reason))) > 0,
        10,
        "metrics",
        worker,
    )
    for reason, n in by_reason.items():
        assert worker.metric("engagement_invalid_events_total", reason=reason) == n, reason

    windows = env.wait_records("engagement.windows", lambda ws: len(ws) >= 1, worker=worker)
    assert sum(w["counts"]["like"] for w in windows) == valid
    assert worker.healthy()
    assert "PRIVATE-SENTINEL" not in worker.log()


def test_late_events_are_counted_and_too_late_ones_dead_lettered(env: Env) -> None:
    worker = env.worker(CONFIG).start()
    w0 = BASE_MS  # window [w0, w0+60s)
    env.send("likes", like(1, w0 + 50_000))
    env.send("likes", like(2, w0 + 70_000))  # watermark -> w0+70s: window 0 final
    windows = env.wait_records("engagement.windows", lambda ws: len(ws) == 1, worker=worker)
    assert windows[0]["window_start"] == iso(w0)
    assert windows[0]["counts"]["like"] == 1
    env.send("likes", like(3, w0 + 65_000))  # behind the watermark, window 1 still open
    env.send("likes", like(4, w0 + 10_000))  # window 0 already final: too late
    env.send("likes", like(5, w0 + 200_000))  # closes window 1
    windows = env.wait_records("engagement.windows", lambda ws: len(ws) >= 2, worker=worker)
    w1 = next(w for w in windows if w["window_start"] == iso(w0 + 60_000))
    assert w1["counts"]["like"] == 2
    assert w1["late_events"] == 1
    dead = env.wait_records("engagement.deadletter", lambda rs: len(rs) == 1, worker=worker)
    assert dead[0]["reason"] == "too_late"
    assert base64.b64decode(dead[0]["value_b64"]).find(b"like-4") >= 0
    assert b"PRIVATE-SENTINEL" not in base64.b64decode(dead[0]["value_b64"])
    wait_for(
        lambda: worker.metric("engagement_late_events_total", disposition="dropped") == 1,
        10,
        "late metric",
        worker,
    )
    assert worker.metric("engagement_late_events_total", disposition="counted") == 1
    # the window that was already published is never published again
    assert sum(1 for w in windows if w["window_start"] == iso(w0)) == 1


def test_idle_advance_closes_quiet_windows_without_jumping_to_now(env: Env) -> None:
    """Year-old data: idle advance moves by wall time since the last event, not to now."""
    env.fresh_topics(raw_partitions=1, partitions=1)
    worker = env.worker(
        CONFIG.replace("idle_after_s = 3600", "idle_after_s = 1"), ENGAGEMENT_PARTITIONS="1"
    ).start()
    old = BASE_MS - 365 * 86_400_000
    env.send("likes", like(1, old + 5_000), partition=0)
    # 55 s of event time remain in that window: a few seconds of quiet must not close it.
    wait_for(
        lambda: worker.metric("engagement_events_total", kind="like", channel="x") == 1,
        30,
        "event counted",
        worker,
    )
    wait_for(
        lambda: worker.metric("engagement_watermark_lag_seconds", partition="0") > 0,
        10,
        "watermark gauge",
        worker,
    )
    lag_before = worker.metric("engagement_watermark_lag_seconds", partition="0")
    wait_for(lambda: worker.metric("engagement_open_windows") == 1, 10, "open window", worker)
    time.sleep(3)  # the thing under test is what quiet wall time does
    assert env.read("engagement.windows") == []
    lag_after = worker.metric("engagement_watermark_lag_seconds", partition="0")
    assert abs(lag_after - lag_before) < 5, "idle advance must follow wall time, not jump"
    env.send("likes", like(2, old + 57_000), partition=0)  # 3 s before the window ends
    windows = env.wait_records(
        "engagement.windows", lambda ws: len(ws) == 1, timeout_s=20, worker=worker
    )
    assert windows[0]["counts"]["like"] == 2

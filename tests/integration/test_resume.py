"""A worker that starts on a backlog reads all of it, however long the broker takes
to answer the seek to the committed offsets (agents/faust_fixes.py)."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.conftest import Env, wait_for
from tests.integration.test_windows import BASE_MS

pytestmark = pytest.mark.integration

CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 3600
grace_s = 0
idle_after_s = 3600

[dedup]
horizon_s = 7200
"""
FAULTS = Path(__file__).with_name("faults")
ACCOUNTS = [f"acct-{i}" for i in range(8)]
BACKLOG = 20_000


def like(i: int) -> dict[str, object]:
    return {
        "event_id": f"like-{i}",
        "kind": "like",
        "channel": "instagram",
        "account_id": ACCOUNTS[i % len(ACCOUNTS)],
        "post_id": "post-1",
        "ts": BASE_MS + (i % 600) * 1000,
    }


def test_a_backlog_is_read_whole_when_the_seek_to_committed_offsets_is_slow(env: Env) -> None:
    group = f"{env.prefix}app"
    first = env.worker(CONFIG).start()
    for p in range(env.raw_partitions):  # offsets committed on every input partition
        env.send("likes", like(p), partition=p)
    wait_for(
        lambda: env.committed(group, "social.likes") >= env.raw_partitions,
        60,
        "the first events' offsets committed",
        first,
    )
    first.stop()
    topic = env.topic("social.likes")
    for i in range(env.raw_partitions, env.raw_partitions + BACKLOG):
        event = like(i)
        env.producer.send(topic, value=orjson.dumps(event), key=str(event["account_id"]).encode())
    env.producer.flush(timeout=60)
    total = env.raw_partitions + BACKLOG
    expected = {
        a: sum(1 for i in range(total) if i % len(ACCOUNTS) == k) for k, a in enumerate(ACCOUNTS)
    }

    second = env.worker(CONFIG, PYTHONPATH=str(FAULTS), ENGAGEMENT_TEST_SEEK_DELAY_S="3").start()
    env.close_all(BASE_MS + 3 * 3600_000)

    def counted(windows: list[dict[str, Any]]) -> dict[str, int]:
        out: dict[str, int] = {}
        for w in windows:
            if w["size_seconds"] == 60 and w["account_id"] in expected:
                out[w["account_id"]] = out.get(w["account_id"], 0) + w["counts"]["like"]
        return out

    got: dict[str, int] = {}
    deadline = time.monotonic() + 120
    while got != expected and time.monotonic() < deadline:
        time.sleep(1)
        got = counted(env.read("engagement.windows"))
    assert got == expected, (
        f"likes per account (got, true): {[(got.get(a), n) for a, n in expected.items()]}\n"
        f"{second.log()}"
    )
    # and the input's offsets are committed to its end (the closers included): no
    # record is left behind as unacknowledged
    wait_for(
        lambda: env.committed(group, "social.likes") == total + env.raw_partitions,
        60,
        "every input offset committed",
        second,
    )
    assert second.metric("engagement_internal_messages_skipped_total") == 0

"""Exact event-time windows through a real worker and broker."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest

from pipeline.sim.generator import TOPIC_SUFFIX
from tests.integration.conftest import Env, wait_for

pytestmark = pytest.mark.integration

WEIGHTS = {"like": 1.0, "comment": 2.0, "share": 3.0, "mention": 2.0, "dm": 1.0, "reply": 0.0}
TOPIC_OF = TOPIC_SUFFIX  # kind -> input topic suffix
# An hour on 2026-01-05, i.e. replayed history, far from the wall clock.
BASE_MS = int(datetime(2026, 1, 5, 10, 0, tzinfo=UTC).timestamp() * 1000)


def iso(ms: int) -> str:
    return (
        datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        + f"{ms % 1000:03d}Z"
    )


def make_events(
    rng: random.Random, n: int, accounts: list[str], span_ms: int
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    for i in range(n):
        kind = rng.choice(["like", "like", "like", "comment", "share", "mention", "dm", "reply"])
        ev: dict[str, Any] = {
            "event_id": f"ev-{i}",
            "kind": kind,
            "channel": rng.choice(["instagram", "x"]),
            "account_id": rng.choice(accounts),
            "ts": BASE_MS + rng.randrange(span_ms),
            "actor_id": f"actor-{rng.randrange(40)}",
            "text": "PRIVATE-SENTINEL do not leak",
        }
        if kind in ("like", "comment", "share"):
            ev["post_id"] = f"post-{rng.randrange(5)}"
        if kind == "reply":
            ev["in_reply_to"] = f"ev-{rng.randrange(max(i, 1))}"
            del ev["actor_id"]
        if rng.random() < 0.3:
            ev["ts"] = iso(ev["ts"])
        events.append(ev)
    return events


def ts_ms(ev: dict[str, Any]) -> int:
    ts = ev["ts"]
    if isinstance(ts, int):
        return ts
    return int(datetime.fromisoformat(ts).timestamp() * 1000)


def truth(
    events: list[dict[str, Any]], exposures: list[dict[str, Any]], sizes_s: tuple[int, ...]
) -> dict[tuple[str, str, int, str], dict[str, Any]]:
    """The expected final windows, computed the simple way."""
    out: dict[tuple[str, str, int, str], dict[str, Any]] = {}
    acc: dict[tuple[str, str, int, int], dict[str, Any]] = defaultdict(
        lambda: {"counts": defaultdict(int), "actors": set(), "impressions": None}
    )
    for ev in events:
        for size in sizes_s:
            start = ts_ms(ev) // (size * 1000) * size * 1000
            w = acc[(ev["account_id"], ev["channel"], size, start)]
            w["counts"][ev["kind"]] += 1
            if "actor_id" in ev:
                w["actors"].add(ev["actor_id"])
    for x in exposures:
        for size in sizes_s:
            start = x["ts"] // (size * 1000) * size * 1000
            w = acc[(x["account_id"], x["channel"], size, start)]
            if "impressions" in x:
                w["impressions"] = (w["impressions"] or 0) + x["impressions"]
    for (account, channel, size, start), w in acc.items():
        counts = {k: w["counts"].get(k, 0) for k in WEIGHTS}
        weighted = sum(WEIGHTS[k] * n for k, n in counts.items())
        followers = None
        for x in sorted(exposures, key=lambda x: x["ts"]):
            if (
                (x["account_id"], x["channel"]) == (account, channel)
                and "followers" in x
                and x["ts"] < start + size * 1000
            ):
                followers = x["followers"]
        out[(account, channel, size, iso(start))] = {
            "counts": counts,
            "unique_actors": len(w["actors"]),
            "weighted_engagement": weighted,
            "followers": followers,
            "impressions": w["impressions"],
            "rate_by_followers": weighted / followers if followers else None,
            "rate_by_impressions": weighted / w["impressions"] if w["impressions"] else None,
        }
    return out


def close_all(env: Env, accounts: list[str], at_ms: int) -> None:
    """Move every input partition far past the data, so every window of it is final.
    (The watermark is the minimum over input partitions, so each one must move.)"""
    env.close_all(at_ms)


def by_key(windows: list[dict[str, Any]]) -> dict[tuple[str, str, int, str], list[dict[str, Any]]]:
    out: dict[tuple[str, str, int, str], list[dict[str, Any]]] = defaultdict(list)
    for w in windows:
        out[(w["account_id"], w["channel"], w["size_seconds"], w["window_start"])].append(w)
    return out


def published(
    env: Env, expected: dict[Any, Any], worker: Any, timeout_s: float = 90
) -> dict[tuple[str, str, int, str], list[dict[str, Any]]]:
    """Wait until every expected window is published; return the data windows by key."""

    def data(ws: list[dict[str, Any]]) -> dict[tuple[str, str, int, str], list[dict[str, Any]]]:
        return by_key([w for w in ws if w["channel"] != "closer"])

    windows = env.wait_records(
        "engagement.windows",
        lambda ws: set(data(ws)) >= set(expected),
        timeout_s=timeout_s,
        worker=worker,
    )
    return data(windows)


FIELDS = (
    "counts",
    "unique_actors",
    "weighted_engagement",
    "followers",
    "impressions",
    "rate_by_followers",
    "rate_by_impressions",
)

CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 900
grace_s = 0
idle_after_s = 3600

[dedup]
horizon_s = 1800
"""


@pytest.mark.parametrize("raw_partitions", [4, 3], ids=["same-partitions", "raw-3-internal-4"])
def test_windows_exact_after_duplicates_reordering_and_unkeyed_producers(
    env: Env, raw_partitions: int
) -> None:
    if raw_partitions != env.partitions:
        env.fresh_topics(raw_partitions)
    rng = random.Random(42)
    accounts = ["acme", "globex", "initech", "umbrella", "hooli"]
    events = make_events(rng, 1500, accounts, span_ms=12 * 60_000)
    exposures = [
        {
            "account_id": a,
            "channel": c,
            "ts": BASE_MS + m * 60_000 + 500,
            "followers": 10_000 + 100 * m,
            "impressions": 1000 + m,
        }
        for a in accounts
        for c in ("instagram", "x")
        for m in range(0, 12, 3)
    ]
    worker = env.worker(CONFIG).start()
    # Out of order within 10 minutes, 10% redelivered, a third without a key.
    sends: list[tuple[str, dict[str, Any], bool]] = []
    for ev in events:
        sends.append((TOPIC_OF[ev["kind"]], ev, rng.random() < 0.33))
        if rng.random() < 0.10:
            sends.append((TOPIC_OF[ev["kind"]], ev, True))
    sends += [("exposure", x, False) for x in exposures]
    sends += [("exposure", x, True) for x in exposures[::5]]  # redelivered snapshots
    rng.shuffle(sends)
    for topic, value, unkeyed in sends:
        if unkeyed:
            env.send(topic, value, partition=rng.randrange(raw_partitions))
        else:
            env.send(topic, value)
    close_all(env, accounts, BASE_MS + 3 * 3600_000)
    expected = truth(events, exposures, (60, 300))

    got = published(env, expected, worker, timeout_s=90)
    assert set(got) == set(expected), "unexpected or missing windows"
    for key, exp in expected.items():
        assert len(got[key]) == 1, f"window {key} emitted {len(got[key])} times"
        actual = {f: got[key][0][f] for f in FIELDS}
        assert actual == exp, key
    duplicates = len(sends) - len(events) - len(exposures)
    assert worker.metric("engagement_duplicate_events_total") == duplicates
    total = sum(
        worker.metric("engagement_events_total", kind=k, channel=c)
        for k in WEIGHTS
        for c in ("instagram", "x")
    )
    assert total == len(events)
    # message text never reaches an output
    assert "PRIVATE-SENTINEL" not in str(got)
    assert "PRIVATE-SENTINEL" not in worker.log()


CRASH_CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 5
grace_s = 0
idle_after_s = 2

[dedup]
horizon_s = 1800
"""


def test_state_survives_a_worker_crash(env: Env) -> None:
    """kill -9 after windows were published: window state, dedup state and the
    published-window bookkeeping come back from the changelog; a window published
    again carries identical contents; nothing is counted twice or lost."""
    rng = random.Random(7)
    accounts = ["acme", "globex", "initech"]
    events = sorted(make_events(rng, 600, accounts, span_ms=6 * 60_000), key=ts_ms)
    first, second = events[:300], events[300:]
    app_id = f"{env.prefix}crash"
    worker = env.worker(CRASH_CONFIG, app_id=app_id).start()
    for ev in first:
        env.send(TOPIC_OF[ev["kind"]], ev)
    env.wait_records("engagement.windows", lambda ws: len(ws) >= 1, worker=worker)
    # Kill once the input offsets are committed, so every later duplicate is a
    # redelivery that only the restored dedup state can recognise.
    wait_for(lambda: env.committed(app_id, "social.") == len(first), 30, "commit", worker)
    worker.kill()
    worker = env.worker(CRASH_CONFIG, app_id=app_id).start()
    for ev in first[:100] + second:  # redeliver a third of the first half
        env.send(TOPIC_OF[ev["kind"]], ev)
    close_all(env, accounts, BASE_MS + 3 * 3600_000)
    expected = truth(events, [], (60, 300))
    got = published(env, expected, worker, timeout_s=90)
    assert set(got) == set(expected)
    for key, exp in expected.items():
        assert all(copy == got[key][0] for copy in got[key]), f"{key} republished differently"
        assert got[key][0]["counts"] == exp["counts"], key
        assert got[key][0]["unique_actors"] == exp["unique_actors"], key
    # the redelivered events were recognised as duplicates, not dropped as too late
    assert env.read("engagement.deadletter") == []
    assert worker.metric("engagement_duplicate_events_total") >= 100


def test_catching_up_on_a_backlog_loses_nothing(env: Env) -> None:
    """Start the worker on a backlog spread over input partitions read at different
    speeds: no event may become too late because another partition was read first."""
    accounts = [f"acct-{i}" for i in range(12)]
    events: list[dict[str, Any]] = []
    for i in range(12_000):  # 30 minutes of event time, in order within each account
        account = accounts[i % len(accounts)]
        events.append(
            {
                "event_id": f"b-{i}",
                "kind": "like",
                "channel": "x",
                "account_id": account,
                "ts": BASE_MS + i * 150,
                "post_id": "p",
                "actor_id": f"a{i % 97}",
            }
        )
    futures = [
        env.producer.send(
            env.topic("social.likes"), value=orjson.dumps(ev), key=ev["account_id"].encode()
        )
        for ev in events
    ]
    env.producer.flush()
    for fut in futures:  # every event reached the broker
        fut.get(timeout=30)
    close_all(env, accounts, BASE_MS + 3 * 3600_000)
    worker = env.worker(
        CONFIG.replace("allowed_lateness_s = 900", "allowed_lateness_s = 5").replace(
            "[dedup]\nhorizon_s = 1800", ""
        )
    ).start()
    expected = truth(events, [], (60, 300))
    got = published(env, expected, worker, timeout_s=120)
    assert env.read("engagement.deadletter") == []
    for key, exp in expected.items():
        assert len(got[key]) == 1 and got[key][0]["counts"] == exp["counts"], key

"""`engagement replay FILE.jsonl` against a real broker: routing, keys, bytes, pacing."""

from __future__ import annotations

import json
import os
import random
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka import KafkaConsumer
from kafka.structs import TopicPartition

from pipeline.cli import broker
from pipeline.sim.generator import TOPIC_SUFFIX
from tests.integration.conftest import RAW, Env

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline.cli"]
T0 = 1_772_366_400_000  # 2026-03-01T12:00:00Z
TOPIC_OF = TOPIC_SUFFIX  # kind -> input topic suffix


def run_replay(env: Env, *args: str) -> subprocess.CompletedProcess[str]:
    full_env = {
        **os.environ,
        "ENGAGEMENT_BROKER": f"kafka://{env.bootstrap}",
        "ENGAGEMENT_TOPIC_PREFIX": env.prefix,
        "ENGAGEMENT_CONFIG": "",
    }
    return subprocess.run(
        [*CLI, "replay", *args],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )


def read_raw(env: Env) -> list[tuple[str, bytes | None, bytes, int]]:
    """Every record on this test's input topics: (topic suffix, key, value, timestamp)."""
    consumer = KafkaConsumer(
        bootstrap_servers=env.bootstrap,
        enable_auto_commit=False,
        consumer_timeout_ms=2000,
        auto_offset_reset="earliest",
    )
    try:
        tps = [
            TopicPartition(env.topic(f"social.{r}"), p)
            for r in RAW
            for p in consumer.partitions_for_topic(env.topic(f"social.{r}")) or ()
        ]
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        return [
            (m.topic.removeprefix(env.prefix + "social."), m.key, m.value, m.timestamp)
            for m in consumer
        ]
    finally:
        consumer.close()


def jsonl_line(obj: dict[str, Any], rng: random.Random) -> bytes:
    """Formatting a re-serializer would change: spaces, key order, 0.50."""
    items = list(obj.items())
    rng.shuffle(items)
    body = ", ".join(
        f"{json.dumps(k)} : {json.dumps(v, ensure_ascii=rng.random() < 0.5)}" for k, v in items
    )
    if "sentiment" in obj:
        body += ', "sentiment2": 0.50'
    return ("{ " + body + " }").encode()


def test_replay_routes_every_valid_line_once_and_reports_invalid_ones(
    env: Env, tmp_path: Path
) -> None:
    rng = random.Random(11)
    marker = f"MARKER-{uuid.uuid4().hex}"
    accounts = ["acme", "globex", "café-☕", "initech"]
    lines: list[bytes] = []
    expected: Counter[tuple[str, bytes, bytes]] = Counter()
    invalid_lines: list[int] = []
    for i in range(300):
        account = rng.choice(accounts)
        ts: Any = T0 + i * 250
        if rng.random() < 0.5:
            ts = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts / 1000)) + f".{ts % 1000:03d}Z"
        if i % 10 == 9:
            obj: dict[str, Any] = {"account_id": account, "channel": "x", "ts": ts}
            obj[rng.choice(["followers", "impressions", "reach"])] = rng.randrange(10_000)
            topic = "exposure"
        else:
            kind = rng.choice(list(TOPIC_OF))
            obj = {
                "event_id": f"ev-{i}",
                "kind": kind,
                "channel": rng.choice(["instagram", "x", "tiktok"]),
                "account_id": account,
                "ts": ts,
                "actor_id": f"u{rng.randrange(50)}",
                "sentiment": round(rng.uniform(-1, 1), 2),
            }
            if kind in ("like", "comment", "share"):
                obj["post_id"] = f"p{rng.randrange(5)}"
            if kind == "reply":
                obj["in_reply_to"] = f"ev-{rng.randrange(max(i, 1))}"
            if i == 150:
                obj["kind"] = "comment"
                obj["post_id"] = "p1"
                obj["text"] = f"hello {marker} ünïcödé \U0001f600"
            topic = TOPIC_OF[obj["kind"]]
        raw = jsonl_line(obj, rng)
        lines.append(raw)
        expected[(topic, account.encode(), raw)] += 1
        if i % 50 == 25:
            lines.append(b"")  # blank lines: skipped silently
        if i % 60 == 30:
            bad = [
                b'{"kind": "comment", "text": "' + marker.encode() + b'"',  # not JSON
                b'["' + marker.encode() + b'"]',  # not an object
                orjson.dumps({"event_id": "x", "kind": "like", "text": marker}),  # missing
                orjson.dumps(
                    {
                        "event_id": "y",
                        "kind": "follow",
                        "channel": "x",
                        "account_id": "acme",
                        "ts": T0,
                        "text": marker,
                    }
                ),  # unknown kind
                b"   " + marker.encode(),  # not JSON
            ][len(invalid_lines)]
            lines.append(bad)
            invalid_lines.append(len(lines))
    assert len(invalid_lines) == 5
    f = tmp_path / "history.jsonl"
    f.write_bytes(b"\n".join(lines) + b"\n")

    out = run_replay(env, str(f))

    assert out.returncode == 1, out.stderr
    assert marker not in out.stdout and marker not in out.stderr
    assert "Traceback" not in out.stderr
    reported = [ln for ln in out.stderr.splitlines() if ln.startswith("replay: line ")]
    assert [int(ln.split()[2].rstrip(":")) for ln in reported] == invalid_lines
    reasons = [ln.split()[3] for ln in reported]
    assert reasons == ["not_json", "not_object", "missing_field", "unknown_kind", "not_json"]
    n_valid = sum(expected.values())
    assert f"replayed {n_valid} events (5 skipped as invalid) in " in out.stderr

    got = Counter((t, k, v) for t, k, v, _ in read_raw(env))
    assert got == expected  # right topic, right key, bytes unchanged, exactly once


def test_replay_speed_paces_by_event_time(env: Env, tmp_path: Path) -> None:
    """Events spanning 4 event seconds at --speed 2 take at least 2 wall seconds."""
    lines = [
        orjson.dumps(
            {
                "event_id": f"s-{i}",
                "kind": "like",
                "channel": "x",
                "account_id": "acme",
                "post_id": "p",
                "ts": T0 + i * 500,
            }
        )
        for i in range(9)
    ]
    f = tmp_path / "paced.jsonl"
    f.write_bytes(b"\n".join(lines))
    start = time.monotonic()
    out = run_replay(env, str(f), "--speed", "2")
    wall = time.monotonic() - start
    assert out.returncode == 0, out.stderr
    assert wall >= 1.8  # lower bounds only, with room for millisecond rounding
    records = read_raw(env)
    assert len(records) == 9
    stamps = sorted(ts for *_, ts in records)
    assert stamps[-1] - stamps[0] >= 1800  # producer timestamps: sent over ~2 s


def test_replay_without_a_broker_is_a_one_line_error(tmp_path: Path) -> None:
    f = tmp_path / "one.jsonl"
    f.write_text('{"account_id": "a", "channel": "x", "ts": 1772366400000, "followers": 1}\n')
    env = {**os.environ, "ENGAGEMENT_BROKER": f"kafka://127.0.0.1:{broker.free_port()}"}
    out = subprocess.run(
        [*CLI, "replay", str(f), "--wait", "1"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "ENGAGEMENT_BROKER" in lines[0], out.stderr


def test_replay_of_a_missing_file_is_a_one_line_error(tmp_path: Path) -> None:
    missing = tmp_path / "no-such-export.jsonl"
    out = subprocess.run(
        [*CLI, "replay", str(missing)],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )
    assert out.returncode == 2
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and str(missing) in lines[0], out.stderr
    assert "No such file" in lines[0]

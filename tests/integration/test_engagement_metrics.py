"""Engagement itself on /metrics, through a real worker: after the generator's traffic,
the gauges of a configured account describe its latest final windows on
engagement.windows, the detectors' judgments and its response times; the SLA counters
match the alerts published; no other account, message text or actor id is exported."""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections import Counter
from typing import Any

import pytest

from tests.integration.conftest import RAW, ROOT, Env, Worker, wait_for

pytestmark = pytest.mark.integration

CONFIG = """
[windows]
sizes_s = [60, 300]
idle_after_s = 2

[metrics]
accounts = ["acme"]
top_accounts = 0
"""
ACCOUNT_SERIES = (
    "engagement_window_",
    "engagement_detector_",
    "engagement_response_within",
    "engagement_response_oldest",
    "engagement_account_open",
)
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def latest_counts(windows: list[dict[str, Any]], size_s: int) -> tuple[str, Counter[str]]:
    """acme's newest window of one size on the windows topic, channels summed."""
    sized = [w for w in windows if w["account_id"] == "acme" and w["size_seconds"] == size_s]
    newest = max(w["window_start"] for w in sized)
    counts: Counter[str] = Counter()
    for w in sized:
        if w["window_start"] == newest:
            counts.update(w["counts"])
    return newest, counts


def gauge_counts(m: Samples, size_s: int) -> Counter[str]:
    out: Counter[str] = Counter()
    for (name, labels), v in m.items():
        d = dict(labels)
        if name == "engagement_window_events" and d["size_seconds"] == str(size_s):
            out[d["kind"]] = int(v)
    return out


def test_engagement_gauges_after_generated_traffic(env: Env) -> None:
    worker = env.worker(CONFIG).start()
    args = ["generate", "--rate", "5", "--backfill", "1800", "--duration", "0", "--speed", "0"]
    done = subprocess.run(
        [sys.executable, "-m", "pipeline.cli", *args, "--quiet"],
        env=worker.env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr

    def settled() -> Samples | None:
        """The gauges equal the counts of acme's newest final windows, 1 and 5 min."""
        windows = env.read("engagement.windows")
        if not any(w["account_id"] == "acme" for w in windows):
            return None
        m = worker.metrics()
        for size in (60, 300):
            _, counts = latest_counts(windows, size)
            if gauge_counts(m, size) != +counts or not counts:
                return None
        return m

    m: Samples = wait_for(settled, 120, "gauges equal to acme's latest windows", worker)

    def one(name: str, **labels: str) -> float:
        return m[(name, tuple(sorted(labels.items())))]

    assert {dict(k).get("account") for n, k in m if n.startswith(ACCOUNT_SERIES)} == {"acme"}
    assert one("engagement_window_weighted_engagement", account="acme", size_seconds="60") > 0
    assert one("engagement_window_unique_actors", account="acme", size_seconds="300") > 0
    # the generator reports followers, reach and impressions for every channel
    for basis in ("followers", "reach", "impressions"):
        assert one("engagement_window_rate", account="acme", size_seconds="300", basis=basis) > 0
    # detectors (no two days of history: no band yet) judged the newest 5-minute window
    for series in ("engagement", "mentions"):
        assert one("engagement_detector_observed", account="acme", series=series) >= 0
        assert one("engagement_detector_expected", account="acme", series=series) >= 0
        assert 0 <= one("engagement_detector_anomaly_score", account="acme", series=series) <= 1
        assert one("engagement_detector_alert_active", account="acme", series=series) in (0, 1)
    # response times of acme, at its partition's watermark
    assert 0 <= one("engagement_response_within_sla_ratio", account="acme") <= 1
    assert 0 < one("engagement_response_oldest_open_age_seconds", account="acme") < 3600
    assert one("engagement_account_open_inbound", account="acme") >= 1

    def sla_matches() -> bool:
        alerts = env.read("engagement.alerts")
        per_type = Counter(a["type"] for a in {a["alert_id"]: a for a in alerts}.values())
        now = worker.metrics()
        for kind in ("response_sla_warning", "response_sla_breach"):
            counted = sum(
                v
                for (n, labels), v in now.items()
                if n == "engagement_response_sla_alerts_total" and dict(labels)["type"] == kind
            )
            if counted != per_type[kind]:
                return False
        return per_type["response_sla_breach"] > 0  # urgent messages wait past 15 min

    wait_for(sla_matches, 60, "SLA counters equal to the SLA alerts published", worker)
    no_text_or_actors(env, worker)


def no_text_or_actors(env: Env, worker: Worker) -> None:
    texts: set[str] = set()
    actors: set[str] = set()
    for raw in RAW:
        for msg in env.read(f"social.{raw}"):
            texts.update(w for w in str(msg.get("text", "")).split() if len(w) > 7)
            if msg.get("actor_id"):
                actors.add(msg["actor_id"])
    assert texts and actors
    url = f"http://127.0.0.1:{worker.web_port}/metrics"
    with urllib.request.urlopen(url, timeout=5) as r:
        exposition = r.read().decode()
    label_values = {v for _, labels in worker.metrics() for _, v in labels}
    assert not label_values & actors
    assert not [w for w in texts if w in exposition]

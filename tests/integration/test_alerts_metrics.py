"""Threshold alerts on the alert topic, and the /metrics endpoint, through a real worker."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from pipeline.model.records import alert_id
from tests.integration.conftest import Env, wait_for
from tests.integration.test_windows import BASE_MS, iso

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]

CONFIG = """
[windows]
sizes_s = [60]
allowed_lateness_s = 0
grace_s = 0
idle_after_s = 3600

[metrics]
accounts = ["acme"]
top_accounts = 0

[[alerts.thresholds]]
name = "busy"
metric = "volume"
op = "above"
value = 5
accounts = ["acme"]
window_s = 60
severity = "critical"
cooldown_s = 120
"""


def events(account: str, minute: int, n: int) -> list[dict[str, Any]]:
    return [
        {
            "event_id": f"{account}-{minute}-{i}",
            "kind": "comment",
            "channel": "x",
            "account_id": account,
            "ts": BASE_MS + minute * 60_000 + i * 1000,
            "post_id": "p",
            "actor_id": f"u{i}",
            "text": "PRIVATE-SENTINEL",
        }
        for i in range(n)
    ]


def test_threshold_alerts_with_event_time_cooldown(env: Env) -> None:
    worker = env.worker(CONFIG).start()
    # minute 0 alerts; minute 1 is within the 120 s cooldown; minute 3 alerts again;
    # globex is not covered by the rule; minute 4 has too little volume.
    for ev in (
        events("acme", 0, 10)
        + events("acme", 1, 10)
        + events("acme", 3, 10)
        + events("globex", 0, 10)
        + events("acme", 4, 2)
    ):
        env.send("comments", ev)
    env.close_all(BASE_MS + 9 * 60_000)
    alerts = env.wait_records("engagement.alerts", lambda rs: len(rs) >= 2, worker=worker)
    windows = env.wait_records("engagement.windows", lambda ws: len(ws) >= 5, worker=worker)
    assert len(windows) == 5
    assert len(alerts) == 2
    schema = json.loads((ROOT / "schemas" / "alert.v1.json").read_text())
    for a in alerts:
        jsonschema.Draft202012Validator(schema, format_checker=jsonschema.FormatChecker()).validate(
            a
        )
        assert "PRIVATE-SENTINEL" not in json.dumps(a)
    starts = sorted(a["window_start"] for a in alerts)
    assert starts == [iso(BASE_MS), iso(BASE_MS + 3 * 60_000)]
    for a in alerts:
        start_ms = BASE_MS + (0 if a["window_start"] == iso(BASE_MS) else 3 * 60_000)
        assert a["alert_id"] == alert_id("threshold", "busy", "acme", "x", 60, start_ms)
        assert (a["type"], a["severity"], a["observed"], a["threshold"]) == (
            "threshold_above",
            "critical",
            10.0,
            5.0,
        )
    wait_for(
        lambda: (
            worker.metric(
                "engagement_alerts_total",
                type="threshold_above",
                severity="critical",
                account="acme",
            )
            == 2
        ),
        10,
        "alert metric",
        worker,
    )
    assert worker.metric("engagement_windows_emitted_total", size="60s") == 5
    latency = "engagement_event_to_output_latency_seconds_count"
    assert worker.metric(latency, output="window") == 5
    assert worker.metric(latency, output="alert") == 2


def test_metrics_endpoint_series_and_bounded_account_labels(env: Env) -> None:
    worker = env.worker(CONFIG).start()
    for ev in events("acme", 0, 3) + events("globex", 0, 4) + events("initech", 0, 5):
        env.send("comments", ev)
    env.send("comments", b"not json", key=b"acme")
    env.send("comments", events("acme", 0, 1)[0])  # duplicate
    wait_for(
        lambda: worker.metric("engagement_events_total", kind="comment", channel="x") == 12,
        30,
        "events counted",
        worker,
    )
    required = {
        "engagement_events_total",
        "engagement_invalid_events_total",
        "engagement_duplicate_events_total",
        "engagement_account_events_total",
        "engagement_consumer_lag",  # gauges appear once the first tick has measured
        "engagement_processing_latency_seconds_bucket",
        "engagement_open_windows",
        "engagement_watermark_lag_seconds",
    }
    wait_for(lambda: required <= {n for n, _ in worker.metrics()}, 20, "every series", worker)
    m = worker.metrics()
    assert worker.metric("engagement_invalid_events_total", reason="not_json") == 1
    assert worker.metric("engagement_duplicate_events_total") == 1
    # configured account labeled; top_accounts = 0 so every other account is "other"
    assert worker.metric("engagement_account_events_total", account="acme") == 3
    assert worker.metric("engagement_account_events_total", account="other") == 9
    accounts = {
        dict(labels).get("account")
        for name, labels in m
        if name == "engagement_account_events_total"
    }
    assert accounts == {"acme", "other"}
    lag = [v for (name, labels), v in m.items() if name == "engagement_consumer_lag"]
    assert lag and all(v >= 0 for v in lag)

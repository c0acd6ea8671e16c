"""Early alerts through a real worker and broker: a threshold crossed in an open
window is on the alert topic while the window is still open, once, with the id and
decision the close gives. (A kill -9 while early alerts are raised: test_crash.)"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any

import jsonschema
import pytest

from pipeline.windows import thresholds
from pipeline.windows.arithmetic import rfc3339
from tests.integration.conftest import Env
from tests.integration.test_detection import ALERT_SCHEMA
from tests.integration.test_windows import BASE_MS

pytestmark = pytest.mark.integration

CONFIG = """
[windows]
sizes_s = [60]
allowed_lateness_s = 0
grace_s = 0
idle_after_s = 3600

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
START = BASE_MS + 10 * 60_000  # the window: event time long past, moved by events only


def comment(i: int) -> dict[str, Any]:
    return {
        "event_id": f"c{i}",
        "kind": "comment",
        "channel": "x",
        "account_id": "acme",
        "ts": START + i * 1000,
        "post_id": "p",
        "actor_id": f"u{i}",
        "text": "PRIVATE-SENTINEL",
    }


def mine(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [r for r in records if r["account_id"] == "acme"]


def test_a_threshold_crossed_in_an_open_window_alerts_before_the_window_closes(
    env: Env,
) -> None:
    worker = env.worker(CONFIG).start()
    # Every input partition at the window's start: the minute before is final, so
    # the rule's cooldown is known, and nothing moves the watermark past this window.
    # (The closers' own window of the minute before, once published, says so.)
    env.close_all(START - 60_000)
    env.close_all(START)
    env.wait_records("engagement.windows", lambda ws: len(ws) > 0, timeout_s=30, worker=worker)
    for i in range(1, 6):
        env.send("comments", comment(i))
    sent = time.time()
    env.send("comments", comment(6))  # the sixth: volume 6 > 5
    [alert] = mine(env.wait_records("engagement.alerts", mine, timeout_s=30, worker=worker))
    emitted = datetime.fromisoformat(alert["emitted_at"]).timestamp()
    print(f"early alert emitted {emitted - sent:.3f} s after the crossing event was sent")
    jsonschema.validate(alert, ALERT_SCHEMA, format_checker=jsonschema.FormatChecker())
    assert alert["early"] is True and alert["observed"] == 6.0
    assert (alert["type"], alert["severity"], alert["threshold"]) == (
        "threshold_above",
        "critical",
        5.0,
    )
    assert alert["window_start"] == rfc3339(START) and "PRIVATE-SENTINEL" not in str(alert)
    assert mine(env.read("engagement.windows")) == []  # the window is still open
    for i in range(7, 11):  # it fills on
        env.send("comments", comment(i))
    env.close_all(START + 60_000)
    [window] = mine(env.wait_records("engagement.windows", mine, timeout_s=30, worker=worker))
    assert window["counts"]["comment"] == 10
    time.sleep(2)  # anything the close might still send
    assert [a["alert_id"] for a in mine(env.read("engagement.alerts"))] == [alert["alert_id"]]
    # the id and decision of the close, had the alert waited for it
    rules = (
        thresholds.ThresholdRule("busy", "volume", "above", 5, ("acme",), 60, "critical", 120),
    )
    [closing] = thresholds.evaluate(window, START, START + 60_000, rules, {})
    assert (closing["alert_id"], closing["type"], closing["observed"]) == (
        alert["alert_id"],
        "threshold_above",
        10.0,
    )

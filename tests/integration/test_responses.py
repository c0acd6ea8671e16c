"""Response times through a real worker: SLA alerts on the alert topic, the API
against a replayed file (with a kill -9 part-way), and the Prometheus series."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from pipeline.responses.settings import ResponseSettings, SlaRule
from tests import conversations as conv
from tests.integration.conftest import ROOT, Env, Worker, wait_for
from tests.integration.test_replay import run_replay
from tests.integration.test_windows import BASE_MS

pytestmark = pytest.mark.integration
MIN = 60_000

CONFIG = """
[windows]
sizes_s = [60]
allowed_lateness_s = 0
grace_s = 0
idle_after_s = 3600

[responses]
warning_fraction = 0.5
snapshot_interval_s = 1
sla = [{ sla_s = 600, kinds = ["dm"] }, { sla_s = 3600 }]
"""
# the same rules, for the offline truth
RULES = ResponseSettings(sla=(SlaRule(600, kinds=("dm",)), SlaRule(3600)), warning_fraction=0.5)
ALERT_SCHEMA = json.loads((ROOT / "schemas" / "alert.v1.json").read_text())


def api(worker: Worker, account: str) -> dict[str, Any]:
    url = f"http://127.0.0.1:{worker.web_port}/api/v1/accounts/{account}/response-times"
    with urllib.request.urlopen(url, timeout=5) as r:
        data: dict[str, Any] = json.loads(r.read())
        return data


def dm(event_id: str, ts: int, **kw: Any) -> dict[str, Any]:
    return {
        "event_id": event_id,
        "kind": "dm",
        "channel": "x",
        "account_id": "acme",
        "ts": ts,
        "actor_id": "customer",
        "text": "PRIVATE-SENTINEL my order never came",
        **kw,
    }


def sla_alerts(records: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted(
        (a["type"], a["event_id"]) for a in records if a["type"].startswith("response_sla")
    )


def test_unanswered_dm_gets_a_warning_then_a_breach_once_each(env: Env) -> None:
    worker = env.worker(CONFIG).start()
    env.send("dms", dm("lonely", BASE_MS))
    env.send("dms", dm("answered", BASE_MS))
    env.send(
        "replies",
        {
            "event_id": "r1",
            "kind": "reply",
            "channel": "x",
            "account_id": "acme",
            "ts": BASE_MS + 4 * MIN,
            "in_reply_to": "answered",
        },
    )
    env.close_all(BASE_MS + 6 * MIN)  # past the warning (5 min), not the breach (10 min)
    first = env.wait_records("engagement.alerts", lambda r: bool(sla_alerts(r)), worker=worker)
    assert sla_alerts(first) == [("response_sla_warning", "lonely")]
    wait_for(
        lambda: worker.metric("engagement_open_inbound", channel="x", kind="dm") == 1,
        30,
        "open inbound gauge",
        worker,
    )
    assert worker.metric("engagement_first_response_seconds_count", channel="x", kind="dm") == 1
    assert (
        worker.metric(
            "engagement_first_response_seconds_bucket", channel="x", kind="dm", le="300.0"
        )
        == 1
    )
    env.close_all(BASE_MS + 11 * MIN)
    records = env.wait_records(
        "engagement.alerts", lambda r: len(sla_alerts(r)) >= 2, worker=worker
    )
    assert sla_alerts(records) == [
        ("response_sla_breach", "lonely"),
        ("response_sla_warning", "lonely"),
    ]
    for alert in records:
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert "PRIVATE-SENTINEL" not in json.dumps(alert)
    breach = next(a for a in records if a["type"] == "response_sla_breach")
    assert breach["severity"] == "critical" and breach["observed"] == 600
    assert breach["window_end"] == "2026-01-05T10:10:00.000Z"
    view = api(worker, "acme")
    assert view["first_response_seconds"]["count"] == 1
    assert abs(view["first_response_seconds"]["p50"] - 240) <= 2.4
    assert view["open"] == {"count": 1, "oldest_age_seconds": 660.0}
    assert view["within_sla_ratio"] == 1.0
    assert "PRIVATE-SENTINEL" not in worker.log_path.read_text(errors="replace")


def test_api_matches_an_offline_computation_over_a_replayed_file_across_a_kill(
    env: Env, tmp_path: Path
) -> None:
    data = conv.generate(7, start_ms=BASE_MS, inbound=900, median_delay_ms=15 * MIN)
    half = len(data.events) // 2
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"\n".join(orjson.dumps(e) for e in data.events[:half]) + b"\n")
    second.write_bytes(b"\n".join(orjson.dumps(e) for e in data.events[half:]) + b"\n")
    worker = env.worker(CONFIG).start()
    assert run_replay(env, str(first), "--quiet").returncode == 0
    # let it work through part of the file, with snapshots, then kill it
    wait_for(
        lambda: (
            worker.metric("engagement_first_response_seconds_count", channel="x", kind="dm") > 20
        ),
        60,
        "first responses settled",
        worker,
    )
    worker.kill()
    assert run_replay(env, str(second), "--quiet").returncode == 0
    worker = env.worker(CONFIG, app_id=worker.env["ENGAGEMENT_APP_ID"]).start()
    end = data.events[-1]["ts"] + 2 * 60 * MIN  # past every deadline and orphan wait
    env.close_all(end)
    truth = conv.offline(data.events, RULES, end)

    def settled() -> bool:
        try:
            api(worker, "acme")
        except urllib.error.HTTPError as err:  # 503 until the partition is restored
            assert err.code == 503
            return False
        return all(
            api(worker, a)["first_response_seconds"]["count"] == len(v)
            for a, v in truth.first_s.items()
        ) and all(api(worker, a)["unmatched_replies"] == n for a, n in truth.unmatched.items())

    wait_for(settled, 90, "every first response settled", worker)
    for account, values in truth.first_s.items():
        view = api(worker, account)
        values.sort()
        for q, name in ((0.5, "p50"), (0.9, "p90")):
            exact = values[int(q * (len(values) - 1))]
            assert abs(view["first_response_seconds"][name] - exact) <= 0.01 * exact, account
        assert view["open"]["count"] == truth.open.get(account, 0)
        assert view["subsequent_response_seconds"]["count"] == len(
            truth.subsequent_s.get(account, [])
        )
    records = env.wait_records(
        "engagement.alerts",
        lambda r: set(sla_alerts(r)) >= truth.alerts,
        worker=worker,
    )
    # every alert the truth calls for, no other; a re-sent one carries the same id
    assert set(sla_alerts(records)) == truth.alerts
    ids = {}
    for a in records:
        if a["type"].startswith("response_sla"):
            assert ids.setdefault((a["type"], a["event_id"]), a["alert_id"]) == a["alert_id"]

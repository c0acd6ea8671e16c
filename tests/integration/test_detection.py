"""Spike and drop detection through a real worker: three days of synthetic history
replayed in event time, with a kill -9 part-way, then one spike and one drop."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import jsonschema
import orjson
import pytest

from pipeline.detection.detector import Detector, DetectorState
from pipeline.detection.settings import DetectionSettings
from pipeline.windows.arithmetic import rfc3339
from tests import spikes
from tests.integration.conftest import ROOT, Env, wait_for
from tests.integration.test_replay import run_replay
from tests.integration.test_windows import BASE_MS

pytestmark = pytest.mark.integration

CONFIG = """
[windows]
sizes_s = [300]
allowed_lateness_s = 0
grace_s = 0
idle_after_s = 3600

[detection.accounts.acme]
min_expected = 10
"""
DETECTOR_TYPES = {
    "engagement_spike",
    "engagement_drop",
    "mention_surge",
    "negative_sentiment_shift",
    "share_of_voice_drop",
}
ALERT_SCHEMA = json.loads((ROOT / "schemas" / "alert.v1.json").read_text())


def offline(values: list[tuple[int, float]]) -> list[tuple[str, int]]:
    """The detector itself over the window values, with the test's settings."""
    cfg = DetectionSettings(accounts={"acme": {"min_expected": 10.0}})
    det, st = Detector(cfg.settings_for("acme", "engagement"), 300), DetectorState()
    found = [(start, det.step(st, start, v).alert) for start, v in values]
    return [(a, start) for start, a in found if a]


def test_one_spike_and_one_drop_alert_within_a_window_across_a_kill(
    env: Env, tmp_path: Path
) -> None:
    day0 = BASE_MS // spikes.DAY_MS * spikes.DAY_MS
    data = spikes.generate(day0)
    # the truth: exactly one spike at the spike window, one drop in the next window
    truth = offline(data.values)
    assert truth == [("spike", data.spike_ms), ("drop", data.drop_ms + spikes.STEP_MS)]
    # The kill: two and a half days in. A detector restarted empty there would have
    # seen too few whole days to judge the spike on day four: the alert needs the state.
    cut = day0 + 5 * spikes.DAY_MS // 2
    first, second = tmp_path / "first.jsonl", tmp_path / "second.jsonl"
    first.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in data.events if e["ts"] < cut))
    second.write_bytes(b"".join(orjson.dumps(e) + b"\n" for e in data.events if e["ts"] >= cut))

    worker = env.worker(CONFIG).start()
    assert run_replay(env, str(first), "--quiet").returncode == 0
    # nearly all of the first windows published (and detector state saved with them)
    wait_for(
        lambda: worker.metric("engagement_windows_emitted_total", size="300s") > 700,
        90,
        "windows of the first two days",
        worker,
    )
    worker.kill()
    assert run_replay(env, str(second), "--quiet").returncode == 0
    worker = env.worker(CONFIG, app_id=worker.env["ENGAGEMENT_APP_ID"]).start()
    env.close_all(data.end_ms)

    def detected(records: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [a for a in records if a["type"] in DETECTOR_TYPES]

    env.wait_records(
        "engagement.alerts",
        lambda r: {a["type"] for a in detected(r)} >= {"engagement_spike", "engagement_drop"},
        timeout_s=120,
        worker=worker,
    )
    # everything final: no more alerts are on their way
    wait_for(
        lambda: (
            worker.metric("engagement_windows_emitted_total", size="300s")
            >= (data.end_ms - cut) // spikes.STEP_MS - 12
        ),
        60,
        "the last windows",
        worker,
    )
    found = detected(env.read("engagement.alerts"))
    by_id = {a["alert_id"]: a for a in found}  # a re-sent alert carries the same id
    got = sorted((a["type"], a["window_start"]) for a in by_id.values())
    assert got == [
        ("engagement_drop", rfc3339(data.drop_ms + spikes.STEP_MS)),
        ("engagement_spike", rfc3339(data.spike_ms)),
    ]
    for alert in by_id.values():
        jsonschema.validate(alert, ALERT_SCHEMA)
        assert alert["account_id"] == "acme" and alert["channel"] is None
        assert alert["metric"] == "weighted_engagement"
        assert "expected" in alert["message"] and "threshold" in alert["message"]
    spike = next(a for a in by_id.values() if a["type"] == "engagement_spike")
    observed = dict(data.values)[data.spike_ms]
    assert spike["observed"] == observed
    assert spike["expected"] < spike["threshold"] < observed
    drop = next(a for a in by_id.values() if a["type"] == "engagement_drop")
    assert drop["observed"] == 0 and drop["expected"] > drop["threshold"] >= 0

"""`engagement demo`: broker, worker and generator together, alerts printed live.

Every child runs in this process's session, and all of them are stopped on
Ctrl-C (or when any of them dies), so no broker is left behind.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson

from pipeline.cli import broker
from pipeline.model import topics

# Thresholds chosen so the synthetic traffic trips them within the first minutes.
DEMO_CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 5
grace_s = 2
idle_after_s = 5

[metrics]
accounts = ["acme", "globex"]

[[alerts.thresholds]]
name = "busy-minute"
metric = "volume"
op = "above"
value = 15
window_s = 60
severity = "warning"
cooldown_s = 300

[[alerts.thresholds]]
name = "high-engagement-rate"
metric = "engagement_rate"
op = "above"
value = 0.0005
window_s = 300
severity = "info"
cooldown_s = 900
"""


def _print_alert(raw: bytes) -> None:
    a = orjson.loads(raw)
    print(
        f"ALERT [{a['severity']:>8}] {a['type']:<16} {a['account_id']}/{a['channel']}: "
        f"{a['message']}",
        flush=True,
    )


def run_demo(port: int, web_port: int, rate: float) -> int:
    from kafka import KafkaConsumer

    port = port or broker.free_port()
    workdir = Path(tempfile.mkdtemp(prefix="engagement-demo-"))
    config = workdir / "demo.toml"
    config.write_text(DEMO_CONFIG, encoding="utf-8")
    env = {
        **os.environ,
        "ENGAGEMENT_BROKER": f"kafka://127.0.0.1:{port}",
        "ENGAGEMENT_WEB_PORT": str(web_port),
        "ENGAGEMENT_CONFIG": str(config),
        "ENGAGEMENT_DATA_DIR": str(workdir / "data"),
    }
    exe = [sys.executable, "-m", "pipeline.cli"]
    children: list[subprocess.Popen[bytes]] = []
    proc = broker.start(port, log_path=workdir / "broker.log")
    children.append(proc)
    try:
        worker_log = open(workdir / "worker.log", "ab")  # noqa: SIM115
        children.append(
            subprocess.Popen(
                [*exe, "worker", "--loglevel", "warning"],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
        )
        children.append(
            subprocess.Popen(
                [*exe, "generate", "--rate", str(rate), "--backfill", "300", "--quiet"],
                env=env,
                stdout=worker_log,
                stderr=subprocess.STDOUT,
            )
        )
        print(
            f"broker 127.0.0.1:{port} | metrics http://127.0.0.1:{web_port}/metrics | "
            f"logs {workdir} | Ctrl-C stops everything",
            flush=True,
        )
        print("the generator backfills 5 minutes, then runs live; alerts appear below", flush=True)
        consumer = KafkaConsumer(
            topics.ALERTS,
            topics.WINDOWS,
            bootstrap_servers=f"127.0.0.1:{port}",
            auto_offset_reset="earliest",
            group_id=None,
        )
        windows = 0
        last_report = time.monotonic()
        while True:
            for records in consumer.poll(timeout_ms=500).values():
                for rec in records:
                    if rec.topic == topics.ALERTS:
                        _print_alert(rec.value)
                    else:
                        windows += 1
            if time.monotonic() - last_report > 30:
                last_report = time.monotonic()
                print(f"... {windows} final windows published so far", flush=True)
            for child in children:
                if child.poll() is not None:
                    print(
                        f"a demo process exited (code {child.returncode}); see {workdir}",
                        file=sys.stderr,
                    )
                    return 1
    except KeyboardInterrupt:
        print("\nstopping...", flush=True)
        return 0
    finally:
        for child in reversed(children):
            if child.poll() is None:
                child.terminate()
        for child in reversed(children):
            try:
                child.wait(10)
            except subprocess.TimeoutExpired:
                child.kill()

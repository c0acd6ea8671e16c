"""The `engagement` command as a user runs it: errors, the broker, the demo."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipeline.cli import broker
from tests.integration.conftest import Env, wait_for

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "pipeline.cli"]


def children_of(pid: int) -> list[int]:
    out = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True)
    return [int(p) for p in out.stdout.split()]


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # a zombie is gone for our purposes
    stat = Path(f"/proc/{pid}/stat")
    return stat.exists() and stat.read_text().split()[2] != "Z"


def interruptible() -> None:
    """Run the child as a terminal's foreground process is run: SIGINT (Ctrl-C) at
    its default. A suite started in the background by a non-interactive shell
    inherits SIGINT ignored, and Python then never raises KeyboardInterrupt."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def one_line_error(args: list[str], env: dict[str, str], needle: str, code: int = 2) -> None:
    """Run the CLI and check it failed with `code` and a single line naming `needle`."""
    out = subprocess.run(
        [*CLI, *args], env=env, capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert out.returncode == code, out.stderr[-2000:]
    assert "Traceback" not in out.stderr
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], out.stderr[-2000:]


def test_unreachable_broker_is_a_one_line_error() -> None:
    env = {**os.environ, "ENGAGEMENT_BROKER": f"kafka://127.0.0.1:{broker.free_port()}"}
    one_line_error(["worker", "--wait", "1"], env, "ENGAGEMENT_BROKER")


def test_missing_broker_binary_is_a_one_line_error(tmp_path: Path) -> None:
    env = {**os.environ, "CALF_TANSU_BIN": str(tmp_path / "no-such-tansu")}
    one_line_error(["broker", "--port", str(broker.free_port())], env, "CALF_TANSU_BIN")


def test_invalid_settings_are_a_one_line_error() -> None:
    env = {**os.environ, "ENGAGEMENT_WEB_PORT": "eighty"}
    one_line_error(["worker"], env, "ENGAGEMENT_WEB_PORT", code=1)


def test_broker_command_runs_in_foreground_and_stops_on_ctrl_c() -> None:
    port = broker.free_port()
    proc = subprocess.Popen(
        [*CLI, "broker", "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        preexec_fn=interruptible,
    )
    try:
        wait_for(lambda: broker.port_open("127.0.0.1", port), 20, "broker port")
        kids = children_of(proc.pid)
        assert kids, "the broker runs as a child process"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(15) == 0
        wait_for(lambda: not any(alive(k) for k in kids), 10, "broker process to exit")
        assert not broker.port_open("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_ctrl_c_while_the_broker_starts_leaves_nothing_running(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ctrl-C can land while `engagement broker` still waits for the port: that is a
    clean stop too, and the broker process must not outlive the command."""
    started: list[subprocess.Popen[bytes]] = []
    real_popen = subprocess.Popen

    def popen(*args: object, **kwargs: object) -> subprocess.Popen[bytes]:
        started.append(real_popen(*args, **kwargs))  # type: ignore[call-overload]
        return started[-1]

    real_sleep = time.sleep

    def ctrl_c(seconds: float) -> None:  # the first wait for the port is interrupted
        monkeypatch.setattr(broker.time, "sleep", real_sleep)
        raise KeyboardInterrupt

    monkeypatch.setattr(broker.subprocess, "Popen", popen)
    monkeypatch.setattr(broker, "port_open", lambda host, port: False)
    monkeypatch.setattr(broker.time, "sleep", ctrl_c)
    from pipeline.cli import main as cli

    assert cli.main(["broker", "--port", str(broker.free_port())]) == 0
    assert len(started) == 1 and started[0].poll() is not None


def test_demo_shows_alerts_serves_metrics_and_stops_cleanly(tmp_path: Path) -> None:
    port, web_port = broker.free_port(), broker.free_port()
    log = tmp_path / "demo.out"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [*CLI, "demo", "--port", str(port), "--web-port", str(web_port)],
            cwd=ROOT,
            stdout=out,
            stderr=subprocess.STDOUT,
            preexec_fn=interruptible,
        )
    try:
        wait_for(
            lambda: b"ALERT" in log.read_bytes() or proc.poll() is not None,
            120,
            "the first alert in the demo's output",
        )
        assert proc.poll() is None, log.read_text()
        import urllib.request

        with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/metrics", timeout=5) as r:
            assert b"engagement_windows_emitted_total" in r.read()
        kids = children_of(proc.pid)
        assert len(kids) >= 3, "broker, worker and generator"
        proc.send_signal(signal.SIGINT)
        assert proc.wait(30) == 0, log.read_text()
        deadline = time.monotonic() + 10
        while any(alive(k) for k in kids) and time.monotonic() < deadline:
            time.sleep(0.2)
        assert not any(alive(k) for k in kids), "orphan processes after Ctrl-C"
        assert not broker.port_open("127.0.0.1", port)
    finally:
        if proc.poll() is None:
            proc.kill()


def test_partition_count_mismatch_is_a_one_line_error(env: Env) -> None:
    """The internal topic exists with 4 partitions; a worker told 2 must refuse."""
    w = env.worker("", ENGAGEMENT_PARTITIONS="2")
    one_line_error(["worker", "--wait", "5"], w.env, "ENGAGEMENT_PARTITIONS=4")

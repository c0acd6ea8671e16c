"""A real Prometheus (Debian's `prometheus` package, 2.x) on loopback for integration
tests: a config written to a temporary directory that scrapes the given targets under
the job name of deploy/prometheus/prometheus.yml and loads a copy of its rules, TSDB in
the same directory, the HTTP API on a free port. Installed as root with apt-get when
missing (`make prometheus-tools` does the same); `ensure_prometheus` returns None when
it cannot be had, and the caller skips.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

import yaml

from pipeline.cli import broker
from tests.debian_tools import ensure_tool

ROOT = Path(__file__).resolve().parents[1]
DEPLOY = ROOT / "deploy" / "prometheus"
BINARIES = ("prometheus",)


def ensure_prometheus() -> str | None:
    return ensure_tool(BINARIES, "prometheus")


def deploy_job_name() -> str:
    """The scrape job of the worker in deploy/prometheus/prometheus.yml: the one that
    scrapes /metrics on the worker's web port (what the rules' `job` matchers name)."""
    config = yaml.safe_load((DEPLOY / "prometheus.yml").read_text(encoding="utf-8"))
    jobs = [
        job["job_name"]
        for job in config["scrape_configs"]
        if any(
            target.endswith(":6066")
            for static in job.get("static_configs", [])
            for target in static["targets"]
        )
    ]
    assert len(jobs) == 1, jobs
    return str(jobs[0])


class PrometheusError(AssertionError):
    pass


class Prometheus:
    """One Prometheus process; `query` and `get` answer the parsed JSON of its HTTP API."""

    def __init__(
        self,
        binary: str,
        tmp: Path,
        targets: list[str],
        scrape_interval_s: float = 1.0,
        evaluation_interval_s: float = 1.0,
    ) -> None:
        self.binary, self.dir = binary, tmp
        self.port = broker.free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = tmp / "prometheus.log"
        self.proc: subprocess.Popen[bytes] | None = None
        shutil.copy(DEPLOY / "rules.yml", tmp / "rules.yml")
        config = {
            "global": {
                "scrape_interval": f"{scrape_interval_s:g}s",
                "scrape_timeout": f"{scrape_interval_s:g}s",
                "evaluation_interval": f"{evaluation_interval_s:g}s",
            },
            "rule_files": ["rules.yml"],  # relative to this config, as in deploy/
            "scrape_configs": [
                {
                    "job_name": deploy_job_name(),
                    "metrics_path": "/metrics",
                    "static_configs": [{"targets": targets}],
                }
            ],
        }
        self.config_path = tmp / "prometheus.yml"
        self.config_path.write_text(yaml.safe_dump(config), encoding="utf-8")

    def start(self, timeout_s: float = 30.0) -> Prometheus:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.dir / 'data'}",
                f"--web.listen-address=127.0.0.1:{self.port}",
                "--web.enable-lifecycle",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.dir,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PrometheusError(
                    f"prometheus exited with {self.proc.returncode}:\n{self.log()}"
                )
            try:
                with urllib.request.urlopen(f"{self.url}/-/ready", timeout=1) as r:
                    if r.status == 200:
                        return self
            except OSError:
                pass
            time.sleep(0.2)
        self.stop()
        raise PrometheusError(f"prometheus not ready after {timeout_s} s:\n{self.log()}")

    def get(self, path: str, **params: str | list[str]) -> Any:
        """GET /api/v1/<path>; the `data` of a successful answer, else PrometheusError
        with Prometheus' own error text (a parse error names the position)."""
        query = urllib.parse.urlencode(params, doseq=True)
        url = f"{self.url}/api/v1/{path}" + (f"?{query}" if query else "")
        try:
            with urllib.request.urlopen(url, timeout=10) as r:
                body = json.loads(r.read())
        except urllib.error.HTTPError as exc:  # 400 bad_data, 422 execution errors
            body = json.loads(exc.read() or b"{}")
        if body.get("status") != "success":
            raise PrometheusError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """An instant query at now: the vector's samples (a scalar as one sample)."""
        data = self.get("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-6000:]

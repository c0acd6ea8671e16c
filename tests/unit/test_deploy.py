"""Static checks of what operators run: docker-compose.yml, deploy/ and the example config.

No container engine is needed: the files are parsed and cross-checked against each other
and against the worker's metrics contract (names and labels below).
"""

from __future__ import annotations

import dataclasses
import json
import posixpath
import re
import shlex
import shutil
import subprocess
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.config import load as config_load
from pipeline.detection.detector import DetectorSettings
from pipeline.metrics.collectors import GAUGES
from pipeline.metrics.factory import EngagementMetrics
from pipeline.metrics.latest import LATEST_GAUGES

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
COMPOSE_FILE = ROOT / "docker-compose.yml"
DOCKERFILE = DEPLOY / "Dockerfile"
RULES_FILE = DEPLOY / "prometheus" / "rules.yml"
DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "engagement.json"  # pipeline health
ACCOUNTS_DASHBOARD_FILE = DEPLOY / "grafana" / "dashboards" / "engagement-accounts.json"
DASHBOARD_FILES = (DASHBOARD_FILE, ACCOUNTS_DASHBOARD_FILE)
CONFIG_EXAMPLE = DEPLOY / "config.example.toml"
K8S = DEPLOY / "k8s"
CONFIGMAP = K8S / "configmap.yaml"

WEB_PORT = 6066
BRIDGE_PORT = 6067  # the Alertmanager bridge's /healthz and /metrics
AMTOOL_FILE = DEPLOY / "alertmanager" / "alertmanager.yml"

# The worker's /metrics contract: metric name -> label names.
METRICS: dict[str, frozenset[str]] = {
    "engagement_events_total": frozenset({"kind", "channel"}),
    "engagement_invalid_events_total": frozenset({"reason"}),
    "engagement_late_events_total": frozenset({"disposition"}),
    "engagement_duplicate_events_total": frozenset(),
    "engagement_internal_messages_skipped_total": frozenset(),
    "engagement_windows_emitted_total": frozenset({"size"}),
    "engagement_alerts_total": frozenset({"type", "severity", "account"}),
    "engagement_consumer_lag": frozenset({"topic", "partition"}),
    "engagement_event_to_output_latency_seconds": frozenset({"output"}),
    "engagement_processing_latency_seconds": frozenset(),
    "engagement_watermark_lag_seconds": frozenset({"partition"}),
    "engagement_open_windows": frozenset(),
    "engagement_account_events_total": frozenset({"account"}),
    "engagement_first_response_seconds": frozenset({"channel", "kind"}),
    "engagement_open_inbound": frozenset({"channel", "kind"}),
    "engagement_response_sla_alerts_total": frozenset({"type", "channel", "kind", "priority"}),
    "engagement_response_within_sla_ratio": frozenset({"account"}),
    "engagement_response_oldest_open_age_seconds": frozenset({"account"}),
    "engagement_account_open_inbound": frozenset({"account"}),
    "engagement_response_first_response_seconds": frozenset({"account", "quantile"}),
    "engagement_window_events": frozenset({"account", "size_seconds", "kind"}),
    "engagement_window_weighted_engagement": frozenset({"account", "size_seconds"}),
    "engagement_window_unique_actors": frozenset({"account", "size_seconds"}),
    "engagement_window_rate": frozenset({"account", "size_seconds", "basis"}),
    "engagement_window_end_timestamp_seconds": frozenset({"account", "size_seconds"}),
    "engagement_window_channel_events": frozenset({"account", "channel", "size_seconds", "kind"}),
    "engagement_window_channel_rate": frozenset({"account", "channel", "size_seconds", "basis"}),
    "engagement_window_channel_weighted_engagement": frozenset(
        {"account", "channel", "size_seconds"}
    ),
    "engagement_detector_observed": frozenset({"account", "series"}),
    "engagement_detector_expected": frozenset({"account", "series"}),
    "engagement_detector_threshold": frozenset({"account", "series", "bound"}),
    "engagement_detector_anomaly_score": frozenset({"account", "series"}),
    "engagement_detector_alert_active": frozenset({"account", "series"}),
}
HISTOGRAMS = {
    "engagement_first_response_seconds",
    "engagement_event_to_output_latency_seconds",
    "engagement_processing_latency_seconds",
}
TARGET_LABELS = frozenset({"job", "instance"})  # added by Prometheus to every scraped series
KINDS = {"like", "comment", "share", "mention", "dm", "reply"}
SEVERITIES = {"info", "warning", "critical"}

# --------------------------------------------------------------------------- PromQL helpers

_METRIC_TOKEN = re.compile(r"(?<!\w)engagement_[a-z_]+")
_RECORDED_TOKEN = re.compile(r"(?<![\w:])engagement:[a-z0-9_:]+")
_SELECTOR = re.compile(r"(?<!\w)(engagement_[a-z_]+)\s*\{([^}]*)\}")
_MATCHER_LABEL = re.compile(r"(\w+)\s*(?:=~|!~|!=|=)")
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring)\s*\(([^)]*)\)")


def base_metric(token: str) -> str:
    """Strip a histogram series suffix; other names are returned unchanged."""
    for suffix in ("_bucket", "_sum", "_count"):
        if token.endswith(suffix) and token.removesuffix(suffix) in HISTOGRAMS:
            return token.removesuffix(suffix)
    return token


def metric_names(expr: str) -> set[str]:
    return {base_metric(tok) for tok in _METRIC_TOKEN.findall(expr)}


def unknown_metrics(expr: str) -> set[str]:
    return metric_names(expr) - METRICS.keys()


def grouping_labels(expr: str) -> set[str]:
    return {label.strip() for group in _GROUPING.findall(expr) for label in group.split(",")} - {""}


def label_problems(expr: str, recorded: dict[str, frozenset[str]]) -> list[str]:
    """Labels used in selectors or by()/without()/on() that the referenced series lack."""
    problems = []
    for token, matchers in _SELECTOR.findall(expr):
        allowed = METRICS.get(base_metric(token), frozenset()) | TARGET_LABELS
        if token.endswith("_bucket"):
            allowed |= {"le"}
        problems += [
            f"{token}{{{label}}}"
            for label in _MATCHER_LABEL.findall(matchers)
            if label not in allowed
        ]
    available = set(TARGET_LABELS)
    for name in metric_names(expr):
        available |= METRICS.get(name, frozenset())
    for name in _RECORDED_TOKEN.findall(expr):
        available |= recorded.get(name, frozenset())
    if "_bucket" in expr:
        available.add("le")
    problems += [f"by/on ({label})" for label in grouping_labels(expr) - available]
    return problems


def brackets_balanced(expr: str) -> bool:
    pairs = {")": "(", "]": "[", "}": "{"}
    stack: list[str] = []
    for char in re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr):
        if char in "([{":
            stack.append(char)
        elif char in pairs and (not stack or stack.pop() != pairs[char]):
            return False
    return not stack


def test_promql_helpers_catch_mistakes() -> None:
    assert unknown_metrics("rate(engagement_event_total[5m])") == {"engagement_event_total"}
    assert unknown_metrics("rate(engagement_events_total_sum[5m])") == {
        "engagement_events_total_sum"
    }
    assert not unknown_metrics("rate(engagement_processing_latency_seconds_bucket[5m])")
    assert label_problems("sum by (kind) (engagement_consumer_lag)", {}) == ["by/on (kind)"]
    assert label_problems('engagement_events_total{reason="x"}', {}) == [
        "engagement_events_total{reason}"
    ]
    assert not brackets_balanced("sum(rate(engagement_events_total[5m])")


def test_contract_matches_the_metrics_factory() -> None:
    """METRICS above is what pipeline.metrics really registers (names and label names)."""
    created = EngagementMetrics.create(CollectorRegistry())
    exported = set()
    for field in dataclasses.fields(created):
        collector = getattr(created, field.name)
        family = collector.describe()[0]
        name = family.name + "_total" if family.type == "counter" else family.name
        exported.add(name)
        if name not in METRICS:
            continue
        if METRICS[name]:
            collector.labels(**dict.fromkeys(METRICS[name], "x"))  # ValueError on a mismatch
        else:
            with pytest.raises(ValueError):
                collector.labels()
    # the state gauges and the latest windows' and detectors' gauges, read at scrape time
    for name, (_, labels) in {**GAUGES, **LATEST_GAUGES}.items():
        exported.add(name)
        assert METRICS.get(name, frozenset(labels)) == frozenset(labels), name
    assert exported >= METRICS.keys(), METRICS.keys() - exported


# --------------------------------------------------------------------------- loaders


def load_yaml(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = load_yaml(COMPOSE_FILE)
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, Any]:
    return compose["services"]


@pytest.fixture(scope="module")
def rules() -> list[dict[str, Any]]:
    groups = load_yaml(RULES_FILE)["groups"]
    return [rule for group in groups for rule in group["rules"]]


@pytest.fixture(scope="module")
def recorded(rules: list[dict[str, Any]]) -> dict[str, frozenset[str]]:
    """Recorded series name -> labels it may carry."""
    out = {}
    for rule in rules:
        if "record" in rule:
            labels = set(TARGET_LABELS)
            for name in metric_names(rule["expr"]):
                labels |= METRICS.get(name, frozenset())
            out[rule["record"]] = frozenset(labels)
    return out


@pytest.fixture(scope="module")
def dashboards() -> dict[str, dict[str, Any]]:
    return {p.name: json.loads(p.read_text(encoding="utf-8")) for p in DASHBOARD_FILES}


def env_of(service: dict[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {key: str(value) for key, value in env.items()}


def bind_mounts(service: dict[str, Any]) -> list[tuple[str, str]]:
    """(host source, container target) of each bind mount; named volumes excluded."""
    mounts = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            if volume.get("type") == "bind":
                mounts.append((volume["source"], volume["target"]))
            continue
        source, target = volume.split(":")[:2]
        if source.startswith((".", "/", "~")):
            mounts.append((source, target))
    return mounts


def host_path(service: dict[str, Any], container_path: str) -> Path | None:
    """The repository path a container path of a service is bind-mounted from."""
    for source, target in bind_mounts(service):
        target = target.rstrip("/")
        if container_path == target or container_path.startswith(target + "/"):
            return (ROOT / source).resolve() / container_path[len(target) :].lstrip("/")
    return None


def published_ports(service: dict[str, Any]) -> dict[int, int]:
    """container port -> host port."""
    out = {}
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out[int(port["target"])] = int(port.get("published", port["target"]))
        else:
            parts = str(port).split("/")[0].split(":")
            out[int(parts[-1])] = int(parts[-2] if len(parts) > 1 else parts[-1])
    return out


def listeners(value: str) -> dict[str, tuple[str, int]]:
    """Kafka listener list 'NAME://host:port,...' -> {NAME: (host, port)}."""
    out = {}
    for item in value.split(","):
        name, address = item.strip().split("://")
        host, port = address.rsplit(":", 1)
        out[name] = (host, int(port))
    return out


# --------------------------------------------------------------------------- every file parses

DEPLOY_YAML = sorted([*DEPLOY.rglob("*.yml"), *DEPLOY.rglob("*.yaml"), COMPOSE_FILE])


@pytest.mark.parametrize("path", DEPLOY_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_yaml_parses(path: Path) -> None:
    documents = [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc]
    assert documents, f"{path} holds no YAML document"


def test_deploy_has_the_expected_files() -> None:
    assert len(DEPLOY_YAML) >= 9
    for path in (DOCKERFILE, RULES_FILE, DASHBOARD_FILE, CONFIG_EXAMPLE):
        assert path.is_file(), path


# --------------------------------------------------------------------------- docker-compose.yml


def test_compose_spec_and_services(compose: dict[str, Any]) -> None:
    assert "version" not in compose, "compose spec: no top-level version key"
    expected = {"kafka", "worker", "generator", "prometheus", "grafana", "alertmanager"}
    expected.add("alertmanager-bridge")
    assert expected <= compose["services"].keys()


def test_kafka_single_node_kraft(services: dict[str, Any]) -> None:
    kafka = services["kafka"]
    env = env_of(kafka)
    assert kafka["image"] == "apache/kafka:4.1.0"
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"].lower() == "true"
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"

    bound = listeners(env["KAFKA_LISTENERS"])
    advertised = listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    protocols = dict(
        item.split(":") for item in env["KAFKA_LISTENER_SECURITY_PROTOCOL_MAP"].split(",")
    )
    assert set(bound) <= protocols.keys()
    assert env["KAFKA_CONTROLLER_LISTENER_NAMES"] in bound
    assert env["KAFKA_INTER_BROKER_LISTENER_NAME"] in advertised
    for name, (_, port) in advertised.items():
        assert bound[name][1] == port, f"advertised listener {name} is not bound on {port}"
    assert ("localhost", 9092) in advertised.values()
    assert ("kafka", 19092) in advertised.values()
    assert published_ports(kafka).get(9092) == 9092

    test = kafka["healthcheck"]["test"]
    assert "/opt/kafka/bin/kafka-broker-api-versions.sh" in " ".join(test)


@pytest.mark.parametrize("name", ["worker", "generator", "alertmanager-bridge"])
def test_clients_use_the_internal_listener(services: dict[str, Any], name: str) -> None:
    kafka_env = env_of(services["kafka"])
    advertised = listeners(kafka_env["KAFKA_ADVERTISED_LISTENERS"])
    broker = urlsplit(env_of(services[name])["ENGAGEMENT_BROKER"])
    assert broker.scheme == "kafka"
    assert broker.hostname in ("kafka", services["kafka"].get("hostname"))
    assert (broker.hostname, broker.port) in advertised.values()
    assert broker.hostname != "localhost"
    depends = services[name]["depends_on"]
    assert depends["kafka"]["condition"] == "service_healthy"


def test_worker_service(services: dict[str, Any]) -> None:
    worker = services["worker"]
    build = worker["build"]
    assert (ROOT / build["context"]).resolve() == ROOT
    assert (ROOT / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
    assert published_ports(worker).get(WEB_PORT) == WEB_PORT
    env = env_of(worker)
    assert env.get("ENGAGEMENT_WEB_PORT", str(WEB_PORT)) == str(WEB_PORT)
    assert env.get("ENGAGEMENT_WEB_HOST", "0.0.0.0") == "0.0.0.0"
    assert host_path(worker, env["ENGAGEMENT_CONFIG"]) == CONFIG_EXAMPLE


def test_generator_service(services: dict[str, Any]) -> None:
    worker, generator = services["worker"], services["generator"]
    assert generator["command"] == ["generate", "--rate", "50"]
    assert "demo" in generator["profiles"]
    assert generator.get("image") == worker.get("image")
    assert generator.get("build") == worker.get("build")
    assert "profiles" not in worker


def test_bind_mounts_exist_and_named_volumes_are_declared(compose: dict[str, Any]) -> None:
    declared = (compose.get("volumes") or {}).keys()
    for name, service in compose["services"].items():
        for source, _ in bind_mounts(service):
            assert (ROOT / source).resolve().exists(), f"{name}: missing bind source {source}"
        for volume in service.get("volumes", []):
            source = volume["source"] if isinstance(volume, dict) else volume.split(":")[0]
            if not source.startswith((".", "/", "~")):
                assert source in declared, f"{name}: named volume {source} is not declared"


def test_published_ports(services: dict[str, Any]) -> None:
    expected = {
        "kafka": 9092,
        "worker": 6066,
        "prometheus": 9090,
        "grafana": 3000,
        "alertmanager": 9093,
        "alertmanager-bridge": BRIDGE_PORT,
    }
    for name, port in expected.items():
        assert published_ports(services[name]).get(port) == port, name


def test_prometheus_wiring(services: dict[str, Any]) -> None:
    prometheus = services["prometheus"]
    config_path = next(
        arg.split("=", 1)[1]
        for arg in prometheus.get("command", ["--config.file=/etc/prometheus/prometheus.yml"])
        if arg.startswith("--config.file=")
    )
    assert host_path(prometheus, config_path) == DEPLOY / "prometheus" / "prometheus.yml"
    config = load_yaml(DEPLOY / "prometheus" / "prometheus.yml")

    # Prometheus reads relative rule files from the config file's directory.
    config_dir = posixpath.dirname(config_path)
    rule_hosts = [
        host_path(prometheus, posixpath.join(config_dir, path)) for path in config["rule_files"]
    ]
    assert RULES_FILE in rule_hosts
    assert all(path is not None and path.is_file() for path in rule_hosts)

    jobs = {job["job_name"]: job for job in config["scrape_configs"]}
    worker_job = next(job for job in jobs.values() if "worker:6066" in str(job))
    assert worker_job["scrape_interval"] == "5s"
    assert worker_job.get("metrics_path", "/metrics") == "/metrics"
    for target in worker_job["static_configs"][0]["targets"]:
        host, port = target.split(":")
        assert host in services and int(port) == WEB_PORT

    alertmanagers = config["alerting"]["alertmanagers"][0]["static_configs"][0]["targets"]
    for target in alertmanagers:
        host, port = target.split(":")
        assert host in services and int(port) in published_ports(services[host])


def test_grafana_wiring(services: dict[str, Any]) -> None:
    grafana = services["grafana"]
    provisioning = host_path(grafana, "/etc/grafana/provisioning")
    assert provisioning == DEPLOY / "grafana" / "provisioning"

    datasources = load_yaml(provisioning / "datasources" / "prometheus.yml")["datasources"]
    prometheus = next(ds for ds in datasources if ds["type"] == "prometheus")
    url = urlsplit(prometheus["url"])
    assert url.hostname == "prometheus" and url.port == 9090

    providers = load_yaml(provisioning / "dashboards" / "dashboards.yml")["providers"]
    dashboard_dir = host_path(grafana, providers[0]["options"]["path"])
    assert dashboard_dir is not None
    # a file provider loads every dashboard JSON of its directory: both are provisioned
    for path in DASHBOARD_FILES:
        assert (dashboard_dir / path.name).resolve() == path
    assert set(dashboard_dir.resolve().glob("*.json")) == set(DASHBOARD_FILES)


def test_alertmanager_wiring(services: dict[str, Any]) -> None:
    service = services["alertmanager"]
    config_path = next(
        arg.split("=", 1)[1] for arg in service["command"] if arg.startswith("--config.file=")
    )
    assert host_path(service, config_path) == DEPLOY / "alertmanager" / "alertmanager.yml"
    # Slack's URL comes from a mounted file, never from the config itself
    config = load_yaml(AMTOOL_FILE)
    slack_file = config["global"]["slack_api_url_file"]
    mounted = host_path(service, slack_file)
    assert mounted is not None and mounted.is_file()


def test_alertmanager_bridge_service(services: dict[str, Any]) -> None:
    bridge, worker = services["alertmanager-bridge"], services["worker"]
    assert bridge["command"] == ["alertmanager-bridge"]
    assert bridge.get("image") == worker.get("image")
    assert bridge.get("build") == worker.get("build")
    env = env_of(bridge)
    assert host_path(bridge, env["ENGAGEMENT_CONFIG"]) == CONFIG_EXAMPLE
    for url in env["ENGAGEMENT_ALERTMANAGER_URL"].split(","):
        target = urlsplit(url.strip())
        assert target.scheme == "http" and target.hostname == "alertmanager"
        assert target.port in published_ports(services["alertmanager"])
    assert "alertmanager" in bridge["depends_on"]
    port = int(env["ENGAGEMENT_ALERTMANAGER_WEB_PORT"])
    assert port == BRIDGE_PORT and published_ports(bridge).get(port) == port
    assert env["ENGAGEMENT_WEB_HOST"] == "0.0.0.0"
    # the image's healthcheck probes the worker's port: the bridge brings its own
    probe = " ".join(bridge["healthcheck"]["test"])
    assert f"127.0.0.1:{port}/healthz" in probe
    compile(bridge["healthcheck"]["test"][-1], "<healthcheck>", "exec")


# --------------------------------------------------------------------------- Dockerfile


def dockerfile_instructions() -> list[tuple[str, str]]:
    text = re.sub(r"\\\n", " ", DOCKERFILE.read_text(encoding="utf-8"))
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, rest = line.partition(" ")
            out.append((keyword.upper(), rest.strip()))
    return out


def dockerfile_env() -> dict[str, str]:
    env = {}
    for keyword, rest in dockerfile_instructions():
        if keyword == "ENV":
            env.update(item.split("=", 1) for item in shlex.split(rest) if "=" in item)
    return env


def test_dockerfile() -> None:
    instructions = dockerfile_instructions()
    by_keyword: dict[str, list[str]] = {}
    for keyword, rest in instructions:
        by_keyword.setdefault(keyword, []).append(rest)

    assert by_keyword["FROM"] == ["python:3.11-slim"]
    user = by_keyword["USER"][-1].split(":")[0]
    assert user not in ("root", "0")
    assert any(re.search(r"\bpip install (--\S+ )*\.(\s|$)", run) for run in by_keyword["RUN"])
    assert json.loads(by_keyword["ENTRYPOINT"][-1]) == ["engagement"]
    assert json.loads(by_keyword["CMD"][-1]) == ["worker"]
    assert str(WEB_PORT) in by_keyword["EXPOSE"][-1].split()
    # The settings default binds 127.0.0.1, unreachable from outside the container.
    assert dockerfile_env()["ENGAGEMENT_WEB_HOST"] == "0.0.0.0"
    assert dockerfile_env().get("ENGAGEMENT_WEB_PORT", str(WEB_PORT)) == str(WEB_PORT)

    healthcheck = by_keyword["HEALTHCHECK"][-1]
    command = json.loads(healthcheck[healthcheck.index("CMD") + 3 :].strip())
    assert command[:2] == ["python", "-c"]
    assert "urllib" in command[2] and "/healthz" in command[2]
    compile(command[2], "<healthcheck>", "exec")

    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    assert "engagement" in pyproject["project"]["scripts"]


def test_dockerfile_copies_existing_paths() -> None:
    for keyword, rest in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and "--from" not in rest:
            *sources, _ = [arg for arg in rest.split() if not arg.startswith("--")]
            for source in sources:
                assert (ROOT / source).exists(), f"{keyword} source {source} missing"


# --------------------------------------------------------------------------- Prometheus rules


def test_rules_use_only_known_metrics(
    rules: list[dict[str, Any]], recorded: dict[str, frozenset[str]]
) -> None:
    for rule in rules:
        name = rule.get("record") or rule["alert"]
        expr = rule["expr"]
        assert brackets_balanced(expr), name
        assert not unknown_metrics(expr), f"{name}: {unknown_metrics(expr)}"
        assert not label_problems(expr, recorded), f"{name}: {label_problems(expr, recorded)}"
        assert set(_RECORDED_TOKEN.findall(expr)) <= recorded.keys(), name
        if "record" in rule:
            assert re.fullmatch(r"engagement:[a-z0-9_]+:[a-z0-9_]+", rule["record"])


def test_alerting_rules(rules: list[dict[str, Any]]) -> None:
    alerts = {rule["alert"]: rule for rule in rules if "alert" in rule}
    required = {
        "EngagementWorkerDown",
        "EngagementConsumerLagHigh",
        "EngagementDeadLetterRateHigh",
        "EngagementWatermarkLagHigh",
        "EngagementNoWindowsEmitted",
        "EngagementInternalMessagesSkipped",
    }
    assert required <= alerts.keys()
    for name, rule in alerts.items():
        assert rule["labels"]["severity"] in SEVERITIES, name
        assert rule["annotations"]["summary"], name
        assert re.fullmatch(r"\d+[smh]", rule.get("for", "0s")), name

    assert "up{" in alerts["EngagementWorkerDown"]["expr"]
    assert alerts["EngagementConsumerLagHigh"]["for"] == "5m"
    assert re.search(r">\s*1$", alerts["EngagementDeadLetterRateHigh"]["expr"].strip())
    watermark = alerts["EngagementWatermarkLagHigh"]["expr"]
    assert "engagement_watermark_lag_seconds" in watermark and "> 300" in watermark
    no_windows = alerts["EngagementNoWindowsEmitted"]["expr"]
    assert "engagement_windows_emitted_total[10m]" in no_windows
    assert "engagement_events_total" in no_windows
    skipped = alerts["EngagementInternalMessagesSkipped"]
    assert "engagement_internal_messages_skipped_total" in skipped["expr"]
    assert skipped["labels"]["severity"] == "critical"


# --------------------------------------------------------------------------- Grafana


# Per-account engagement series: on the dashboard by account, not the health one.
ACCOUNT_METRICS = frozenset(
    {
        *LATEST_GAUGES,
        "engagement_response_sla_alerts_total",
        "engagement_response_within_sla_ratio",
        "engagement_response_oldest_open_age_seconds",
        "engagement_account_open_inbound",
        "engagement_response_first_response_seconds",
    }
)
# Grafana's dashboard model, as @grafana/schema 13.2.3 (npm) types it: that package
# ships TypeScript types, no JSON Schema, so the checks below are written by hand after
# its `Dashboard`, `Panel`, `RowPanel`, `GridPos` and `FieldConfigSource` types. Its
# default dashboard is at schemaVersion 42; 39 is Grafana 10.3 and later.
SCHEMA_VERSIONS = range(39, 43)
GRID_COLUMNS = 24
_VARIABLE = re.compile(r"\$(?:\{(\w+)(?::\w+)?\}|(\w+))")


def all_panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Top-level panels and the panels of collapsed rows."""
    panels = list(dashboard["panels"])
    for panel in dashboard["panels"]:
        panels += panel.get("panels", [])
    return panels


def dashboard_targets(dashboard: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    return [
        (p["title"], t) for p in all_panels(dashboard) if p["type"] != "row" for t in p["targets"]
    ]


def annotation_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    out = []
    for a in dashboard.get("annotations", {}).get("list", []):
        for expr in {a.get("expr"), (a.get("target") or {}).get("expr")} - {None}:
            out.append((f"annotation {a['name']}", expr))
    return out


def variables_used(text: str) -> set[str]:
    names = {a or b for a, b in _VARIABLE.findall(text)}
    return {n for n in names if not n.startswith("__")}  # $__rate_interval etc.: built in


def overlapping(a: dict[str, int], b: dict[str, int]) -> bool:
    return (
        a["x"] < b["x"] + b["w"]
        and b["x"] < a["x"] + a["w"]
        and a["y"] < b["y"] + b["h"]
        and b["y"] < a["y"] + a["h"]
    )


def test_dashboard_checks_catch_mistakes() -> None:
    assert variables_used('x{a="$account", b="${size}"}[$__rate_interval]') == {"account", "size"}
    assert overlapping({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 11, "y": 7, "w": 2, "h": 2})
    assert not overlapping({"x": 0, "y": 0, "w": 12, "h": 8}, {"x": 12, "y": 0, "w": 12, "h": 8})
    assert not overlapping({"x": 0, "y": 0, "w": 24, "h": 1}, {"x": 0, "y": 1, "w": 6, "h": 4})


@pytest.mark.parametrize("path", DASHBOARD_FILES, ids=lambda p: p.name)
def test_dashboard_model(path: Path) -> None:
    """The structure Grafana's dashboard model requires (see SCHEMA_VERSIONS)."""
    dashboard = json.loads(path.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["title"]
    assert isinstance(dashboard["schemaVersion"], int)
    assert dashboard["schemaVersion"] in SCHEMA_VERSIONS
    panels = all_panels(dashboard)
    ids = [panel["id"] for panel in panels]
    assert all(isinstance(i, int) for i in ids) and len(ids) == len(set(ids))
    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    uids = {ds["uid"] for ds in datasources["datasources"]}
    for panel in panels:
        title = panel["title"]
        assert isinstance(panel["type"], str) and panel["type"], title
        grid = panel["gridPos"]
        assert all(isinstance(grid[k], int) for k in ("h", "w", "x", "y")), title
        assert grid["w"] >= 1 and grid["h"] >= 1 and grid["x"] >= 0 and grid["y"] >= 0, title
        assert grid["x"] + grid["w"] <= GRID_COLUMNS, title
        if panel["type"] == "row":
            assert grid["w"] == GRID_COLUMNS and grid["h"] == 1, title
            continue
        assert panel["datasource"]["uid"] in uids, title
        if "fieldConfig" in panel:
            field_config = panel["fieldConfig"]
            assert isinstance(field_config["defaults"], dict), title
            assert isinstance(field_config["overrides"], list), title
        targets = panel["targets"]
        assert targets, title
        refs = [t["refId"] for t in targets]
        assert len(refs) == len(set(refs)), title
        for target in targets:
            assert target["expr"].strip(), title
            assert target["datasource"]["uid"] in uids, title
    top = dashboard["panels"]  # panels inside a collapsed row take space only when opened
    for i, a in enumerate(top):
        for b in top[i + 1 :]:
            assert not overlapping(a["gridPos"], b["gridPos"]), (a["title"], b["title"])
    variables = [v["name"] for v in dashboard.get("templating", {}).get("list", [])]
    assert len(variables) == len(set(variables))
    for i, variable in enumerate(dashboard.get("templating", {}).get("list", [])):
        query = variable.get("query", "")
        query = query.get("query", "") if isinstance(query, dict) else query
        assert variables_used(query) <= set(variables[:i]), variable["name"]  # defined earlier
    texts = [(t, target["expr"]) for t, target in dashboard_targets(dashboard)]
    texts += annotation_exprs(dashboard)
    texts += [(p["title"], p["title"]) for p in panels]
    for title, text in texts:
        assert variables_used(text) <= set(variables), f"{title}: {variables_used(text)}"
    for annotation in dashboard.get("annotations", {}).get("list", []):
        assert annotation["name"] and isinstance(annotation["enable"], bool)
        if annotation.get("builtIn") != 1:
            assert annotation["datasource"]["uid"] in uids, annotation["name"]


def check_queries(
    dashboard: dict[str, Any], recorded: dict[str, frozenset[str]]
) -> tuple[set[str], str]:
    """Every expression names known metrics and labels; returns the metrics used and
    the expressions."""
    used: set[str] = set()
    exprs = []
    for title, target in dashboard_targets(dashboard):
        expr = target["expr"]
        legend_labels = set(re.findall(r"\{\{\s*(\w+)\s*\}\}", target.get("legendFormat", "")))
        assert legend_labels <= grouping_labels(expr), f"{title}: legend {legend_labels}"
        exprs.append((title, expr))
    exprs += annotation_exprs(dashboard)
    for title, expr in exprs:
        assert brackets_balanced(expr), title
        assert not unknown_metrics(expr), f"{title}: {unknown_metrics(expr)}"
        assert not label_problems(expr, recorded), f"{title}: {label_problems(expr, recorded)}"
        used |= metric_names(expr)
    return used, " ".join(expr for _, expr in exprs)


def test_dashboard_queries(
    dashboards: dict[str, dict[str, Any]], recorded: dict[str, frozenset[str]]
) -> None:
    health, health_exprs = check_queries(dashboards[DASHBOARD_FILE.name], recorded)
    accounts, _ = check_queries(dashboards[ACCOUNTS_DASHBOARD_FILE.name], recorded)
    assert health == METRICS.keys() - ACCOUNT_METRICS, METRICS.keys() - ACCOUNT_METRICS - health
    assert health | accounts == METRICS.keys(), METRICS.keys() - health - accounts
    assert accounts & ACCOUNT_METRICS == ACCOUNT_METRICS, ACCOUNT_METRICS - accounts
    for quantile in ("0.5", "0.99"):
        for histogram in HISTOGRAMS:
            assert re.search(
                rf"histogram_quantile\({quantile},[^;]*{histogram}_bucket", health_exprs
            )


def test_the_account_dashboard(dashboards: dict[str, dict[str, Any]]) -> None:
    """Templated by account from a label of the engagement gauges; every per-account
    selector is the chosen account; alerts as annotations; p50 and p90 of first responses."""
    dashboard = dashboards[ACCOUNTS_DASHBOARD_FILE.name]
    assert dashboard["uid"] != dashboards[DASHBOARD_FILE.name]["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    query = variables["account"]["query"]
    assert re.fullmatch(r"label_values\((engagement_\w+), account\)", query["query"])
    assert query["query"].split("(")[1].split(",")[0] in LATEST_GAUGES
    for title, target in dashboard_targets(dashboard):
        for token, matchers in _SELECTOR.findall(target["expr"]):
            if "account" in METRICS.get(base_metric(token), frozenset()):
                assert 'account="$account"' in matchers, title
    annotations = [a for a in dashboard["annotations"]["list"] if a.get("builtIn") != 1]
    assert any("engagement_alerts_total" in a["expr"] for a in annotations)
    exprs = " ".join(t["expr"] for _, t in dashboard_targets(dashboard))
    for quantile in ("0.5", "0.9"):
        assert (
            f"histogram_quantile({quantile}, sum by (le) (rate(engagement_first_response" in exprs
        )
    assert "replay" in dashboard["description"] and "engagement.windows" in dashboard["description"]


# --------------------------------------------------------------------------- Alertmanager


def test_alertmanager_config() -> None:
    config = load_yaml(DEPLOY / "alertmanager" / "alertmanager.yml")
    names = [receiver["name"] for receiver in config["receivers"]]
    assert len(names) == len(set(names))

    def receivers_of(route: dict[str, Any]) -> list[str]:
        found = [route["receiver"]] if "receiver" in route else []
        for child in route.get("routes", []):
            found += receivers_of(child)
        return found

    assert config["route"]["receiver"] in names
    assert set(receivers_of(config["route"])) <= set(names)
    webhooks = [
        hook["url"]
        for receiver in config["receivers"]
        for hook in receiver.get("webhook_configs", [])
    ]
    assert any(urlsplit(url).hostname == "127.0.0.1" for url in webhooks)

    # Slack receivers, their URL from a file (no secret in the config)
    slack = [c for r in config["receivers"] for c in r.get("slack_configs", [])]
    assert slack and all("api_url" not in c for c in slack)
    assert config["global"]["slack_api_url_file"].startswith("/")
    # routing by severity and by account; never grouping by every label (alert_id)
    matchers = [m for r in config["route"]["routes"] for m in r.get("matchers", [])]
    assert any(m.startswith("severity=") for m in matchers)
    assert any(m.startswith("account=") for m in matchers)
    assert "..." not in config["route"]["group_by"]
    assert {"alertname", "account", "channel"} <= set(config["route"]["group_by"])
    assert "alert_id" not in config["route"]["group_by"]
    # inhibition: a breach mutes its warnings; critical mutes warning of the same alert kind
    rules = config["inhibit_rules"]
    breach = [r for r in rules if r["source_matchers"] == ['alertname="response_sla_breach"']]
    assert breach and breach[0]["target_matchers"] == ['alertname="response_sla_warning"']
    assert set(breach[0]["equal"]) == {"account", "channel"}
    critical = [
        r
        for r in rules
        if "account" in r["equal"] and 'severity="critical"' in r["source_matchers"]
    ]
    assert critical and set(critical[0]["equal"]) == {"alertname", "account", "channel", "metric"}
    for rule in rules:  # alert_id differs between any two alerts: never compared
        assert "alert_id" not in rule["equal"]


def test_alertmanager_config_passes_amtool() -> None:
    """`amtool check-config` (Debian's prometheus-alertmanager; `make test` installs it as
    root): the config, its receivers, routes, inhibit rules and templates."""
    amtool = shutil.which("amtool")
    if amtool is None:
        pytest.skip(
            "amtool not found (make test installs it: apt-get install prometheus-alertmanager)"
        )
    done = subprocess.run(
        [amtool, "check-config", str(AMTOOL_FILE)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "SUCCESS" in output and "3 inhibit rules" in output, output


# --------------------------------------------------------------------------- Kubernetes


@pytest.fixture(scope="module")
def k8s() -> dict[str, list[dict[str, Any]]]:
    by_kind: dict[str, list[dict[str, Any]]] = {}
    for path in sorted(K8S.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")):
            if doc:
                by_kind.setdefault(doc["kind"], []).append(doc)
    return by_kind


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


def deployment_named(k8s: dict[str, list[dict[str, Any]]], name: str) -> dict[str, Any]:
    (found,) = [d for d in k8s["Deployment"] if d["metadata"]["name"] == name]
    return found


def test_k8s_worker_deployment(k8s: dict[str, list[dict[str, Any]]]) -> None:
    deployment = deployment_named(k8s, "engagement-worker")
    spec = deployment["spec"]
    assert spec["replicas"] == 2
    text = (K8S / "deployment.yaml").read_text(encoding="utf-8").lower()
    assert "partition" in text and "idle" in text, "note that extra replicas idle"
    pod_labels = spec["template"]["metadata"]["labels"]
    assert matches(spec["selector"]["matchLabels"], pod_labels)
    assert spec["template"]["spec"]["securityContext"]["runAsNonRoot"] is True

    for container in spec["template"]["spec"]["containers"]:
        ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            assert get["path"] == "/healthz", probe
            assert ports.get(get["port"], get["port"]) == WEB_PORT, probe
        requests = container["resources"]["requests"]
        assert requests.get("cpu") and requests.get("memory")
        env = {item["name"]: item.get("value") for item in container["env"]}
        assert urlsplit(env["ENGAGEMENT_BROKER"]).scheme == "kafka"
        assert env.get("ENGAGEMENT_WEB_PORT", str(WEB_PORT)) == str(WEB_PORT)
        assert env.get("ENGAGEMENT_WEB_HOST", "0.0.0.0") == "0.0.0.0"


def test_k8s_service_pdb_and_config(k8s: dict[str, list[dict[str, Any]]]) -> None:
    deployment = deployment_named(k8s, "engagement-worker")
    pod = deployment["spec"]["template"]
    (container,) = pod["spec"]["containers"]
    container_ports = {p.get("name"): p["containerPort"] for p in container["ports"]}

    (service,) = k8s["Service"]
    assert matches(service["spec"]["selector"], pod["metadata"]["labels"])
    for port in service["spec"]["ports"]:
        target = port.get("targetPort", port["port"])
        assert container_ports.get(target, target) == WEB_PORT

    (pdb,) = k8s["PodDisruptionBudget"]
    assert matches(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert pdb["spec"].get("minAvailable", 0) < deployment["spec"]["replicas"]

    (configmap,) = k8s["ConfigMap"]
    volume = next(v for v in pod["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert env["ENGAGEMENT_CONFIG"] == f"{mount['mountPath']}/config.toml"
    assert "config.toml" in configmap["data"]

    in_cluster = tomllib.loads(configmap["data"]["config.toml"])
    example = tomllib.loads(CONFIG_EXAMPLE.read_text(encoding="utf-8"))
    assert {**in_cluster, "broker": None} == {**example, "broker": None}


def test_k8s_alertmanager_bridge(k8s: dict[str, list[dict[str, Any]]]) -> None:
    deployment = deployment_named(k8s, "engagement-alertmanager-bridge")
    assert {d["metadata"]["name"] for d in k8s["Deployment"]} == {
        "engagement-worker",
        "engagement-alertmanager-bridge",
    }
    spec = deployment["spec"]
    pod = spec["template"]
    assert matches(spec["selector"]["matchLabels"], pod["metadata"]["labels"])
    # the worker's Service and PodDisruptionBudget do not select the bridge
    worker = deployment_named(k8s, "engagement-worker")["spec"]["template"]["metadata"]
    assert pod["metadata"]["labels"] != worker["labels"]
    (service,) = k8s["Service"]
    (pdb,) = k8s["PodDisruptionBudget"]
    assert not matches(service["spec"]["selector"], pod["metadata"]["labels"])
    assert not matches(pdb["spec"]["selector"]["matchLabels"], pod["metadata"]["labels"])
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

    (container,) = pod["spec"]["containers"]
    assert container["args"] == ["alertmanager-bridge"]
    env = {item["name"]: item.get("value") for item in container["env"]}
    assert urlsplit(env["ENGAGEMENT_BROKER"]).scheme == "kafka"
    assert all(
        urlsplit(u.strip()).scheme in ("http", "https")
        for u in env["ENGAGEMENT_ALERTMANAGER_URL"].split(",")
    )
    port = int(env["ENGAGEMENT_ALERTMANAGER_WEB_PORT"])
    assert env["ENGAGEMENT_WEB_HOST"] == "0.0.0.0"
    ports = {p.get("name"): p["containerPort"] for p in container["ports"]}
    for probe in ("readinessProbe", "livenessProbe"):
        get = container[probe]["httpGet"]
        assert get["path"] == "/healthz", probe
        assert ports.get(get["port"], get["port"]) == port, probe
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port)
    requests = container["resources"]["requests"]
    assert requests.get("cpu") and requests.get("memory")
    (configmap,) = k8s["ConfigMap"]
    volume = next(v for v in pod["spec"]["volumes"] if "configMap" in v)
    assert volume["configMap"]["name"] == configmap["metadata"]["name"]
    mount = next(m for m in container["volumeMounts"] if m["name"] == volume["name"])
    assert env["ENGAGEMENT_CONFIG"] == f"{mount['mountPath']}/config.toml"


def test_k8s_kustomization_lists_every_manifest() -> None:
    kustomization = load_yaml(K8S / "kustomization.yaml")
    resources = set(kustomization["resources"])
    manifests = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert resources == manifests


# --------------------------------------------------------------------------- example config


def test_config_example() -> None:
    config = tomllib.loads(CONFIG_EXAMPLE.read_text(encoding="utf-8"))
    assert urlsplit(config["broker"]).scheme == "kafka"
    assert isinstance(config["topic_prefix"], str)
    assert config["partitions"] >= 1 and config["web_port"] == WEB_PORT

    windows = config["windows"]
    sizes = windows["sizes_s"]
    assert sizes and all(isinstance(s, int) and s > 0 for s in sizes)
    for key in ("allowed_lateness_s", "grace_s", "idle_after_s"):
        assert windows[key] >= 0, key

    assert config["weights"].keys() == KINDS
    assert all(isinstance(w, int | float) for w in config["weights"].values())
    bases = {"followers", "reach", "impressions"}
    assert config["rates"]["default_basis"] in bases
    assert set(config["rates"]["by_account"].values()) <= bases

    assert all(isinstance(a, str) for a in config["metrics"]["accounts"])
    assert config["metrics"]["top_accounts"] >= 0
    assert config["dedup"]["horizon_s"] > 0 and config["dedup"]["max_ids_per_partition"] > 0
    assert config["limits"]["max_message_bytes"] > 0 and config["limits"]["max_future_s"] > 0

    thresholds = config["alerts"]["thresholds"]
    assert len(thresholds) >= 2
    assert len({rule["name"] for rule in thresholds}) == len(thresholds)
    metrics = {"engagement_rate", "weighted_engagement", "volume"} | {f"count.{k}" for k in KINDS}
    for rule in thresholds:
        assert rule["metric"] in metrics, rule["name"]
        assert rule["op"] in ("above", "below"), rule["name"]
        assert isinstance(rule["value"], int | float), rule["name"]
        assert rule["window_s"] in sizes, rule["name"]
        assert rule["severity"] in SEVERITIES, rule["name"]
        assert rule["cooldown_s"] >= 0, rule["name"]
        assert all(isinstance(a, str) for a in rule.get("accounts", ["*"])), rule["name"]
    assert any(
        rule["metric"] == "volume" and rule["op"] == "below" and rule.get("accounts") == ["*"]
        for rule in thresholds
    )


def test_the_example_detection_defaults_are_the_built_in_ones() -> None:
    """The example says what the defaults are; it must not quietly differ."""
    detector = dataclasses.asdict(DetectorSettings())
    for path in (CONFIG_EXAMPLE, CONFIGMAP):
        text = path.read_text(encoding="utf-8")
        if path == CONFIGMAP:
            text = yaml.safe_load(text)["data"]["config.toml"]
        shown = tomllib.loads(text)["detection"]
        fields = {k: v for k, v in shown.items() if k in detector}
        assert len(fields) >= 15, path
        assert fields == {k: detector[k] for k in fields}, path


def test_config_files_load_with_the_settings_loader(tmp_path: Path) -> None:
    example = config_load.load(CONFIG_EXAMPLE, env={})
    assert len(example.thresholds) == 2

    (configmap,) = [
        doc
        for doc in yaml.safe_load_all((K8S / "configmap.yaml").read_text(encoding="utf-8"))
        if doc and doc["kind"] == "ConfigMap"
    ]
    in_cluster = tmp_path / "config.toml"
    in_cluster.write_text(configmap["data"]["config.toml"], encoding="utf-8")
    assert config_load.load(in_cluster, env={}).thresholds == example.thresholds

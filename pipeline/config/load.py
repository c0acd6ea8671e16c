"""Settings from a TOML file and ENGAGEMENT_* variables.

Precedence: defaults < file named by ENGAGEMENT_CONFIG < environment variables.
Every problem is reported at once (SettingsError).
"""

from __future__ import annotations

import os
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from pipeline.config.checks import validate
from pipeline.config.settings import (
    ALERT_METRICS,
    SEVERITIES,
    Secret,
    Settings,
    SettingsError,
    ThresholdRule,
)
from pipeline.detection import settings as detection_settings
from pipeline.model.events import KINDS
from pipeline.responses import settings as response_settings


def _flag(text: str) -> bool:
    """An environment flag: true/false, 1/0, yes/no or on/off, any case."""
    word = text.strip().lower()
    if word in ("true", "1", "yes", "on"):
        return True
    if word in ("false", "0", "no", "off"):
        return False
    raise ValueError(text)


def _urls(text: str) -> tuple[str, ...]:
    """A comma-separated list of URLs."""
    return tuple(u.strip() for u in text.split(",") if u.strip())


# Environment variables: name -> (field, parser)
_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ENGAGEMENT_BROKER": ("broker", str),
    "ENGAGEMENT_TOPIC_PREFIX": ("topic_prefix", str),
    "ENGAGEMENT_PARTITIONS": ("partitions", int),
    "ENGAGEMENT_WEB_PORT": ("web_port", int),
    "ENGAGEMENT_WEB_HOST": ("web_host", str),
    "ENGAGEMENT_APP_ID": ("app_id", str),
    "ENGAGEMENT_DATA_DIR": ("data_dir", str),
    "ENGAGEMENT_SESSION_TIMEOUT_S": ("session_timeout_s", float),
    "ENGAGEMENT_REBALANCE_TIMEOUT_S": ("rebalance_timeout_s", float),
    "ENGAGEMENT_HEARTBEAT_INTERVAL_S": ("heartbeat_interval_s", float),
    "ENGAGEMENT_COMMIT_INTERVAL_S": ("commit_interval_s", float),
    "ENGAGEMENT_IDLE_AFTER_S": ("idle_after_s", int),
    "ENGAGEMENT_ALLOWED_LATENESS_S": ("allowed_lateness_s", int),
    "ENGAGEMENT_GRACE_S": ("grace_s", int),
    "ENGAGEMENT_PROCESSING_GUARANTEE": ("processing_guarantee", str),
    "ENGAGEMENT_SECURITY_PROTOCOL": ("security_protocol", str),
    "ENGAGEMENT_SASL_MECHANISM": ("sasl_mechanism", str),
    "ENGAGEMENT_SASL_USERNAME": ("sasl_username", str),
    "ENGAGEMENT_SASL_PASSWORD": ("sasl_password", Secret),
    "ENGAGEMENT_SSL_CAFILE": ("ssl_cafile", str),
    "ENGAGEMENT_SSL_CERTFILE": ("ssl_certfile", str),
    "ENGAGEMENT_SSL_KEYFILE": ("ssl_keyfile", str),
    "ENGAGEMENT_SSL_KEY_PASSWORD": ("ssl_key_password", Secret),
    "ENGAGEMENT_SSL_CHECK_HOSTNAME": ("ssl_check_hostname", _flag),
    "ENGAGEMENT_EARLY_ALERTS": ("early_alerts", _flag),
    "ENGAGEMENT_ALERTMANAGER_URL": ("alertmanager_urls", _urls),
    "ENGAGEMENT_ALERTMANAGER_RESOLVE_TIMEOUT_S": ("alertmanager_resolve_timeout_s", int),
    "ENGAGEMENT_ALERTMANAGER_GROUP_ID": ("alertmanager_group_id", str),
    "ENGAGEMENT_ALERTMANAGER_BATCH_MAX": ("alertmanager_batch_max", int),
    "ENGAGEMENT_ALERTMANAGER_TIMEOUT_S": ("alertmanager_timeout_s", float),
    "ENGAGEMENT_ALERTMANAGER_BACKOFF_MAX_S": ("alertmanager_backoff_max_s", float),
    "ENGAGEMENT_ALERTMANAGER_WEB_PORT": ("alertmanager_web_port", int),
}
_PARSER_NAMES: dict[Callable[[str], Any], str] = {_flag: "true or false", Secret: "str"}

# TOML layout: (section path, key) -> field name
_TOML_FIELDS: dict[str, str] = {
    "broker": "broker",
    "topic_prefix": "topic_prefix",
    "partitions": "partitions",
    "web_port": "web_port",
    "web_host": "web_host",
    "app_id": "app_id",
    "data_dir": "data_dir",
    "session_timeout_s": "session_timeout_s",
    "rebalance_timeout_s": "rebalance_timeout_s",
    "heartbeat_interval_s": "heartbeat_interval_s",
    "commit_interval_s": "commit_interval_s",
    "processing_guarantee": "processing_guarantee",
    "security.protocol": "security_protocol",
    "security.sasl_mechanism": "sasl_mechanism",
    "security.sasl_username": "sasl_username",
    "security.sasl_password": "sasl_password",
    "security.ssl_cafile": "ssl_cafile",
    "security.ssl_certfile": "ssl_certfile",
    "security.ssl_keyfile": "ssl_keyfile",
    "security.ssl_key_password": "ssl_key_password",
    "security.ssl_check_hostname": "ssl_check_hostname",
    "windows.sizes_s": "window_sizes_s",
    "windows.allowed_lateness_s": "allowed_lateness_s",
    "windows.grace_s": "grace_s",
    "windows.idle_after_s": "idle_after_s",
    "ingest.batch_max": "batch_max",
    "ingest.batch_within_s": "batch_within_s",
    "ingest.progress_interval_s": "progress_interval_s",
    "ingest.progress_stale_s": "progress_stale_s",
    "rates.default_basis": "default_rate_basis",
    "metrics.accounts": "metrics_accounts",
    "metrics.channels": "metrics_channels",
    "metrics.top_accounts": "metrics_top_accounts",
    "dedup.horizon_s": "dedup_horizon_s",
    "dedup.max_ids_per_partition": "dedup_max_ids",
    "limits.max_message_bytes": "max_message_bytes",
    "limits.max_future_s": "max_future_s",
    "alerts.early": "early_alerts",
    "alertmanager.urls": "alertmanager_urls",
    "alertmanager.resolve_timeout_s": "alertmanager_resolve_timeout_s",
    "alertmanager.group_id": "alertmanager_group_id",
    "alertmanager.batch_max": "alertmanager_batch_max",
    "alertmanager.timeout_s": "alertmanager_timeout_s",
    "alertmanager.backoff_max_s": "alertmanager_backoff_max_s",
    "alertmanager.web_port": "alertmanager_web_port",
}
_SECTIONS = {
    *("windows", "ingest", "rates", "metrics", "dedup", "limits", "weights", "alerts"),
    "security",
    "alertmanager",
}
_RULE_KEYS = {"name", "metric", "op", "value", "accounts", "window_s", "severity", "cooldown_s"}


def _flatten(doc: Mapping[str, Any], problems: list[tuple[str, str]]) -> dict[str, Any]:
    flat: dict[str, Any] = {}
    for key, value in doc.items():
        if key in _SECTIONS:
            if not isinstance(value, dict):
                problems.append((key, "must be a table"))
                continue
            for sub, subval in value.items():
                path = f"{key}.{sub}"
                if (
                    key in ("weights", "alerts")
                    or (key == "rates" and sub == "by_account")
                    or path in _TOML_FIELDS
                ):
                    flat[path] = subval
                else:
                    problems.append((path, "unknown key"))
        elif key in _TOML_FIELDS:
            flat[key] = value
        else:
            problems.append((key, "unknown key"))
    return flat


# Element type of the list-valued settings
_LIST_OF: dict[str, type] = {
    "window_sizes_s": int,
    "metrics_accounts": str,
    "alertmanager_urls": str,
}


def _check_type(path: str, value: Any, want: Any, problems: list[tuple[str, str]]) -> Any:
    if want is float and type(value) in (int, float):
        return float(value)
    if want is Secret:
        if type(value) is str:
            return Secret(value)
        # Never echo the value: it is a password.
        problems.append((path, f"must be str, got {type(value).__name__}"))
        return None
    if want is tuple:
        elem = _LIST_OF[_TOML_FIELDS[path]]
        if isinstance(value, list) and all(type(v) is elem for v in value):
            return tuple(value)
        noun = "integers" if elem is int else "strings"
        problems.append((path, f"must be a list of {noun}"))
        return None
    if type(value) is not want:
        problems.append((path, f"must be {want.__name__}, got {type(value).__name__}"))
        return None
    return value


def _rules(raw: Any, problems: list[tuple[str, str]]) -> tuple[ThresholdRule, ...]:
    if not isinstance(raw, list):
        problems.append(("alerts.thresholds", "must be an array of tables"))
        return ()
    rules = []
    for i, item in enumerate(raw):
        path = f"alerts.thresholds[{i}]"
        if not isinstance(item, dict):
            problems.append((path, "must be a table"))
            continue
        for k in item:
            if k not in _RULE_KEYS:
                problems.append((f"{path}.{k}", "unknown key"))
        n_before = len(problems)
        for req in ("name", "metric", "op", "value"):
            if req not in item:
                problems.append((f"{path}.{req}", "required"))
        metric = item.get("metric", "")
        kind_ok = isinstance(metric, str) and metric.startswith("count.") and metric[6:] in KINDS
        if "metric" in item and metric not in ALERT_METRICS and not kind_ok:
            problems.append(
                (f"{path}.metric", f"must be one of {', '.join(ALERT_METRICS)} or count.<kind>")
            )
        if "op" in item and item["op"] not in ("above", "below"):
            problems.append((f"{path}.op", "must be 'above' or 'below'"))
        if "value" in item and type(item["value"]) not in (int, float):
            problems.append((f"{path}.value", "must be a number"))
        if item.get("severity", "warning") not in SEVERITIES:
            problems.append((f"{path}.severity", f"must be one of {', '.join(SEVERITIES)}"))
        for k in ("window_s", "cooldown_s"):
            if k in item and (type(item[k]) is not int or item[k] < 0):
                problems.append((f"{path}.{k}", "must be a non-negative integer"))
        accounts = item.get("accounts", ["*"])
        if not isinstance(accounts, list) or not all(isinstance(a, str) for a in accounts):
            problems.append((f"{path}.accounts", "must be a list of strings"))
        if len(problems) == n_before:
            rules.append(
                ThresholdRule(
                    name=str(item["name"]),
                    metric=metric,
                    op=item["op"],
                    value=float(item["value"]),
                    accounts=tuple(accounts),
                    window_s=item.get("window_s", 300),
                    severity=item.get("severity", "warning"),
                    cooldown_s=item.get("cooldown_s", 900),
                )
            )
    return tuple(rules)


def load(path: str | Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Build settings from a TOML file and the environment; raise SettingsError listing
    every problem at once."""
    env = os.environ if env is None else env
    problems: list[tuple[str, str]] = []
    values: dict[str, Any] = {}
    path = path if path is not None else env.get("ENGAGEMENT_CONFIG")
    defaults = Settings()
    if path:
        try:
            doc = tomllib.loads(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SettingsError([(str(path), "file not found")]) from None
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            raise SettingsError([(str(path), f"not valid TOML: {exc}")]) from None
        responses = response_settings.parse(
            doc.pop("responses", None), doc.pop("calendars", None), problems
        )
        if responses is not None:
            values["responses"] = responses
        detection = detection_settings.parse(doc.pop("detection", None), problems)
        if detection is not None:
            values["detection"] = detection
        flat = _flatten(doc, problems)
        weights = dict(defaults.weights)
        for key, value in flat.items():
            if key.startswith("weights."):
                weights[key[8:]] = value
            elif key == "rates.by_account":
                if isinstance(value, dict):
                    values["rate_basis_by_account"] = dict(value)
                else:
                    problems.append((key, "must be a table of account = basis"))
            elif key.startswith("alerts.") and key not in _TOML_FIELDS:
                if key == "alerts.thresholds":
                    values["thresholds"] = _rules(value, problems)
                else:
                    problems.append((key, "unknown key"))
            else:
                name = _TOML_FIELDS[key]
                want = type(getattr(defaults, name))
                checked = _check_type(key, value, want, problems)
                if checked is not None:
                    values[name] = checked
        values["weights"] = weights
    for var, (name, parser) in _ENV.items():
        if var in env:
            try:
                values[name] = parser(env[var])
            except ValueError:
                expected = _PARSER_NAMES.get(parser) or getattr(parser, "__name__", "valid")
                problems.append((var, f"must be {expected}"))
    settings = Settings(**values)
    validate(settings, problems)
    if problems:
        raise SettingsError(problems)
    return settings

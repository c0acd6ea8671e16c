"""The rules a configuration must satisfy, checked after it is read; every
problem is reported as (path, reason), all at once."""

from __future__ import annotations

import re
from pathlib import Path

from pipeline.config.settings import (
    PROCESSING_GUARANTEES,
    RATE_BASES,
    SASL_MECHANISMS,
    SECURITY_PROTOCOLS,
    Settings,
)
from pipeline.model.events import KINDS

_BROKER_RE = re.compile(r"^kafka://[A-Za-z0-9_.\-]+:\d{1,5}(,[A-Za-z0-9_.\-]+:\d{1,5})*$")


def validate(s: Settings, problems: list[tuple[str, str]]) -> None:
    if not _BROKER_RE.match(s.broker):
        problems.append(("broker", "must look like kafka://host:port"))
    if not 1 <= s.partitions <= 1024:
        problems.append(("partitions", "must be in 1..1024"))
    if not 0 <= s.web_port <= 65535:
        problems.append(("web_port", "must be a TCP port (0..65535)"))
    if not s.window_sizes_s or any(w <= 0 or 86400 % w for w in s.window_sizes_s):
        problems.append(("windows.sizes_s", "each size must be a positive divisor of 86400"))
    elif len(set(s.window_sizes_s)) != len(s.window_sizes_s):
        problems.append(("windows.sizes_s", "sizes must be distinct"))
    for name in ("allowed_lateness_s", "grace_s", "idle_after_s"):
        if getattr(s, name) < 0:
            problems.append((f"windows.{name.removesuffix('_s')}_s", "must be >= 0"))
    for kind, weight in s.weights.items():
        if kind not in KINDS:
            problems.append((f"weights.{kind}", f"unknown kind (one of {', '.join(KINDS)})"))
        elif type(weight) not in (int, float):
            problems.append((f"weights.{kind}", "must be a number"))
    if s.default_rate_basis not in RATE_BASES:
        problems.append(("rates.default_basis", f"must be one of {', '.join(RATE_BASES)}"))
    for acct, basis in s.rate_basis_by_account.items():
        if basis not in RATE_BASES:
            problems.append((f"rates.by_account.{acct}", f"must be one of {', '.join(RATE_BASES)}"))
    if s.window_sizes_s and s.dedup_horizon_s < s.max_window_s + s.grace_s + s.allowed_lateness_s:
        problems.append(
            ("dedup.horizon_s", "must cover the largest window plus lateness and grace")
        )
    names = [rule.name for rule in s.thresholds]
    for name in sorted({n for n in names if names.count(n) > 1}):
        problems.append((f"alerts.thresholds.{name}", "duplicate rule name"))
    for rule in s.thresholds:
        if rule.window_s not in s.window_sizes_s:
            problems.append((f"alerts.thresholds.{rule.name}.window_s", "not a configured size"))
    if s.progress_interval_s <= 0:
        problems.append(("ingest.progress_interval_s", "must be > 0"))
    if s.batch_within_s <= 0:
        problems.append(("ingest.batch_within_s", "must be > 0"))
    if s.progress_stale_s < s.session_timeout_s + s.rebalance_timeout_s:
        problems.append(
            ("ingest.progress_stale_s", "must cover session_timeout_s + rebalance_timeout_s")
        )
    if not 0 < s.max_future_s <= 86400:
        problems.append(("limits.max_future_s", "must be in 1..86400"))
    if s.batch_max < 1:
        problems.append(("ingest.batch_max", "must be >= 1"))
    if s.metrics_top_accounts < 0:
        problems.append(("metrics.top_accounts", "must be >= 0"))
    if s.dedup_max_ids < 1:
        problems.append(("dedup.max_ids_per_partition", "must be >= 1"))
    if s.max_message_bytes < 1:
        problems.append(("limits.max_message_bytes", "must be >= 1"))
    if s.processing_guarantee == "exactly_once":
        # Measured on Apache Kafka 4.1: faust 0.15.3's transactional mode crashed the
        # worker and lost events (README, "Processing guarantee").
        problems.append(
            (
                "processing_guarantee",
                "exactly_once is not supported (faust's transactions do not cover the "
                "router's repartitioning); at_least_once gives idempotent outputs",
            )
        )
    elif s.processing_guarantee not in PROCESSING_GUARANTEES:
        problems.append(
            ("processing_guarantee", f"must be one of {', '.join(PROCESSING_GUARANTEES)}")
        )
    _security(s, problems)
    _alertmanager(s, problems)


_AM_URL_RE = re.compile(r"^https?://[A-Za-z0-9_.\-]+(:\d{1,5})?(/[^?#\s]*)?$")


def _alertmanager(s: Settings, problems: list[tuple[str, str]]) -> None:
    if not s.alertmanager_urls:
        problems.append(("alertmanager.urls", "at least one Alertmanager URL is needed"))
    for url in s.alertmanager_urls:
        if not _AM_URL_RE.match(url):
            problems.append(
                ("alertmanager.urls", f"{url!r} must look like http://host:port[/prefix]")
            )
    if s.alertmanager_resolve_timeout_s < 1:
        problems.append(("alertmanager.resolve_timeout_s", "must be >= 1"))
    if s.alertmanager_batch_max < 1:
        problems.append(("alertmanager.batch_max", "must be >= 1"))
    if s.alertmanager_timeout_s <= 0:
        problems.append(("alertmanager.timeout_s", "must be > 0"))
    if s.alertmanager_backoff_max_s <= 0:
        problems.append(("alertmanager.backoff_max_s", "must be > 0"))
    if not 0 <= s.alertmanager_web_port <= 65535:
        problems.append(("alertmanager.web_port", "must be a TCP port (0..65535)"))


def _security(s: Settings, problems: list[tuple[str, str]]) -> None:
    def bad(name: str, reason: str) -> None:
        path = f"security.{name}"
        if all(p != path for p, _ in problems):  # one problem per path: a type error first
            problems.append((path, reason))

    if s.security_protocol not in SECURITY_PROTOCOLS:
        bad("protocol", f"must be one of {', '.join(SECURITY_PROTOCOLS)}")
        return
    proto = f"security.protocol {s.security_protocol}"
    sasl = [s.sasl_mechanism, s.sasl_username, s.sasl_password]
    for name, value in zip(("sasl_mechanism", "sasl_username", "sasl_password"), sasl, strict=True):
        if value and not s.uses_sasl:  # credentials that would be silently ignored
            bad(name, f"set, but {proto} does not use SASL (use SASL_PLAINTEXT or SASL_SSL)")
        elif s.uses_sasl and not value:
            bad(name, f"required with {proto}")
        elif name == "sasl_mechanism" and value and value not in SASL_MECHANISMS:
            bad(name, f"must be one of {', '.join(SASL_MECHANISMS)}")
    tls = [s.ssl_cafile, s.ssl_certfile, s.ssl_keyfile, s.ssl_key_password]
    names = ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_key_password")
    for name, value in zip(names, tls, strict=True):
        if value and not s.uses_tls:
            bad(name, f"set, but {proto} does not use TLS (use SSL or SASL_SSL)")
        elif isinstance(value, str) and value and not Path(value).is_file():
            bad(name, f"no such file: {value}")
    if not s.uses_tls:
        return
    if s.ssl_certfile and not s.ssl_keyfile:
        bad("ssl_keyfile", "required with ssl_certfile (for one PEM holding both, name it twice)")
    if s.ssl_keyfile and not s.ssl_certfile:
        bad("ssl_certfile", "required with ssl_keyfile")
    if s.ssl_key_password and not s.ssl_keyfile:
        bad("ssl_key_password", "set, but there is no ssl_keyfile")

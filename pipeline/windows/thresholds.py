"""Fixed-threshold alerts on final windows, with an event-time cooldown.

The cooldown is measured in event time (window starts), so a replay alerts
exactly as the live run did; ids and records are `pipeline.model.records`'.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, MutableMapping
from datetime import datetime
from typing import Any

from pipeline.config.settings import ThresholdRule
from pipeline.model import records
from pipeline.windows.arithmetic import rfc3339


def observed_value(window: dict[str, Any], metric: str) -> float | None:
    if metric == "volume":
        return float(sum(n for k, n in window["counts"].items() if k != "reply"))
    if metric.startswith("count."):
        return float(window["counts"].get(metric[6:], 0))
    value = window.get(metric)
    return None if value is None else float(value)


def _fmt_size(size_s: int) -> str:
    return f"{size_s // 60} min" if size_s % 60 == 0 else f"{size_s} s"


def evaluate(
    window: dict[str, Any],
    window_start_ms: int,
    window_end_ms: int,
    rules: Iterable[ThresholdRule],
    cooldowns: MutableMapping[str, int],
    now: datetime | None = None,
) -> list[dict[str, Any]]:
    """Alerts raised by one final window. Updates `cooldowns` (rule|account|channel ->
    window end of the last alert)."""
    account, channel, size_s = window["account_id"], window["channel"], window["size_seconds"]
    alerts = []
    for rule in rules:
        if rule.window_s != size_s or not rule.applies_to(account):
            continue
        observed = observed_value(window, rule.metric)
        if observed is None:
            continue
        breached = observed > rule.value if rule.op == "above" else observed < rule.value
        if not breached or cooling(rule, account, channel, window_start_ms, cooldowns):
            continue
        cooldowns[cooldown_key(rule, account, channel)] = window_end_ms
        alerts.append(
            build(rule, account, channel, window_start_ms, window_end_ms, observed, now=now)
        )
    return alerts


def cooldown_key(rule: ThresholdRule, account: str, channel: str) -> str:
    return f"{rule.name}|{account}|{channel}"


def cooling(
    rule: ThresholdRule, account: str, channel: str, start_ms: int, cooldowns: Mapping[str, int]
) -> bool:
    """Whether an earlier alert of the rule silences the window starting at `start_ms`."""
    last_end = cooldowns.get(cooldown_key(rule, account, channel))
    return last_end is not None and start_ms < last_end + rule.cooldown_s * 1000


def alert_id(rule: ThresholdRule, account: str, channel: str, start_ms: int) -> str:
    return records.alert_id("threshold", rule.name, account, channel, rule.window_s, start_ms)


def build(
    rule: ThresholdRule,
    account: str,
    channel: str,
    start_ms: int,
    end_ms: int,
    observed: float,
    *,
    early: bool = False,
    now: datetime | None = None,
) -> dict[str, Any]:
    """The alert.v1 record of a rule's alert on one window; `early`: raised while the
    window was open, `observed` being its value then."""
    size_s = rule.window_s
    start, end = rfc3339(start_ms), rfc3339(end_ms)
    verb = "reached" if early else "was"
    tail = " while the window was still open" if early else ""
    extra: dict[str, Any] = {"early": True} if early else {}
    return records.alert(
        ident=alert_id(rule, account, channel, start_ms),
        type=f"threshold_{rule.op}",
        severity=rule.severity,
        account_id=account,
        channel=channel,
        metric=rule.metric,
        window_start=start,
        window_end=end,
        observed=observed,
        expected=None,
        threshold=rule.value,
        message=(
            f"{rule.metric} {verb} {observed:.6g} on {channel} in the {_fmt_size(size_s)} "
            f"window from {start}, {rule.op} the threshold {rule.value:.6g} (rule "
            f"'{rule.name}'){tail}"
        ),
        now=now,
        **extra,
    )

"""Fixed-threshold alerts on final windows, with an event-time cooldown.

The cooldown is measured in event time (window starts), so a replay alerts
exactly as the live run did; ids and records are `pipeline.model.records`'.
"""

from __future__ import annotations

from collections.abc import Iterable, MutableMapping
from datetime import datetime
from typing import Any

from pipeline.config.settings import ThresholdRule
from pipeline.model import records


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
        if not breached:
            continue
        key = f"{rule.name}|{account}|{channel}"
        last_end = cooldowns.get(key)
        if last_end is not None and window_start_ms < last_end + rule.cooldown_s * 1000:
            continue
        cooldowns[key] = window_end_ms
        alerts.append(
            records.alert(
                ident=records.alert_id(
                    "threshold", rule.name, account, channel, size_s, window_start_ms
                ),
                type=f"threshold_{rule.op}",
                severity=rule.severity,
                account_id=account,
                channel=channel,
                metric=rule.metric,
                window_start=window["window_start"],
                window_end=window["window_end"],
                observed=observed,
                expected=None,
                threshold=rule.value,
                message=(
                    f"{rule.metric} was {observed:.6g} on {channel} in the "
                    f"{_fmt_size(size_s)} window from {window['window_start']}, "
                    f"{rule.op} the threshold {rule.value:.6g} (rule '{rule.name}')"
                ),
                now=now,
            )
        )
    return alerts

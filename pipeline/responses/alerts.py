"""Alerts from response-time decisions: SLA warning and breach per inbound message,
and degradation of the rolling p90. Ids are hashes of what the alert is about, so a
re-emission after a crash or a replay carries the same id."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pipeline.model import records
from pipeline.responses.tracker import Decision
from pipeline.windows.arithmetic import rfc3339

SEVERITY = {
    "response_sla_warning": "warning",
    "response_sla_breach": "critical",
    "response_time_degradation": "warning",
}


def _duration(seconds: float) -> str:
    if seconds >= 3600 and seconds % 3600 == 0:
        return f"{seconds / 3600:g} h"
    if seconds >= 60 and seconds % 60 == 0:
        return f"{seconds / 60:g} min"
    return f"{seconds:g} s"


def build(d: Decision, now: datetime | None = None) -> dict[str, Any]:
    clock = "business " if d.business else ""
    if d.type == "response_time_degradation":
        ident = records.alert_id(d.type, d.account, d.kind, d.priority, d.end_ms)
        metric = f"first_response_{'business_' if d.business else ''}seconds_p90"
        message = (
            f"p90 first response time of {d.priority} {d.kind} messages was "
            f"{_duration(round(d.observed_s))} {clock}in the "
            f"{_duration((d.end_ms - d.start_ms) / 1000)} to {rfc3339(d.end_ms)}, "
            f"over the {_duration(d.threshold_s)} SLA"
        )
        threshold = d.threshold_s
    else:
        ident = records.alert_id(d.type, d.account, d.channel, d.event_id)
        metric = f"first_response_{'business_' if d.business else ''}seconds"
        stage = "is near" if d.type == "response_sla_warning" else "passed"
        message = (
            f"a {d.priority} {d.kind} on {d.channel} has waited {_duration(d.observed_s)} "
            f"{clock}without a reply and {stage} its {_duration(d.threshold_s)} SLA"
        )
        threshold = d.observed_s
    extra = {} if d.event_id is None else {"event_id": d.event_id}
    return records.alert(
        ident=ident,
        type=d.type,
        severity=SEVERITY[d.type],
        account_id=d.account,
        channel=d.channel,
        metric=metric,
        window_start=rfc3339(d.start_ms),
        window_end=rfc3339(d.end_ms),
        observed=d.observed_s,
        expected=d.threshold_s,
        threshold=threshold,
        message=message,
        now=now,
        **extra,
    )

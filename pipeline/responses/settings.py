"""Settings of response-time tracking: the `[responses]` and `[calendars.NAME]` tables.

Kept apart from `pipeline.config.settings`, which holds one `ResponseSettings` in
`Settings.responses`; problems are collected as (path, reason) like every setting.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from pipeline.model.events import INBOUND_KINDS, KINDS, PRIORITIES
from pipeline.responses.business_hours import Calendar, parse_calendar


@dataclass(frozen=True, slots=True)
class SlaRule:
    """First response due within `sla_s` for the inbound messages it matches."""

    sla_s: int
    accounts: tuple[str, ...] = ("*",)
    kinds: tuple[str, ...] = ("*",)
    priorities: tuple[str, ...] = ("*",)

    def matches(self, account: str, kind: str, priority: str) -> bool:
        return (
            ("*" in self.accounts or account in self.accounts)
            and ("*" in self.kinds or kind in self.kinds)
            and ("*" in self.priorities or priority in self.priorities)
        )


# Customer-care norms: urgent within 15 min, high within the hour, the rest same day.
DEFAULT_SLA: tuple[SlaRule, ...] = (
    SlaRule(900, priorities=("urgent",)),
    SlaRule(3600, priorities=("high",)),
    SlaRule(4 * 3600, priorities=("normal",)),
    SlaRule(24 * 3600, priorities=("low",)),
)


@dataclass(frozen=True, slots=True)
class ResponseSettings:
    inbound_kinds: tuple[str, ...] = INBOUND_KINDS
    # First matching rule wins; no match: no SLA (no alerts, not in within_sla_ratio).
    sla: tuple[SlaRule, ...] = DEFAULT_SLA
    warning_fraction: float = 0.8  # response_sla_warning at this fraction of the SLA
    # Inbound messages (answered or not) are remembered this long in event time (a
    # month: exports of customer care hold replies days or weeks after the message); a
    # reply to an older one is counted as a reply to an expired inbound.
    horizon_s: int = 30 * 24 * 3600
    # A reply whose inbound has not arrived waits this long (event time) for it.
    orphan_wait_s: int = 3600
    max_tracked_per_partition: int = 500_000  # oldest inbound are dropped beyond this
    # response_time_degradation: rolling p90 over this window, evaluated every step
    degradation_window_s: int = 3600
    degradation_step_s: int = 300
    degradation_min_responses: int = 10
    # How often the tracker's state may be snapshotted to the changelog (wall time)
    snapshot_interval_s: float = 30.0
    calendars: Mapping[str, Calendar] = field(default_factory=dict)
    calendar_by_account: Mapping[str, str] = field(default_factory=dict)

    def sla_s(self, account: str, kind: str, priority: str) -> int | None:
        for rule in self.sla:
            if rule.matches(account, kind, priority):
                return rule.sla_s
        return None

    def calendar(self, account: str) -> Calendar | None:
        name = self.calendar_by_account.get(account)
        return None if name is None else self.calendars.get(name)


_INT_KEYS = (
    "horizon_s",
    "orphan_wait_s",
    "max_tracked_per_partition",
    "degradation_window_s",
    "degradation_step_s",
    "degradation_min_responses",
)
_KEYS = {
    *_INT_KEYS,
    "inbound_kinds",
    "sla",
    "warning_fraction",
    "snapshot_interval_s",
    "calendar_by_account",
}
_RULE_KEYS = {"sla_s", "accounts", "kinds", "priorities"}


def _strings(path: str, value: Any, allowed: tuple[str, ...] | None, problems: list[Any]) -> bool:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        problems.append((path, "must be a list of strings"))
        return False
    bad = [v for v in value if allowed is not None and v != "*" and v not in allowed]
    if bad:
        problems.append((path, f"unknown {', '.join(bad)}: one of {', '.join(allowed or ())}"))
        return False
    return True


def _sla(raw: Any, problems: list[tuple[str, str]]) -> tuple[SlaRule, ...]:
    if not isinstance(raw, list):
        problems.append(("responses.sla", "must be an array of tables"))
        return ()
    rules = []
    for i, item in enumerate(raw):
        path = f"responses.sla[{i}]"
        if not isinstance(item, dict):
            problems.append((path, "must be a table"))
            continue
        before = len(problems)
        problems.extend((f"{path}.{k}", "unknown key") for k in item if k not in _RULE_KEYS)
        sla_s: Any = item.get("sla_s")
        if type(sla_s) is not int or sla_s <= 0:
            problems.append((f"{path}.sla_s", "required: a positive integer (seconds)"))
        _strings(f"{path}.accounts", item.get("accounts", ["*"]), None, problems)
        _strings(f"{path}.kinds", item.get("kinds", ["*"]), KINDS, problems)
        _strings(f"{path}.priorities", item.get("priorities", ["*"]), PRIORITIES, problems)
        if len(problems) == before:
            rules.append(
                SlaRule(
                    sla_s=int(sla_s),
                    accounts=tuple(item.get("accounts", ["*"])),
                    kinds=tuple(item.get("kinds", ["*"])),
                    priorities=tuple(item.get("priorities", ["*"])),
                )
            )
    return tuple(rules)


def parse(
    responses: Any, calendars: Any, problems: list[tuple[str, str]]
) -> ResponseSettings | None:
    """ResponseSettings from the `[responses]` and `[calendars]` tables (either may be
    None); None when there were problems, which are appended."""
    before = len(problems)
    values: dict[str, Any] = {}
    cals: dict[str, Calendar] = {}
    if calendars is not None:
        if not isinstance(calendars, dict):
            problems.append(("calendars", "must be a table of calendars"))
        else:
            for name, raw in calendars.items():
                cal = parse_calendar(f"calendars.{name}", raw, problems)
                if cal is not None:
                    cals[name] = cal
    values["calendars"] = cals
    raw = {} if responses is None else responses
    if not isinstance(raw, dict):
        problems.append(("responses", "must be a table"))
        raw = {}
    problems.extend((f"responses.{k}", "unknown key") for k in raw if k not in _KEYS)
    for key in _INT_KEYS:
        if key in raw:
            if type(raw[key]) is not int or raw[key] <= 0:
                problems.append((f"responses.{key}", "must be a positive integer"))
            else:
                values[key] = raw[key]
    for key in ("warning_fraction", "snapshot_interval_s"):
        if key in raw:
            v = raw[key]
            if type(v) not in (int, float) or v <= 0 or (key == "warning_fraction" and v >= 1):
                rule = "a number in (0, 1)" if key == "warning_fraction" else "a positive number"
                problems.append((f"responses.{key}", f"must be {rule}"))
            else:
                values[key] = float(v)
    if "inbound_kinds" in raw:
        allowed = tuple(k for k in KINDS if k != "reply")
        if _strings("responses.inbound_kinds", raw["inbound_kinds"], allowed, problems):
            values["inbound_kinds"] = tuple(raw["inbound_kinds"])
    if "sla" in raw:
        values["sla"] = _sla(raw["sla"], problems)
    by_account = raw.get("calendar_by_account", {})
    if not isinstance(by_account, dict) or not all(isinstance(v, str) for v in by_account.values()):
        problems.append(("responses.calendar_by_account", "must be a table of account = calendar"))
    else:
        for account, name in by_account.items():
            if name not in cals and not any(p[0].startswith(f"calendars.{name}") for p in problems):
                problems.append(
                    (f"responses.calendar_by_account.{account}", f"no calendar named '{name}'")
                )
        values["calendar_by_account"] = dict(by_account)
    step, window = (
        values.get("degradation_step_s", 300),
        values.get("degradation_window_s", 3600),
    )
    if window % step:
        problems.append(
            ("responses.degradation_window_s", "must be a multiple of degradation_step_s")
        )
    if len(problems) > before:
        return None
    return ResponseSettings(**values)

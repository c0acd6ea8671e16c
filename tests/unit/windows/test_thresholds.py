"""pipeline.windows.thresholds: threshold rules on final windows, event-time
cooldown, stable ids."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import orjson
import pytest

from pipeline.config.settings import ThresholdRule
from pipeline.model.events import KINDS
from pipeline.windows.arithmetic import rfc3339
from pipeline.windows.thresholds import evaluate, observed_value
from tests.unit.fixtures import schema_validator

SEC, MIN = 1000, 60_000
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
BASE = (datetime(2026, 11, 21, 10, 0, tzinfo=UTC) - EPOCH) // timedelta(milliseconds=1)
NOW = datetime(2026, 11, 21, 10, 5, 30, tzinfo=UTC)
SENTINEL = "S3NTINEL-do-not-copy"


def window(
    start_ms: int = BASE,
    size_s: int = 300,
    account: str = "acme",
    channel: str = "x",
    engagement_rate: float | None = 0.02,
    **kinds: int,
) -> dict[str, Any]:
    counts = {k: kinds.get(k, 0) for k in KINDS}
    return {
        "schema_version": 1,
        "account_id": account,
        "channel": channel,
        "window_start": rfc3339(start_ms),
        "window_end": rfc3339(start_ms + size_s * 1000),
        "size_seconds": size_s,
        "counts": counts,
        "unique_actors": 4,
        "weighted_engagement": 12.5,
        "late_events": 0,
        "engagement_rate": engagement_rate,
        "rate_basis": "followers",
        "post_id": SENTINEL,  # fields the rules never use must not leak into alerts
        "text": SENTINEL,
    }


def rule(**over: Any) -> ThresholdRule:
    base: dict[str, Any] = {
        "name": "r1",
        "metric": "weighted_engagement",
        "op": "above",
        "value": 10.0,
        "accounts": ("*",),
        "window_s": 300,
        "severity": "warning",
        "cooldown_s": 0,
    }
    base.update(over)
    return ThresholdRule(**base)


def run(
    w: dict[str, Any],
    rules: list[ThresholdRule],
    cooldowns: dict[str, int] | None = None,
    now: datetime = NOW,
) -> list[dict[str, Any]]:
    start = (datetime.fromisoformat(w["window_start"].replace("Z", "+00:00")) - EPOCH) // timedelta(
        milliseconds=1
    )
    end = start + w["size_seconds"] * 1000
    return evaluate(w, start, end, rules, {} if cooldowns is None else cooldowns, now=now)


@pytest.mark.parametrize(
    ("op", "value", "fires"),
    [
        ("above", 12.0, True),
        ("above", 12.5, False),  # strictly above
        ("above", 13.0, False),
        ("below", 13.0, True),
        ("below", 12.5, False),  # strictly below
        ("below", 12.0, False),
    ],
)
def test_above_and_below(op: str, value: float, fires: bool) -> None:
    alerts = run(window(like=3), [rule(op=op, value=value)])
    assert len(alerts) == int(fires)
    if fires:
        a = alerts[0]
        assert a["type"] == f"threshold_{op}"
        assert (a["observed"], a["threshold"], a["expected"]) == (12.5, value, None)


def test_account_filter_and_window_size() -> None:
    only_acme = rule(accounts=("acme",))
    assert len(run(window(account="acme"), [only_acme])) == 1
    assert run(window(account="beta"), [only_acme]) == []
    assert len(run(window(account="beta"), [rule(accounts=("*",))])) == 1
    assert len(run(window(account="beta"), [rule(accounts=("acme", "beta"))])) == 1
    assert run(window(size_s=60), [rule(window_s=300)]) == []


def test_missing_engagement_rate_never_alerts() -> None:
    w = window(engagement_rate=None, like=100)
    assert run(w, [rule(metric="engagement_rate", op="below", value=1.0)]) == []
    assert run(w, [rule(metric="engagement_rate", op="above", value=-1.0)]) == []
    assert observed_value(w, "engagement_rate") is None


def test_engagement_rate_alerts_when_present() -> None:
    alerts = run(window(engagement_rate=0.08), [rule(metric="engagement_rate", value=0.05)])
    assert [a["observed"] for a in alerts] == [0.08]


def test_volume_excludes_replies() -> None:
    w = window(like=1, comment=1, reply=7)
    assert observed_value(w, "volume") == 2.0
    assert run(w, [rule(metric="volume", op="above", value=3)]) == []
    assert [a["observed"] for a in run(w, [rule(metric="volume", op="below", value=3)])] == [2.0]


@pytest.mark.parametrize("kind", KINDS)
def test_count_of_each_kind(kind: str) -> None:
    w = window(**{kind: 6})
    assert observed_value(w, f"count.{kind}") == 6.0
    alerts = run(w, [rule(metric=f"count.{kind}", value=5)])
    assert [(a["metric"], a["observed"]) for a in alerts] == [(f"count.{kind}", 6.0)]


def test_count_of_a_kind_absent_from_counts_is_zero() -> None:
    w = window()
    w["counts"] = {"like": 2}
    assert observed_value(w, "count.mention") == 0.0
    assert len(run(w, [rule(metric="count.mention", op="below", value=1)])) == 1


def test_unique_actors_metric() -> None:
    assert [a["observed"] for a in run(window(), [rule(metric="unique_actors", value=3)])] == [4.0]


def breaching_series(n: int, size_s: int = 300, channel: str = "x") -> list[dict[str, Any]]:
    return [window(BASE + i * size_s * 1000, size_s, channel=channel) for i in range(n)]


def test_cooldown_is_measured_in_event_time() -> None:
    # 5 min windows, 15 min cooldown: after an alert for [0, 5) the next may start at 20
    r = rule(cooldown_s=900)
    cooldowns: dict[str, int] = {}
    fired = [a["window_start"] for w in breaching_series(10) for a in run(w, [r], cooldowns)]
    assert fired == [rfc3339(BASE), rfc3339(BASE + 20 * MIN), rfc3339(BASE + 40 * MIN)]


def test_zero_cooldown_alerts_every_breaching_window() -> None:
    cooldowns: dict[str, int] = {}
    fired = [a for w in breaching_series(4) for a in run(w, [rule(cooldown_s=0)], cooldowns)]
    assert len(fired) == 4


def test_cooldown_is_per_rule_account_and_channel() -> None:
    r1, r2 = rule(name="r1", cooldown_s=3600), rule(name="r2", cooldown_s=3600)
    cooldowns: dict[str, int] = {}
    first = run(window(), [r1, r2], cooldowns)
    assert [a["alert_id"] for a in first] and len(first) == 2
    later = window(BASE + 5 * MIN)
    assert run(later, [r1, r2], cooldowns) == []
    assert len(run(window(BASE + 5 * MIN, channel="ig"), [r1], cooldowns)) == 1
    assert len(run(window(BASE + 5 * MIN, account="beta"), [r1], cooldowns)) == 1


def test_replay_alerts_exactly_as_the_live_run() -> None:
    """Cooldown and ids depend on event time only: a replay a year later, or a run that
    restarted with its cooldowns restored, raises the same alerts."""
    r = rule(cooldown_s=900)
    series = breaching_series(12)

    def ids(now_for: Any, restart_at: int | None = None) -> list[str]:
        cooldowns: dict[str, int] = {}
        out = []
        for i, w in enumerate(series):
            if i == restart_at:  # persisted and restored through JSON, like the marker
                cooldowns = orjson.loads(orjson.dumps(cooldowns))
            out += [a["alert_id"] for a in run(w, [r], cooldowns, now=now_for(i))]
        return out

    live = ids(lambda i: NOW + timedelta(minutes=5 * i))
    replay = ids(lambda i: NOW + timedelta(days=365, seconds=i))
    restarted = ids(lambda i: NOW + timedelta(minutes=5 * i), restart_at=5)
    assert len(live) == 3
    assert live == replay == restarted


def test_alert_id_is_deterministic() -> None:
    a = run(window(), [rule()], now=NOW)[0]
    b = run(window(), [rule()], now=NOW + timedelta(hours=5))[0]
    assert a["alert_id"] == b["alert_id"]
    assert a["emitted_at"] != b["emitted_at"]
    others = [
        run(window(BASE + 5 * MIN), [rule()])[0],
        run(window(channel="ig"), [rule()])[0],
        run(window(account="beta"), [rule()])[0],
        run(window(), [rule(name="r2")])[0],
        run(window(BASE, size_s=60), [rule(window_s=60)])[0],
    ]
    ids = [a["alert_id"], *(o["alert_id"] for o in others)]
    assert len(set(ids)) == len(ids)


def test_alert_fields() -> None:
    a = run(window(account="acme", channel="ig", like=2), [rule(severity="critical", value=3)])[0]
    assert a["schema_version"] == 1
    assert (a["account_id"], a["channel"], a["severity"]) == ("acme", "ig", "critical")
    assert (a["window_start"], a["window_end"]) == (rfc3339(BASE), rfc3339(BASE + 5 * MIN))
    assert a["metric"] == "weighted_engagement"
    assert a["emitted_at"] == "2026-11-21T10:05:30.000000Z"


def test_emitted_at_is_utc_for_an_aware_time_in_another_zone() -> None:
    cet = timezone(timedelta(hours=1))
    a = run(window(), [rule()], now=datetime(2026, 11, 21, 11, 5, 30, tzinfo=cet))[0]
    assert a["emitted_at"] == "2026-11-21T10:05:30.000000Z"


def test_message_states_observed_and_threshold_and_copies_no_input_text() -> None:
    alerts = run(window(like=3), [rule(name="acme-high", value=7.25)])
    msg = alerts[0]["message"]
    assert "12.5" in msg and "7.25" in msg
    assert "acme-high" in msg and "weighted_engagement" in msg
    assert SENTINEL not in json.dumps(alerts)


def test_message_numbers_are_the_observed_and_threshold_values() -> None:
    msg = run(window(), [rule(value=3.5)])[0]["message"]
    numbers = {float(n) for n in re.findall(r"(?<![\w:.-])\d+(?:\.\d+)?(?![\w:.-])", msg)}
    # besides the window length (5 min), only the observed value and the threshold
    assert numbers <= {12.5, 3.5, 5.0}
    assert {12.5, 3.5} <= numbers


def test_every_alert_validates_against_the_alert_schema() -> None:
    validator = schema_validator("alert.v1.json")
    rules = [
        rule(name="w", metric="weighted_engagement", value=1),
        rule(name="v", metric="volume", op="below", value=100, severity="info"),
        rule(name="m", metric="count.mention", value=0, severity="critical"),
        rule(name="e", metric="engagement_rate", value=0.01),
        rule(name="u", metric="unique_actors", value=1, window_s=60),
    ]
    alerts = []
    for w in (window(like=3, mention=2), window(size_s=60, channel="ig")):
        alerts += run(w, rules, now=NOW)
    assert len(alerts) == 5
    for a in alerts:
        errors = [e.message for e in validator.iter_errors(orjson.loads(orjson.dumps(a)))]
        assert errors == [], a

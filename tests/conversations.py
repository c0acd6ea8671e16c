"""Customer-care conversations for tests, and the offline truth of their response times.

Shaped like public customer-care samples: brand accounts answer mentions, comments
and DMs after a long-tailed delay, some messages never, some several times; a few
replies name messages that never arrive, and a few are stamped before the message
they answer (clock skew).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from pipeline.model import wire
from pipeline.model.events import Interaction
from pipeline.responses.settings import ResponseSettings

MIN = 60_000
_offsets = itertools.count()


@dataclass
class Conversations:
    events: list[dict[str, Any]]  # schema v1 events, in event-time order

    def rows(self) -> list[wire.Row]:
        return [row(e) for e in self.events]


def row(e: dict[str, Any]) -> wire.Row:
    ev = Interaction(
        event_id=e["event_id"],
        kind=e["kind"],
        channel=e["channel"],
        account_id=e["account_id"],
        ts_ms=e["ts"],
        in_reply_to=e.get("in_reply_to"),
        issue_type=e.get("issue_type"),
        priority=e.get("priority", "normal"),
    )
    return wire.interaction_row(ev, [f"social.{e['kind']}s", 0, next(_offsets), e["ts"]])


def generate(
    seed: int,
    *,
    start_ms: int,
    inbound: int = 300,
    span_ms: int = 6 * 60 * MIN,
    accounts: tuple[str, ...] = ("acme", "globex", "initech"),
    median_delay_ms: int = 20 * MIN,
) -> Conversations:
    rng = random.Random(seed)
    events: list[dict[str, Any]] = []
    for n in range(inbound):
        ts = start_ms + rng.randrange(span_ms)
        account = rng.choice(accounts)
        channel = rng.choice(("x", "instagram"))
        msg = {
            "event_id": f"in-{seed}-{n}",
            "kind": rng.choice(("comment", "mention", "dm")),
            "channel": channel,
            "account_id": account,
            "ts": ts,
            "priority": rng.choice(("low", "normal", "normal", "high", "urgent")),
        }
        if msg["kind"] == "comment":
            msg["post_id"] = f"post-{rng.randrange(20)}"
        if rng.random() < 0.3:
            msg["issue_type"] = rng.choice(("billing", "delivery"))
        events.append(msg)
        answers = rng.choices((0, 1, 2, 3), weights=(25, 55, 15, 5))[0]
        for r in range(answers):
            delay = int(rng.lognormvariate(0, 1.2) * median_delay_ms)
            if rng.random() < 0.03:
                delay = -rng.randrange(1, 30_000)  # the reply's clock is behind
            events.append(
                {
                    "event_id": f"re-{seed}-{n}-{r}",
                    "kind": "reply",
                    "channel": channel,
                    "account_id": account,
                    "ts": ts + delay,
                    "in_reply_to": msg["event_id"],
                }
            )
    for n in range(inbound // 40):  # replies to messages never seen
        events.append(
            {
                "event_id": f"stray-{seed}-{n}",
                "kind": "reply",
                "channel": "x",
                "account_id": rng.choice(accounts),
                "ts": start_ms + rng.randrange(span_ms),
                "in_reply_to": f"unknown-{seed}-{n}",
            }
        )
    events.sort(key=lambda e: e["ts"])
    return Conversations(events)


def arrival_order(events: list[Any], lateness_ms: int, seed: int, ts: Any) -> list[Any]:
    """A shuffled arrival order in which no event is late: each arrives at most
    `lateness_ms` of event time after any event stamped later."""
    rng = random.Random(seed)
    return sorted(events, key=lambda e: ts(e) + rng.randrange(lateness_ms))


@dataclass
class Truth:
    """Per account: first response seconds (calendar), SLA alerts, unmatched replies."""

    first_s: dict[str, list[float]] = field(default_factory=dict)
    subsequent_s: dict[str, list[float]] = field(default_factory=dict)
    alerts: set[tuple[str, str]] = field(default_factory=set)  # (type, inbound event_id)
    unmatched: dict[str, int] = field(default_factory=dict)
    open: dict[str, int] = field(default_factory=dict)


def offline(events: list[dict[str, Any]], cfg: ResponseSettings, until_ms: int) -> Truth:
    """The simple computation: group replies by the message they name, take the
    earliest. SLA deadlines judged at `until_ms` (the final watermark)."""
    truth = Truth()
    inbound = {
        (e["account_id"], e["channel"], e["event_id"]): e
        for e in events
        if e["kind"] in cfg.inbound_kinds
    }
    replies: dict[tuple[str, str, str], list[int]] = {}
    for e in events:
        if e["kind"] == "reply":
            key = (e["account_id"], e["channel"], e["in_reply_to"])
            if key in inbound:
                replies.setdefault(key, []).append(e["ts"])
            else:
                truth.unmatched[e["account_id"]] = truth.unmatched.get(e["account_id"], 0) + 1
    for key, msg in inbound.items():
        account = key[0]
        times = sorted(replies.get(key, []))
        if times:
            truth.first_s.setdefault(account, []).append(max(0, times[0] - msg["ts"]) / 1000)
            for t in times[1:]:
                truth.subsequent_s.setdefault(account, []).append(max(0, t - msg["ts"]) / 1000)
        else:
            truth.open[account] = truth.open.get(account, 0) + 1
        sla = cfg.sla_s(account, msg["kind"], msg.get("priority", "normal"))
        if sla is None:
            continue
        cal = cfg.calendar(account)
        for name, seconds in (
            ("response_sla_warning", sla * cfg.warning_fraction),
            ("response_sla_breach", float(sla)),
        ):
            if cal is None:
                deadline = msg["ts"] + round(seconds * 1000)
            else:
                deadline = cal.add_business_seconds(msg["ts"], seconds)
            if deadline < until_ms and not (times and times[0] <= deadline):
                truth.alerts.add((name, msg["event_id"]))
    return truth


def batches(items: list[Any], seed: int, most: int = 40) -> Iterator[list[Any]]:
    rng = random.Random(seed)
    i = 0
    while i < len(items):
        n = rng.randrange(1, most)
        yield items[i : i + n]
        i += n

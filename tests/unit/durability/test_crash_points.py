"""A crash at every point of the partition processor's effects, without a broker.

For seeded random inputs (duplicates, reordering, late rows, exposure, replies,
threshold and detector alerts, response SLAs): perform the effects of an
uninterrupted run up to index i, drop the rest, restore from what was durable,
re-read the input from the last committed point, and compare every published
window and alert with the uninterrupted run, for every i.

The model: a Put is durable once performed, a Publish is out once performed (the
effects up to i are the acknowledged prefix). An input counts as committed once
all of its effects were performed (a consumer commits only after the producer's
flush); the re-read starts at the last committed input, or, the worst case, at
the beginning.
"""

from __future__ import annotations

import base64
import random
from dataclasses import dataclass, field
from typing import Any

import orjson
import pytest

from pipeline.config.settings import ThresholdRule
from pipeline.detection.series import Detection
from pipeline.detection.settings import DetectionSettings
from pipeline.durability import keys
from pipeline.durability import processor as proc
from pipeline.durability.processor import Barrier, PartitionProcessor, Publish, Put, Step
from pipeline.durability.restore import restore
from pipeline.model import wire
from pipeline.model.events import Interaction
from pipeline.responses.settings import ResponseSettings
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows.aggregator import Aggregator, Delta, PartitionState
from tests.unit.fixtures import BASE, MIN, WALL, cfg, ex

P = 2
HOUR, DAY = 60 * MIN, 24 * 60 * MIN
RULES = (
    ThresholdRule("busy", "volume", "above", 6, window_s=300, cooldown_s=1800),
    ThresholdRule("quiet", "volume", "below", 15, accounts=("acme",), window_s=3600),
)
_offsets = iter(range(10**9))


def row(
    event_id: str, ts: int, kind: str, account: str, reply_to: str | None = None, **kw: Any
) -> wire.Row:
    ev = Interaction(
        event_id=event_id,
        kind=kind,
        channel=kw.pop("channel", "x"),
        account_id=account,
        ts_ms=ts,
        post_id="p1" if kind in ("like", "comment", "share") else None,
        actor_id=f"u{hash(event_id) % 7}",
        in_reply_to=reply_to,
        **kw,
    )
    return wire.interaction_row(ev, [f"social.{kind}s", 0, next(_offsets), ts + 40])


Input = tuple[str, Any]  # ("batch", rows) or ("tick", None)


def scenario(seed: int) -> list[Input]:
    """Two days of two accounts in hourly batches, the last hour live (a batch per
    third of a 5-minute window): a daily rhythm with a spike once a whole day has been
    seen (a detector alert), busy windows over the threshold, DMs answered late or
    never (SLA warnings and breaches), exposure, duplicates, neighbours out of order,
    and rows far too late (dead letters). In the live hour acme's spike crosses both
    bars in the second third of its window (raised early by the rows; the last third
    adds more) and globex is busy in the first third of another (raised early by the
    close that makes the window before it final)."""
    rng = random.Random(seed)
    inputs: list[Input] = []
    inbound: list[tuple[str, str, int]] = []
    start = BASE - BASE % DAY  # a midnight: the first day is whole
    live = start + 26 * HOUR
    spike, busy = live + 30 * MIN, live + 40 * MIN
    n = 0
    for hour in range(27):
        t = start + hour * HOUR
        rows: list[wire.Row] = []
        for account in ("acme", "globex"):
            per_5min = 1.0 + (1.5 if (t // HOUR) % 24 in range(12, 20) else 0.0)
            for slot in range(12):
                t5 = t + slot * 5 * MIN
                count = rng.randint(t5 == start, int(2 * per_5min))  # from midnight: a whole day
                count = 40 if (account, t5) == ("acme", spike) else count
                count = 10 if (account, t5) == ("globex", busy) else count
                for i in range(count):
                    n += 1
                    kind = rng.choice(["like"] * 12 + ["comment", "share", "dm", "mention"])
                    priority = rng.choice(["normal", "high", "urgent"])
                    ts = t5 + rng.randint(0, 5 * MIN - 1)
                    if t5 in (spike, busy) and count > 5:  # which third of the window
                        third = (0 if i < 3 else 1 if i < 23 else 2) if t5 == spike else 0
                        ts = t5 + third * 100_000 + rng.randint(0, 99_999)
                    rows.append(row(f"e{n}", ts, kind, account, priority=priority))
                    if kind == "dm":
                        inbound.append((account, f"e{n}", ts))
        for _ in range(rng.randint(1, 4)):  # replies, some long after their SLA
            if inbound:
                account, eid, ts = inbound.pop(rng.randrange(len(inbound)))
                reply_ts = max(ts + rng.randint(1, 300) * MIN, t)
                if reply_ts < t + HOUR:
                    rows.append(row(f"r{eid}", reply_ts, "reply", account, eid))
        rows.append(ex(t + 30 * MIN, account="acme", followers=1000 + rng.randint(0, 50)))
        rows.sort(key=lambda r: r[wire.I_TS] if r[0] == wire.INTERACTION else t + 30 * MIN)
        for i in range(0, len(rows) - 1, 7):  # neighbours out of order
            rows[i], rows[i + 1] = rows[i + 1], rows[i]
        if hour > 3 and rng.random() < 0.3:
            rows.append(row(f"late{hour}", t - 3 * HOUR, "like", "globex"))  # far too late
        if inputs and rng.random() < 0.2:
            rows += inputs[-1][1][:5] if inputs[-1][0] == "batch" else []  # redelivered
        if t < live:
            batches = [rows]
        else:  # live: a batch per third of a window, in event time order
            thirds: dict[int, list[wire.Row]] = {}
            for r in rows:
                ts = r[wire.I_TS] if r[0] == wire.INTERACTION else r[wire.X_TS]
                thirds.setdefault((ts - t) // 100_000, []).append(r)
            batches = [thirds[h] for h in sorted(thirds)]
        for batch in batches:
            inputs.append(("batch", batch))
            if rng.random() < 0.5:
                inputs.append(("tick", None))
    # Past every SLA (4 h after the last message): nothing is left to come due.
    inputs.append(("batch", [row("flush", start + 2 * DAY, "like", "zz")]))
    inputs += [("tick", None)] * 2
    return inputs


@dataclass
class World:
    """One partition's processor and what it made durable and published."""

    processor: PartitionProcessor
    state: PartitionState
    changelog: dict[bytes, bytes] = field(default_factory=dict)
    published: list[Publish] = field(default_factory=list)

    def perform(self, effect: proc.Effect) -> None:
        if isinstance(effect, Put):
            if effect.value is None:
                self.changelog.pop(effect.key, None)
            else:
                self.changelog[effect.key] = effect.value
        elif isinstance(effect, Publish):
            self.published.append(effect)


def parts() -> tuple[Aggregator, ResponseTracker, Detection]:
    detection = Detection(
        DetectionSettings(series=("engagement", "mentions"), defaults={"min_history_days": 1})
    )
    return Aggregator(cfg(sizes_ms=(5 * MIN, HOUR))), ResponseTracker(ResponseSettings()), detection


def fresh() -> World:
    agg, tracker, det = parts()
    return World(PartitionProcessor(agg, tracker, det, RULES), PartitionState())


def step(world: World, i: int, item: Input) -> Step:
    """Input i: a batch at offset i of the internal topic, or a tick."""
    kind, rows = item
    wall, mono = WALL + i * 1000, float(i)
    if kind == "tick":
        return world.processor.tick(P, world.state, wall, mono)
    return world.processor.batch(P, world.state, i, rows, None, wall, mono)


@dataclass
class Run:
    world: World
    effects: list[list[proc.Effect]]  # per input
    durable: list[dict[bytes, bytes]]  # the changelog before each input
    out: list[int]  # how many publications before each input


def run(inputs: list[Input]) -> Run:
    world, r = fresh(), Run(World(fresh().processor, PartitionState()), [], [], [])
    for i, item in enumerate(inputs):
        r.durable.append(dict(world.changelog))
        r.out.append(len(world.published))
        s = step(world, i, item)
        for e in s.effects:
            world.perform(e)
        r.effects.append(s.effects)
    r.world = world
    return r


def shape(effects: list[proc.Effect]) -> list[Any]:
    """Effects as compared between runs: an alert's send time aside."""
    return [(type(e).__name__, getattr(e, "key", None), getattr(e, "topic", None)) for e in effects]


def outputs(published: list[Publish]) -> dict[str, dict[Any, Any]]:
    """What consumers see: windows by key, alerts by id (send time aside), dead letters
    by source offset. A key published twice with different contents fails here."""
    out: dict[str, dict[Any, Any]] = {"window": {}, "alert": {}, "deadletter": {}}
    for pub in published:
        value = orjson.loads(pub.value)
        if pub.topic == proc.WINDOW:
            key = (
                value["account_id"],
                value["channel"],
                value["size_seconds"],
                value["window_start"],
            )
        elif pub.topic == proc.ALERT:
            key = value.pop("alert_id")
            value.pop("emitted_at")
        else:
            value.pop("received_at")
            key = orjson.loads(base64.b64decode(value["value_b64"]))["event_id"]
        seen = out[pub.topic].setdefault(key, value)
        assert seen == value, f"{pub.topic} {key} published with other contents"
    return out


def crashed(
    inputs: list[Input], r: Run, cut: int, rng: random.Random, backlog: int | None
) -> list[Publish]:
    """Crash before effect `cut` of the uninterrupted run: everything before the last
    barrier is acknowledged. Of what was sent after it, the changelog records got
    through up to some point (one partition's records arrive in the order sent) and
    any subset of the publications (other topics and partitions). Restore from what
    was durable and re-read the input; what was published in all. `backlog`: the end
    of what the topic held at the crash (None: the input the crash fell in)."""
    flat = [(k, e) for k, effects in enumerate(r.effects) for e in effects]
    crash_input = flat[cut][0]
    barrier = max((g for g in range(cut) if isinstance(flat[g][1], Barrier)), default=-1)
    first = flat[barrier][0] if barrier >= 0 else 0  # the input the barrier belongs to
    world = World(fresh().processor, PartitionState(), dict(r.durable[first]))
    world.published = list(r.world.published[: r.out[first]])
    start = sum(len(e) for e in r.effects[:first])
    puts = [g for g in range(barrier + 1, cut) if isinstance(flat[g][1], Put)]
    # Which of the unacknowledged records got through: by turns any, the changelog
    # records and no publication, and the publications but no changelog record.
    mode = (cut // 2) % 3
    through = (rng.randint(0, len(puts)), len(puts), 0)[mode]
    kept = set(puts[:through])
    for g in range(start, cut):
        effect = flat[g][1]
        sent = isinstance(effect, Publish) and (rng.random() < 0.5, False, True)[mode]
        if g <= barrier or g in kept or sent:
            world.perform(effect)
    # Restore from the durable records, as a worker does after kill -9.
    agg, tracker, det = parts()
    restored = restore(world.changelog, P, agg, tracker)
    again = World(PartitionProcessor(agg, tracker, det, RULES), restored.state)
    again.changelog, again.published = world.changelog, world.published
    # Inputs before `first` were committed (acknowledged in full). What the topic held
    # at the crash, a restored partition re-reads before it closes anything.
    end = crash_input if backlog is None else max(backlog, crash_input)
    high = 1 + max((i for i in range(end + 1) if inputs[i][0] == "batch"), default=-1)
    again.processor.restored(P, restored, backlog_end=high)  # the topic's end offset
    for i in range(0 if rng.random() < 0.25 else first, len(inputs)):
        s = step(again, i, inputs[i])
        for e in s.effects:
            again.perform(e)
    for i in range(len(inputs), len(inputs) + 3):  # time goes on: a close publishes at
        for e in step(again, i, ("tick", None)).effects:  # most `max_close` windows
            again.perform(e)
    return again.published


@pytest.mark.parametrize("seed", [1, 2])
def test_a_crash_at_any_effect_publishes_what_an_uninterrupted_run_publishes(seed: int) -> None:
    inputs = scenario(seed)
    r = run(inputs)
    truth = outputs(r.world.published)
    # the scenario exercises what it claims
    types = {a["type"] for a in truth["alert"].values()}
    assert {"threshold_above", "engagement_spike"} <= types, types
    early = {a["type"] for a in truth["alert"].values() if a.get("early")}
    assert {"threshold_above", "engagement_spike"} <= early, early
    assert {"response_sla_warning", "response_sla_breach"} <= types, types
    assert len(truth["window"]) > 500 and truth["deadletter"]
    total = sum(len(e) for e in r.effects)
    assert sum(isinstance(e, Barrier) for es in r.effects for e in es) > 50
    rng = random.Random(seed)
    # Events counted in some window: a redelivery of one of them, past the dedup
    # horizon, is a duplicate or a dead letter depending on what dedup still holds
    # (a restore rebuilds it from the retained deltas), and counts in no window either way.
    counted = {
        row[wire.I_ID]
        for es in r.effects
        for e in es
        if isinstance(e, Put) and e.value and e.key.startswith(keys.deltas(P))
        for row in Delta.from_json(orjson.loads(e.value)).rows
        if row[0] == wire.INTERACTION
    }
    for cut in range(total):
        where = f"crash before effect {cut} of {total}"
        if cut % 2 == 0:
            # Live: the topic held what had arrived. The same closes at the same places.
            got = outputs(crashed(inputs, r, cut, rng, None))
            assert got["window"] == truth["window"], where
            assert got["alert"] == truth["alert"], where
            dead, dead_truth = set(got["deadletter"]), set(truth["deadletter"])
            assert dead ^ dead_truth <= counted, where  # no dead letter of a lost event
            for event_id in dead & dead_truth:
                assert got["deadletter"][event_id] == truth["deadletter"][event_id], where
        else:
            # A backlog past the crash: rows that came too late in the uninterrupted run
            # may count in windows that had not been published yet. What was published
            # is never published again with other contents (`outputs` checks), and every
            # window and alert of the uninterrupted run is published.
            backlog = rng.randint(0, len(inputs) - 1)
            got = outputs(crashed(inputs, r, cut, rng, backlog))
            assert set(got["window"]) >= set(truth["window"]), where
            assert set(got["alert"]) >= {k for k, a in truth["alert"].items() if "sla" in a["type"]}

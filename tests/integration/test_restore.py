"""A restart restores the whole changelog, whatever the broker reports as its end.

The embedded broker (Tansu 0.6.0) answers ListOffsets with the base offset of a
partition's last record batch plus one; faust's recovery read only that far, so a
restart lost the deltas after the first in that batch (agents/faust_fixes.py)."""

from __future__ import annotations

import asyncio

import orjson
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from kafka import KafkaConsumer
from kafka.structs import OffsetAndMetadata
from kafka.structs import TopicPartition as KafkaTP

from agents import faust_fixes
from pipeline.cli.topics import ensure_topics
from pipeline.durability import keys
from pipeline.ingest.partitioning import partition_for
from pipeline.ingest.validation import validate
from pipeline.model import wire
from pipeline.model.events import Interaction
from pipeline.windows.arithmetic import window_bounds
from pipeline.windows.state import Delta
from tests.integration.conftest import Env
from tests.integration.test_windows import BASE_MS

pytestmark = pytest.mark.integration

CONFIG = """
[windows]
sizes_s = [60, 300]
allowed_lateness_s = 60
grace_s = 0
idle_after_s = 3600
"""
DELTAS = 25  # per partition, all in one record batch


async def produce_in_batches(bootstrap: str, topic: str, sizes: list[int]) -> None:
    """Each group of `sizes` records sent together, so the producer batches them."""
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=200, acks="all")
    await producer.start()
    try:
        for n in sizes:
            futures = [await producer.send(topic, b"x" * 100, partition=0) for _ in range(n)]
            await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def ends_after(bootstrap: str, topic: str) -> tuple[int, int]:
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        tp = TopicPartition(topic, 0)
        reported = (await consumer.end_offsets([tp]))[tp]
        return reported, (await faust_fixes.log_end_offsets(consumer, [tp]))[tp]
    finally:
        await consumer.stop()


def test_log_end_offsets_count_every_record_of_the_last_batch(env: Env) -> None:
    topic = env.topic("batches")
    sent = 0
    for sizes in ([1], [4], [1], [7, 3]):
        asyncio.run(produce_in_batches(env.bootstrap, topic, sizes))
        sent += sum(sizes)
        reported, end = asyncio.run(ends_after(env.bootstrap, topic))
        assert end == sent, f"{sent} records written, log end {end} (ListOffsets: {reported})"


def like(topic: str, account: str, i: int, p: int) -> wire.Row:
    ev = validate(
        orjson.dumps(
            {
                "event_id": f"{account}-{i}",
                "kind": "like",
                "channel": "instagram",
                "account_id": account,
                "ts": BASE_MS + i * 1000,
                "post_id": "post-1",
            }
        ),
        kind_family="interaction",
    )
    assert isinstance(ev, Interaction)
    return wire.interaction_row(ev, [topic, p, i, BASE_MS])


def crashed_state(env: Env, app_id: str) -> dict[str, int]:
    """What a worker killed after committing leaves: per partition DELTAS batches in
    the internal topic, their offsets committed, and one delta each in the changelog,
    written together as the producer batches them under load. Returns account -> likes."""
    accounts: dict[int, str] = {}
    i = 0
    while len(accounts) < env.partitions:  # one account owned by each partition
        name = f"acct-{i}"
        accounts.setdefault(partition_for(name, env.partitions), name)
        i += 1
    events, changelog = env.topic("engagement.events"), f"{app_id}-window-state-changelog"

    async def write() -> None:
        producer = AIOKafkaProducer(bootstrap_servers=env.bootstrap, linger_ms=500, acks="all")
        await producer.start()
        try:
            pending = []
            for p, account in accounts.items():
                for seq in range(1, DELTAS + 1):
                    rows = [like(env.topic("social.likes"), account, seq, p)]
                    pending.append(
                        await producer.send(events, wire.encode_batch(rows), partition=p)
                    )
                    ts = wire.row_ts(rows[0])
                    delta = Delta(seq, seq - 1, rows, [], window_bounds(ts, 300_000)[1], ts)
                    pending.append(
                        await producer.send(
                            changelog,
                            orjson.dumps(delta.to_json()),
                            key=keys.delta(p, seq),
                            partition=p,
                        )
                    )
            await asyncio.gather(*pending)
        finally:
            await producer.stop()

    ensure_topics(env.bootstrap, [changelog], env.partitions)
    asyncio.run(write())
    group = KafkaConsumer(
        bootstrap_servers=env.bootstrap, group_id=app_id, enable_auto_commit=False
    )
    try:
        group.commit(
            {KafkaTP(events, p): OffsetAndMetadata(DELTAS, "", -1) for p in range(env.partitions)}
        )
    finally:
        group.close()
    return {account: DELTAS for account in accounts.values()}


def test_a_restart_restores_every_delta_of_a_last_batch(env: Env) -> None:
    app_id = f"{env.prefix}app"
    expected = crashed_state(env, app_id)
    w = env.worker(CONFIG, app_id=app_id).start()
    env.close_all(BASE_MS + 3 * 3600_000)

    def counted(windows: list[dict]) -> dict[str, int]:
        out: dict[str, int] = {}
        for win in windows:
            if win["size_seconds"] == 60 and win["account_id"] in expected:
                out[win["account_id"]] = out.get(win["account_id"], 0) + win["counts"]["like"]
        return out

    windows = env.wait_records(
        "engagement.windows", lambda ws: counted(ws).keys() == expected.keys(), 90, w
    )
    assert counted(windows) == expected, w.log()

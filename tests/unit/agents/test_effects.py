"""Each partition's effects in order, off the stream: a barrier on one partition
holds up no other, a message is acknowledged only after its effects, and the
faust behaviour the design relies on (manual acks, a rebalance that waits for
them before the revoke handlers run) is pinned."""

from __future__ import annotations

import asyncio
import inspect

import pytest
from faust.app.base import App
from faust.streams import Stream

from agents.effects import PartitionEffects
from pipeline.durability.processor import Barrier, Step


def step(tag: int) -> Step:
    s = Step()
    s.effects.append(Barrier())
    s.observed.duplicates = tag  # a label the fake perform reads back
    return s


class Recorder:
    def __init__(self) -> None:
        self.log: list[tuple[str, int, int]] = []
        self.gates: dict[int, asyncio.Event] = {}

    async def perform(self, p: int, s: Step) -> None:
        gate = self.gates.get(p)
        if gate is not None:
            await gate.wait()  # a barrier whose acknowledgement has not come
        self.log.append(("performed", p, s.observed.duplicates))

    def done(self, p: int, tag: int):  # type: ignore[no-untyped-def]
        async def ack() -> None:
            self.log.append(("acked", p, tag))

        return ack


def test_a_partition_steps_in_order_each_acknowledged_after_its_effects() -> None:
    async def run() -> list[tuple[str, int, int]]:
        r = Recorder()
        fx = PartitionEffects(r.perform)
        for tag in range(5):
            await fx.submit(0, step(tag), r.done(0, tag), published_ms=tag * 10)
        await fx.drain(0)
        assert fx.published(0) == 40
        return r.log

    log = asyncio.run(run())
    assert log == [(what, 0, t) for t in range(5) for what in ("performed", "acked")]


def test_a_waiting_partition_does_not_hold_up_another() -> None:
    async def run() -> None:
        r = Recorder()
        r.gates[0] = asyncio.Event()
        fx = PartitionEffects(r.perform)
        await fx.submit(0, step(1), r.done(0, 1), published_ms=5)
        await fx.submit(1, step(2), r.done(1, 2), published_ms=7)
        await fx.drain(1)
        assert r.log == [("performed", 1, 2), ("acked", 1, 2)]
        # decided but not performed: the status must not claim it published
        assert fx.published(0) is None and fx.published(1) == 7
        r.gates[0].set()
        await fx.drain(0)
        assert r.log[2:] == [("performed", 0, 1), ("acked", 0, 1)]
        assert fx.published(0) == 5

    asyncio.run(run())


def test_a_full_queue_makes_the_agent_wait() -> None:
    async def run() -> None:
        r = Recorder()
        r.gates[0] = asyncio.Event()
        fx = PartitionEffects(r.perform, depth=2)
        for tag in range(3):  # one being performed, two queued
            await fx.submit(0, step(tag), None, None)
        blocked = asyncio.create_task(fx.submit(0, step(3), None, None))
        await asyncio.sleep(0.05)
        assert not blocked.done()
        r.gates[0].set()
        await asyncio.wait_for(blocked, 1)
        await fx.drain(0)
        assert [t for _, _, t in r.log] == [0, 1, 2, 3]

    asyncio.run(run())


def test_drop_ends_the_partition_task() -> None:
    async def run() -> None:
        r = Recorder()
        fx = PartitionEffects(r.perform)
        await fx.submit(3, step(1), None, 1)
        await fx.drain(3)
        task = fx._tasks[3]
        fx.drop(3)
        await asyncio.sleep(0)
        assert task.cancelled() or task.done()
        assert fx.published(3) is None
        await fx.submit(3, step(2), None, 2)  # owned again: a new task
        await fx.drain(3)
        assert fx.published(3) == 2

    asyncio.run(run())


def test_faust_manual_acks_and_the_rebalance_order_it_relies_on() -> None:
    # noack(): the stream leaves acknowledging to the agent, whose ack is async
    assert "enable_acks=False" in inspect.getsource(Stream.noack)
    assert inspect.iscoroutinefunction(Stream.ack)
    # faust waits for every unacknowledged message, then flushes the producer, and
    # only then runs the revoke handlers that drop a partition's queue
    src = inspect.getsource(App._on_partitions_revoked)
    wait, flush = src.index("_consumer_wait_empty"), src.index("_producer_flush")
    assert wait < flush < src.index("on_partitions_revoked.send")


@pytest.mark.parametrize("depth", [1, 8])
def test_every_step_performed_once_whatever_the_depth(depth: int) -> None:
    async def run() -> list[tuple[str, int, int]]:
        r = Recorder()
        fx = PartitionEffects(r.perform, depth=depth)
        for tag in range(20):
            await fx.submit(tag % 3, step(tag), None, tag)
        for p in range(3):
            await fx.drain(p)
        return r.log

    log = asyncio.run(run())
    for p in range(3):
        assert [t for _, q, t in log if q == p] == list(range(p, 20, 3))

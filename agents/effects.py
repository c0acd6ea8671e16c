"""Each partition's effects, performed in order by a task of its own.

A barrier waits for the broker to acknowledge what was sent before it. The
aggregator is one faust agent over every internal partition, so a barrier
awaited in the agent held up all of them: a burst of early alerts (three
barriers each) on one partition delayed every other partition's rows by the
same round trips. Here the agent computes a step (in memory, under the
partition's lock) and queues its effects; the partition's task performs them in
the processor's order, so the durability order of every step is unchanged.

Offsets stay behind the work: the message a step came from is acknowledged to
faust only once the task has performed its effects (the agent's stream does not
acknowledge by itself), and faust commits an acknowledged offset only after a
producer flush, as when the agent performed them itself. faust's rebalance waits
for every unacknowledged message (`stream_wait_empty`) before it revokes. The
queue is bounded, so the agent waits when a partition's broker writes fall behind.
"""

from __future__ import annotations

import asyncio
import logging
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from agents.delivery import EXIT_DELIVERY_FAILED
from pipeline.durability.processor import Step

log = logging.getLogger("engagement.aggregate")
QUEUED_STEPS = 64  # per partition: about a second of router batches at full speed

Perform = Callable[[int, Step], Awaitable[None]]
Done = Callable[[], Awaitable[object]]


@dataclass(slots=True)
class _Item:
    step: Step
    done: Done | None  # acknowledges the message the step came from
    published_ms: int | None  # what the partition has published once it is performed


class PartitionEffects:
    def __init__(self, perform: Perform, depth: int = QUEUED_STEPS) -> None:
        self._perform = perform
        self._depth = depth
        self._queues: dict[int, asyncio.Queue[_Item]] = {}
        self._tasks: dict[int, asyncio.Task[None]] = {}
        self._published: dict[int, int | None] = {}

    async def submit(self, p: int, step: Step, done: Done | None, published_ms: int | None) -> None:
        """Queue a step's effects; `done` runs once they are performed."""
        q = self._queues.get(p)
        if q is None:
            q = self._queues[p] = asyncio.Queue(self._depth)
            self._tasks[p] = asyncio.create_task(self._run(p, q), name=f"effects-{p}")
        await q.put(_Item(step, done, published_ms))

    def published(self, p: int) -> int | None:
        """The processor's published watermark as of the last step performed."""
        return self._published.get(p)

    async def drain(self, p: int) -> None:
        """Wait until every queued step of p is performed."""
        q = self._queues.get(p)
        if q is not None:
            await q.join()

    def drop(self, p: int) -> None:
        """Forget p (drained first by the caller); its task ends."""
        self._queues.pop(p, None)
        self._published.pop(p, None)
        task = self._tasks.pop(p, None)
        if task is not None:
            task.cancel()

    async def _run(self, p: int, q: asyncio.Queue[_Item]) -> None:
        while True:
            item = await q.get()
            try:
                await self._perform(p, item.step)
                self._published[p] = item.published_ms
                if item.done is not None:
                    await item.done()
            except asyncio.CancelledError:
                raise
            except BaseException:
                # As an agent's exception does (CrashingSupervisor): stop, with the
                # offsets where they were; the restart rebuilds from durable state.
                log.critical("partition %d: performing a step failed: stopping", p, exc_info=True)
                logging.shutdown()
                os._exit(EXIT_DELIVERY_FAILED)
            finally:
                q.task_done()

"""Deliveries: a failure stops the worker at once; a barrier waits for the rest.

faust flushes the producer before it commits offsets, but a send that failed
(after the producer's own retries) does not make that flush fail, so the commit
would go past a record that never reached the broker. Exiting the process the
moment a delivery fails keeps the offsets where they were: on restart the input
is read again and nothing is lost (at-least-once; outputs are idempotent).
"""

from __future__ import annotations

import asyncio
import logging
import os
from typing import Any

log = logging.getLogger("engagement.delivery")
EXIT_DELIVERY_FAILED = 70


def fatal_on_failure(fut: Any, what: str) -> Any:
    """Exit the process if `fut` (a faust/aiokafka send future) fails; returns it."""

    def check(done: Any) -> None:
        if done.cancelled():
            return
        exc = done.exception()
        if exc is not None:
            # The record may hold personal data: name only what and why.
            log.critical("delivery of a %s record failed (%s): stopping", what, type(exc).__name__)
            logging.shutdown()
            os._exit(EXIT_DELIVERY_FAILED)

    fut.add_done_callback(check)
    return fut


class Deliveries:
    """The sends of each partition not yet known to be acknowledged."""

    def __init__(self) -> None:
        self.pending: dict[int, list[Any]] = {}

    def track(self, p: int, fut: Any) -> None:
        """Remember a delivery to wait for at the next barrier."""
        pending = self.pending.setdefault(p, [])
        pending.append(fut)
        if len(pending) > 256:  # delivered ones need no waiting
            pending[:] = [f for f in pending if not f.done()]

    async def barrier(self, p: int) -> None:
        """Wait until every record sent for p is acknowledged."""
        pending = self.pending.pop(p, [])
        if pending:
            await asyncio.gather(*pending)

    def drop(self, p: int) -> None:
        self.pending.pop(p, None)


async def write_changelog(table: Any, p: int, key: bytes, value: bytes | None) -> Any:
    """Write a changelog record of partition p into `table`; returns its delivery future.

    Not faust's send_changelog: that goes through a buffer whose flush before a
    commit gives up after a timeout, so a commit could overtake the record.
    """
    if value is None:
        table.data.pop(key, None)
    else:
        # An exact-size copy: orjson's output keeps its growth buffer (up to twice
        # its length, 4 KiB at least), and deltas stay here for the dedup horizon.
        value = table.data[key] = bytes(memoryview(value))
    fut = await table.changelog_topic.send(
        key=key, value=value, partition=p, key_serializer="raw", value_serializer="raw"
    )
    return fatal_on_failure(fut, "changelog")

"""Delivery failures stop the worker at once.

faust flushes the producer before it commits offsets, but a send that failed
(after the producer's own retries) does not make that flush fail, so the commit
would go past a record that never reached the broker. Exiting the process the
moment a delivery fails keeps the offsets where they were: on restart the input
is read again and nothing is lost (at-least-once; outputs are idempotent).
"""

from __future__ import annotations

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

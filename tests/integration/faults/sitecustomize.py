"""Fault injection for integration tests, loaded by a worker started with this folder
on PYTHONPATH: ENGAGEMENT_TEST_SEEK_DELAY_S makes faust's seek to the committed
offsets take that long, as it does against a slow or busy broker."""

from __future__ import annotations

import asyncio
import os

_DELAY_S = float(os.environ.get("ENGAGEMENT_TEST_SEEK_DELAY_S", "0") or 0)

if _DELAY_S > 0:
    from faust.transport import consumer as _consumer

    _perform_seek = _consumer.Consumer.perform_seek

    async def _slow_perform_seek(self: _consumer.Consumer) -> None:
        await asyncio.sleep(_DELAY_S)
        await _perform_seek(self)

    _consumer.Consumer.perform_seek = _slow_perform_seek  # type: ignore[method-assign]

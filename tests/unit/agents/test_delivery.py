"""A failed delivery stops the worker before offsets are committed past it."""

from __future__ import annotations

import asyncio
import tracemalloc
from types import SimpleNamespace
from typing import Any

import orjson
import pytest

from agents import delivery


def test_a_failed_send_exits_the_process(monkeypatch: pytest.MonkeyPatch) -> None:
    codes: list[int] = []
    monkeypatch.setattr(delivery.os, "_exit", codes.append)

    async def run() -> None:
        ok, bad = asyncio.Future[None](), asyncio.Future[None]()
        delivery.fatal_on_failure(ok, "window")
        delivery.fatal_on_failure(bad, "changelog")
        ok.set_result(None)
        bad.set_exception(TimeoutError("no broker"))
        await asyncio.sleep(0)  # let the callbacks run

    asyncio.run(run())
    assert codes == [delivery.EXIT_DELIVERY_FAILED]


def test_success_and_cancellation_do_not_exit(monkeypatch: pytest.MonkeyPatch) -> None:
    codes: list[int] = []
    monkeypatch.setattr(delivery.os, "_exit", codes.append)

    async def run() -> None:
        ok, cancelled = asyncio.Future[None](), asyncio.Future[None]()
        assert delivery.fatal_on_failure(ok, "window") is ok
        delivery.fatal_on_failure(cancelled, "alert")
        ok.set_result(None)
        cancelled.cancel()
        await asyncio.sleep(0)

    asyncio.run(run())
    assert codes == []


def test_changelog_values_are_kept_at_their_size_not_orjsons_buffer() -> None:
    # orjson's output keeps the buffer it grew into: a 60 KB delta held 128 KB, and
    # deltas stay in the table for the whole dedup horizon (hundreds of MB).
    sent: list[Any] = []

    class Topic:
        async def send(self, **kw: Any) -> asyncio.Future[None]:
            sent.append(kw)
            fut = asyncio.get_running_loop().create_future()
            fut.set_result(None)
            return fut

    rows = [["i", f"id-{i:010d}", "like", "x", "acme", 1_714_521_600_000 + i] for i in range(500)]
    table = SimpleNamespace(data={}, changelog_topic=Topic())

    async def run() -> None:
        for i in range(20):
            await delivery.write_changelog(
                table, 0, b"d:0:%d" % i, orjson.dumps({"r": rows, "s": i})
            )
        await delivery.write_changelog(table, 0, b"d:0:0", None)

    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        asyncio.run(run())
        sent.clear()
        held = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    size = sum(len(v) for v in table.data.values())
    assert len(table.data) == 19 and b"d:0:0" not in table.data
    assert orjson.loads(table.data[b"d:0:5"])["s"] == 5
    assert held < size * 1.2, (held, size)

"""A failed delivery stops the worker before offsets are committed past it."""

from __future__ import annotations

import asyncio

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

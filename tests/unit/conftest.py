"""Fixtures shared by the unit tests (none of them starts a broker)."""

from __future__ import annotations

import signal

import pytest


@pytest.fixture
def no_signal_handlers(monkeypatch: pytest.MonkeyPatch) -> None:
    """cli.main installs a SIGTERM handler; keep it out of the test process."""
    monkeypatch.setattr(signal, "signal", lambda *args: None)

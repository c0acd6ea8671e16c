"""The worker's logging: the level asked for is the level the root logger gets."""

from __future__ import annotations

import logging

import pytest

from agents.app import create_app
from agents.worker import worker_for
from pipeline.config.settings import Settings


@pytest.mark.parametrize(
    ("loglevel", "level"), [("warning", logging.WARNING), ("info", logging.INFO)]
)
def test_debug_records_are_not_built_below_the_level_asked_for(loglevel: str, level: int) -> None:
    root = logging.getLogger()
    saved_level, saved_handlers = root.level, list(root.handlers)
    try:
        worker = worker_for(create_app(Settings()), loglevel)
        worker._setup_logging()
        assert root.level == level
        assert not logging.getLogger("aiokafka.producer.producer").isEnabledFor(logging.DEBUG)
    finally:
        root.setLevel(saved_level)
        root.handlers[:] = saved_handlers

"""Run the faust worker for a settings object."""

from __future__ import annotations

import faust

from agents.app import create_app
from pipeline.config.settings import Settings


def run(settings: Settings, loglevel: str = "info") -> int:
    rt = create_app(settings)
    worker = faust.Worker(rt.app, loglevel=loglevel, quiet=True)
    worker.execute_from_commandline()  # returns on SIGINT/SIGTERM after a clean stop
    return 0

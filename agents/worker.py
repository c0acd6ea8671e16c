"""Run the faust worker for a settings object."""

from __future__ import annotations

import faust

from agents.app import create_app
from agents.context import Runtime
from agents.malloc import fix_mmap_threshold
from pipeline.config.settings import Settings


def worker_for(rt: Runtime, loglevel: str) -> faust.Worker:
    worker = faust.Worker(rt.app, loglevel=loglevel, quiet=True)
    # faust's terminal spinner, on at warning and above, sets the root logger to
    # DEBUG so that it sees every record: every debug call of faust and aiokafka then
    # built a log record (about 12% of the worker's time at --loglevel warning).
    worker.spinner = None
    return worker


def run(settings: Settings, loglevel: str = "info") -> int:
    fix_mmap_threshold()
    worker_for(create_app(settings), loglevel).execute_from_commandline()
    return 0  # execute_from_commandline returns on SIGINT/SIGTERM after a clean stop

"""What the agents share, built once per worker by `agents.app.create_app`."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import faust
from prometheus_client import CollectorRegistry

from pipeline.config.settings import Settings
from pipeline.detection.series import Detection
from pipeline.metrics.factory import EngagementMetrics
from pipeline.metrics.labels import AccountLabels
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows.aggregator import Aggregator, PartitionState


@dataclass
class Runtime:
    """Everything the agents share; built once per worker."""

    settings: Settings
    app: faust.App
    registry: CollectorRegistry
    metrics: EngagementMetrics
    aggregator: Aggregator
    responses: ResponseTracker
    detection: Detection
    labels: AccountLabels
    raw_topics: dict[str, str]  # full topic name -> kind family
    events_topic: Any
    windows_topic: Any
    alerts_topic: Any
    deadletter_topic: Any
    state_table: Any
    states: dict[int, PartitionState] = field(default_factory=dict)

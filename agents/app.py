"""The faust application: topics, the state table, and wiring of the agents."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import faust
import mode
from prometheus_client import CollectorRegistry

from agents import faust_fixes
from pipeline.aggregator import Aggregator, AggregatorConfig, PartitionState
from pipeline.detection import Detection
from pipeline.labels import AccountLabels
from pipeline.metrics import EngagementMetrics
from pipeline.responses import ResponseTracker
from pipeline.security import faust_credentials
from pipeline.settings import Settings

RAW_TOPICS = {
    "social.likes": "interaction",
    "social.comments": "interaction",
    "social.shares": "interaction",
    "social.mentions": "interaction",
    "social.dms": "interaction",
    "social.replies": "interaction",
    "social.exposure": "exposure",
}
EVENTS_TOPIC = "engagement.events"
WINDOWS_TOPIC = "engagement.windows"
ALERTS_TOPIC = "engagement.alerts"
DEADLETTER_TOPIC = "engagement.deadletter"

log = logging.getLogger("engagement")


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


def aggregator_config(s: Settings) -> AggregatorConfig:
    return AggregatorConfig(
        sizes_ms=tuple(sorted(w * 1000 for w in s.window_sizes_s)),
        lateness_ms=s.allowed_lateness_s * 1000,
        grace_ms=s.grace_s * 1000,
        idle_after_ms=s.idle_after_s * 1000,
        horizon_ms=s.dedup_horizon_s * 1000,
        max_ids=s.dedup_max_ids,
        weights=dict(s.weights),
        rate_basis=dict(s.rate_basis_by_account),
        default_basis=s.default_rate_basis,
        source_stale_ms=int(s.progress_stale_s * 1000),
        max_cooldown_ms=max((r.cooldown_s for r in s.thresholds), default=0) * 1000,
        negative_below=s.detection.negative_below,
        response_kinds=frozenset({*s.responses.inbound_kinds, "reply"}),
    )


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> Runtime:
    s = settings
    faust_fixes.install()
    app = faust.App(
        s.app_id,
        broker=s.broker,
        # TLS and SASL for every client faust creates (consumers, producers, the
        # admin calls that create topics); the password never reaches a log line.
        broker_credentials=faust_credentials(s),
        processing_guarantee=s.processing_guarantee,
        store="memory://",
        autodiscover=False,
        datadir=s.data_dir,
        topic_partitions=s.partitions,
        topic_replication_factor=1,
        key_serializer="raw",
        value_serializer="raw",
        web_host=s.web_host,
        web_port=s.web_port,
        web_enabled=True,
        broker_session_timeout=s.session_timeout_s,
        broker_rebalance_timeout=s.rebalance_timeout_s,
        broker_heartbeat_interval=s.heartbeat_interval_s,
        broker_commit_interval=s.commit_interval_s,
        consumer_auto_offset_reset="earliest",
        producer_acks=-1,
        # Batch records per partition up to this size: with aiokafka's 16 KiB default,
        # each ~100 KiB changelog or forwarded batch waited for the previous one to be
        # acknowledged before it could even be queued.
        producer_max_batch_size=900_000,
        # A rebalance waits for in-flight batches to finish before partitions move.
        stream_wait_empty=True,
        # An exception in an agent stops the worker, which restarts from durable
        # state, instead of restarting the agent with half-applied in-memory state.
        agent_supervisor=mode.CrashingSupervisor,
    )
    registry = registry if registry is not None else CollectorRegistry()

    def topic(name: str, **kw: Any) -> Any:
        return app.topic(
            s.topic(name),
            key_serializer="raw",
            value_serializer="raw",
            partitions=s.partitions,
            **kw,
        )

    rt = Runtime(
        settings=s,
        app=app,
        registry=registry,
        metrics=EngagementMetrics.create(registry),
        aggregator=Aggregator(aggregator_config(s)),
        responses=ResponseTracker(s.responses),
        detection=Detection(s.detection),
        labels=AccountLabels(s.metrics_accounts, s.metrics_top_accounts),
        raw_topics={s.topic(name): family for name, family in RAW_TOPICS.items()},
        events_topic=topic(EVENTS_TOPIC, internal=True),
        windows_topic=topic(WINDOWS_TOPIC),
        alerts_topic=topic(ALERTS_TOPIC),
        deadletter_topic=topic(DEADLETTER_TOPIC),
        state_table=app.Table(
            "window-state",
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,
        ),
    )
    from agents import aggregate, router, web  # the agents register themselves on rt.app

    router.register(rt)
    work = aggregate.register(rt)
    web.register(rt, work)
    return rt

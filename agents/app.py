"""The faust application: topics, the state table, and wiring of the agents. The
composition root of the worker: it imports the agents, and nothing imports it but
the worker and the tests."""

from __future__ import annotations

import logging
from typing import Any

import faust
import mode
from prometheus_client import CollectorRegistry

from agents import aggregate, batched_fetch, faust_fixes, router, web
from agents.context import Runtime
from pipeline.config.security import ssl_context
from pipeline.config.settings import Settings
from pipeline.detection.series import Detection
from pipeline.metrics.factory import EngagementMetrics
from pipeline.metrics.labels import AccountLabels
from pipeline.model import topics
from pipeline.responses.tracker import ResponseTracker
from pipeline.windows.aggregator import Aggregator, AggregatorConfig

log = logging.getLogger("engagement")


def faust_credentials(s: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """faust.App's `broker_credentials`. faust maps them onto aiokafka
    (`credentials_to_aiokafka_auth`): SASLCredentials becomes security_protocol
    SASL_PLAINTEXT, or SASL_SSL when it carries an ssl_context, with the mechanism
    (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are all in faust's SASLMechanism) and
    username/password; SSLCredentials becomes SSL with its context. Everything these
    settings express maps; SASLCredentials' repr shows the username only."""
    context = ssl_context(s)
    if s.uses_sasl:
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password.reveal(),
            mechanism=s.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


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
    batched_fetch.install()
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
        raw_topics={s.topic(name): topics.family(name) for name in topics.INPUTS},
        events_topic=topic(topics.EVENTS, internal=True),
        windows_topic=topic(topics.WINDOWS),
        alerts_topic=topic(topics.ALERTS),
        deadletter_topic=topic(topics.DEADLETTER),
        state_table=app.Table(
            "window-state",
            partitions=s.partitions,
            key_type=bytes,
            value_type=bytes,
        ),
    )
    batched_fetch.batch_topics(app, rt.raw_topics)
    # the agents register themselves on rt.app
    router.register(rt)
    work = aggregate.register(rt)
    web.register(rt, work)
    return rt

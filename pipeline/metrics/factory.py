"""The one metrics factory: every engagement_ series, on a registry you pass in (the
state gauges, read at scrape time, by `register_state_gauges`; the gauges of the
latest final windows and detector judgments by `register_latest_gauges`; the
Alertmanager bridge's, in its own process, by `bridge.BridgeMetrics`)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics

from pipeline.metrics.collectors import StateGauges, StateSource
from pipeline.metrics.labels import AccountLabels
from pipeline.metrics.latest import LatestGauges

# *_created series double the exposition for no use in Grafana or alert rules.
disable_created_metrics()  # type: ignore[no-untyped-call]

# First response times: a minute to two days, around common SLAs (15 min, 1 h, 4 h, 1 d)
RESPONSE_BUCKETS = (60, 300, 900, 1800, 3600, 7200, 14400, 28800, 86400, 172800)
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


@dataclass(frozen=True, slots=True)
class EngagementMetrics:
    events: Counter
    invalid: Counter
    late: Counter
    duplicates: Counter
    skipped_offsets: Counter
    windows_emitted: Counter
    alerts: Counter
    account_events: Counter
    processing_latency: Histogram
    output_latency: Histogram
    first_response: Histogram
    sla_alerts: Counter

    @classmethod
    def create(cls, registry: CollectorRegistry) -> EngagementMetrics:
        r = registry
        return cls(
            events=Counter(
                "engagement_events_total",
                "Valid events counted, by kind and channel",
                ["kind", "channel"],
                registry=r,
            ),
            invalid=Counter(
                "engagement_invalid_events_total",
                "Messages sent to the dead-letter topic, by reason",
                ["reason"],
                registry=r,
            ),
            late=Counter(
                "engagement_late_events_total",
                "Events behind the watermark: counted (window still open) or "
                "dropped (window already final)",
                ["disposition"],
                registry=r,
            ),
            duplicates=Counter(
                "engagement_duplicate_events_total", "Redelivered event_ids ignored", registry=r
            ),
            skipped_offsets=Counter(
                "engagement_internal_messages_skipped_total",
                "Internal-topic messages the consumer jumped over, never applied (a loss)",
                registry=r,
            ),
            windows_emitted=Counter(
                "engagement_windows_emitted_total",
                "Final windows published, by size",
                ["size"],
                registry=r,
            ),
            alerts=Counter(
                "engagement_alerts_total",
                "Alerts published",
                ["type", "severity", "account"],
                registry=r,
            ),
            account_events=Counter(
                "engagement_account_events_total",
                "Valid events by account (configured or top N, else other)",
                ["account"],
                registry=r,
            ),
            processing_latency=Histogram(
                "engagement_processing_latency_seconds",
                "Broker append time of a raw message to its effect in window state",
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            output_latency=Histogram(
                "engagement_event_to_output_latency_seconds",
                "Broker append time of the newest event in a window (or alert) to its publication",
                ["output"],
                buckets=LATENCY_BUCKETS,
                registry=r,
            ),
            first_response=Histogram(
                "engagement_first_response_seconds",
                "Inbound message to the brand's first reply, in event time (calendar seconds)",
                ["channel", "kind"],
                buckets=RESPONSE_BUCKETS,
                registry=r,
            ),
            sla_alerts=Counter(
                "engagement_response_sla_alerts_total",
                "SLA warnings and breaches decided (type response_sla_warning or "
                "response_sla_breach), by channel, kind and priority of the inbound message",
                ["type", "channel", "kind", "priority"],
                registry=r,
            ),
        )


def register_state_gauges(registry: CollectorRegistry, source: StateSource) -> StateGauges:
    """The gauges of open windows, dedup ids, open inbound messages and lags, read from
    `source` at every scrape (pipeline.metrics.collectors)."""
    gauges = StateGauges(source)
    registry.register(gauges)
    return gauges


def register_latest_gauges(
    registry: CollectorRegistry, labels: AccountLabels, channels: frozenset[str]
) -> LatestGauges:
    """The gauges of each labeled account's latest final windows and detector
    judgments (pipeline.metrics.latest), fed by the step observer."""
    gauges = LatestGauges(labels, channels)
    registry.register(gauges)
    return gauges

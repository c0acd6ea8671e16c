"""The Alertmanager bridge's series, on a registry passed in: the bridge runs in a
process of its own, so they are apart from the worker's (`factory`)."""

from __future__ import annotations

from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

POST_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
SKIP_REASONS = ("invalid_record", "rejected")


@dataclass(frozen=True, slots=True)
class BridgeMetrics:
    posted: Counter
    skipped: Counter
    resolved_on_arrival: Counter
    retries: Counter
    post_duration: Histogram
    commit_failures: Counter
    last_accepted: Gauge

    @classmethod
    def create(cls, registry: CollectorRegistry) -> BridgeMetrics:
        r = registry
        skipped = Counter(
            "engagement_alertmanager_alerts_skipped_total",
            "Records not delivered, by reason: invalid_record (not an alert.v1) or "
            "rejected (Alertmanager answered 400/413/422 for that alert alone)",
            ["reason"],
            registry=r,
        )
        for reason in SKIP_REASONS:
            skipped.labels(reason=reason)
        return cls(
            posted=Counter(
                "engagement_alertmanager_alerts_posted_total",
                "Alerts accepted by Alertmanager (a re-delivered record counts again)",
                registry=r,
            ),
            skipped=skipped,
            resolved_on_arrival=Counter(
                "engagement_alertmanager_alerts_resolved_on_arrival_total",
                "Alerts posted after their endsAt (emitted_at + resolve timeout): stored "
                "by Alertmanager as resolved, never notified",
                registry=r,
            ),
            retries=Counter(
                "engagement_alertmanager_post_retries_total",
                "Posts to be tried again, by reason",
                ["reason"],
                registry=r,
            ),
            post_duration=Histogram(
                "engagement_alertmanager_post_duration_seconds",
                "Duration of one POST /api/v2/alerts to every Alertmanager URL",
                buckets=POST_BUCKETS,
                registry=r,
            ),
            commit_failures=Counter(
                "engagement_alertmanager_commit_failures_total",
                "Offset commits refused (a rebalance took the partitions): the records "
                "are delivered again, as the same alerts",
                registry=r,
            ),
            last_accepted=Gauge(
                "engagement_alertmanager_last_accepted_timestamp_seconds",
                "Wall time of Alertmanager's last 2xx",
                registry=r,
            ),
        )

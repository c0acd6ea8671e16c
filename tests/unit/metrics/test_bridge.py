"""The bridge's series, on a fresh registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from pipeline.metrics.bridge import BridgeMetrics


def test_series_names_and_skip_reasons_exported_from_the_start() -> None:
    registry = CollectorRegistry()
    m = BridgeMetrics.create(registry)
    for reason in ("invalid_record", "rejected"):
        value = registry.get_sample_value(
            "engagement_alertmanager_alerts_skipped_total", {"reason": reason}
        )
        assert value == 0.0
    m.posted.inc(3)
    m.retries.labels(reason="unreachable").inc()
    m.post_duration.observe(0.02)
    assert registry.get_sample_value("engagement_alertmanager_alerts_posted_total") == 3
    assert (
        registry.get_sample_value(
            "engagement_alertmanager_post_retries_total", {"reason": "unreachable"}
        )
        == 1
    )
    assert registry.get_sample_value("engagement_alertmanager_post_duration_seconds_count") == 1

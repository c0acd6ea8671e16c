"""pipeline.metrics.observe: what a processor step saw, counted once per step."""

from __future__ import annotations

import orjson
from prometheus_client import CollectorRegistry

from pipeline.durability.processor import ALERT, DEADLETTER, WINDOW, Observed, Publish
from pipeline.metrics.factory import EngagementMetrics
from pipeline.metrics.labels import AccountLabels
from pipeline.metrics.observe import StepMetrics
from tests.unit.fixtures import BASE, ia


def test_a_step_is_counted_by_kind_bounded_channel_and_account_label() -> None:
    registry = CollectorRegistry()
    m = EngagementMetrics.create(registry)
    observer = StepMetrics(m, AccountLabels(("acme",), 0), frozenset({"x"}))
    rows = [ia("a", BASE), ia("b", BASE, channel="myspace"), ia("c", BASE, account="globex")]
    observer.step(
        Observed(
            rows=rows, duplicates=2, late_counted=1, too_late=3, oldest_ms=BASE, skipped_offsets=4
        ),
        now=BASE / 1000 + 5,
    )
    value = registry.get_sample_value
    assert value("engagement_events_total", {"kind": "like", "channel": "x"}) == 2
    assert value("engagement_events_total", {"kind": "like", "channel": "other"}) == 1
    assert value("engagement_account_events_total", {"account": "acme"}) == 2
    assert value("engagement_account_events_total", {"account": "other"}) == 1
    assert value("engagement_duplicate_events_total") == 2
    assert value("engagement_internal_messages_skipped_total") == 4
    assert value("engagement_late_events_total", {"disposition": "dropped"}) == 3
    assert value("engagement_processing_latency_seconds_sum") == 5
    window = {"size_seconds": 60, "account_id": "acme"}
    observer.published(Publish(WINDOW, b"acme", orjson.dumps(window), BASE), BASE / 1000 + 2)
    alert = {"type": "threshold_above", "severity": "warning", "account_id": "globex"}
    observer.published(Publish(ALERT, b"globex", orjson.dumps(alert)), BASE / 1000)
    observer.published(Publish(DEADLETTER, None, b"{}"), BASE / 1000)  # not an output
    assert value("engagement_windows_emitted_total", {"size": "60s"}) == 1
    labels = {"type": "threshold_above", "severity": "warning", "account": "other"}
    assert value("engagement_alerts_total", labels) == 1
    assert value("engagement_event_to_output_latency_seconds_count", {"output": "window"}) == 1
    assert value("engagement_event_to_output_latency_seconds_count", {"output": "alert"}) is None


def test_an_account_that_leaves_the_top_loses_its_series_at_the_refresh() -> None:
    registry = CollectorRegistry()
    observer = StepMetrics(EngagementMetrics.create(registry), AccountLabels((), 1), frozenset())
    value = registry.get_sample_value
    observer.step(Observed(rows=[ia("a", BASE, account="globex")]), now=BASE / 1000)
    observer.refresh_labels()  # globex is the top account from now on
    observer.step(Observed(rows=[ia("b", BASE, account="globex")]), now=BASE / 1000)
    assert value("engagement_account_events_total", {"account": "globex"}) == 1
    busier = [ia(f"c{i}", BASE, account="initech") for i in range(3)]
    observer.step(Observed(rows=busier), now=BASE / 1000)
    observer.refresh_labels()
    assert value("engagement_account_events_total", {"account": "globex"}) is None
    observer.step(Observed(rows=[ia("d", BASE, account="initech")]), now=BASE / 1000)
    assert value("engagement_account_events_total", {"account": "initech"}) == 1
    assert value("engagement_account_events_total", {"account": "other"}) == 4

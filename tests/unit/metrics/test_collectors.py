"""pipeline.metrics.collectors: state gauges read at scrape time, from the state itself."""

from __future__ import annotations

from collections.abc import Mapping

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from pipeline.metrics.collectors import GAUGES, StateSource
from pipeline.metrics.factory import EngagementMetrics, register_state_gauges
from pipeline.windows.state import PartitionState
from tests.unit.fixtures import BASE, SEC, Run, ia

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(registry: CollectorRegistry) -> Samples:
    out: Samples = {}
    for family in text_string_to_metric_families(generate_latest(registry).decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def test_the_gauges_describe_the_state_at_every_scrape_and_forget_what_left() -> None:
    one, two = Run(), Run()
    one.apply([ia("a", BASE), ia("b", BASE + 70 * SEC)])  # two minutes: windows at 1 and 5 min
    two.apply([ia("c", BASE, channel="instagram")])
    one.state.responses.open_counts[("x", "dm")] = 2
    two.state.responses.open_counts[("myspace", "dm")] = 1  # not a kept channel: other
    owned: dict[int, PartitionState] = {0: one.state, 3: two.state}
    lag: Mapping[tuple[str, int], int] = {("social.likes", 0): 7}
    wall = BASE + 100 * SEC
    registry = CollectorRegistry()
    EngagementMetrics.create(registry)
    register_state_gauges(
        registry,
        StateSource(
            states=lambda: owned,
            consumer_lag=lambda: lag,
            channels=frozenset({"x", "instagram"}),
            wall_ms=lambda: wall,
        ),
    )
    got = scrape(registry)
    windows = len(one.state.windows) + len(two.state.windows)
    assert windows == 5  # 2 + 1 one-minute windows, 1 + 1 five-minute windows
    assert got[("engagement_open_windows", ())] == windows
    assert got[("engagement_dedup_ids", ())] == 3
    assert got[("engagement_open_inbound", (("channel", "x"), ("kind", "dm")))] == 2
    assert got[("engagement_open_inbound", (("channel", "other"), ("kind", "dm")))] == 1
    assert got[("engagement_consumer_lag", (("partition", "0"), ("topic", "social.likes")))] == 7
    floor = one.state.watermark.floor_ms
    assert floor is not None
    assert got[("engagement_watermark_lag_seconds", (("partition", "0"),))] == (wall - floor) / 1000
    # The state moves and a partition leaves: the next scrape says so, nobody zeroes a label.
    one.apply([ia("d", BASE + 75 * SEC)])
    del owned[3]
    lag = {}
    again = scrape(registry)
    assert again[("engagement_dedup_ids", ())] == 3
    assert again[("engagement_open_windows", ())] == len(one.state.windows)
    assert not any(name == "engagement_consumer_lag" for name, _ in again)
    assert not any(dict(labels).get("partition") == "3" for _, labels in again)
    assert ("engagement_open_inbound", (("channel", "other"), ("kind", "dm"))) not in again


def test_every_gauge_family_is_exported_even_before_any_state() -> None:
    registry = CollectorRegistry()
    register_state_gauges(
        registry, StateSource(lambda: {}, lambda: {}, frozenset(), wall_ms=lambda: 0)
    )
    text = generate_latest(registry).decode()
    for name in GAUGES:
        assert f"# TYPE {name} gauge" in text
    assert scrape(registry)[("engagement_open_windows", ())] == 0

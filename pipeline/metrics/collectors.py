"""Gauges that describe the worker's state, computed when Prometheus scrapes: nothing
sets them on a timer, and a partition that moved away simply stops being reported."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass

from ddsketch import DDSketch
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.metrics.labels import OTHER
from pipeline.responses import sketch
from pipeline.windows.state import PartitionState

# name -> (help, label names): the exposition contract of these gauges
GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "engagement_open_windows": ("Windows not yet final", ()),
    "engagement_dedup_ids": ("Event ids held for dedup", ()),
    "engagement_open_inbound": (
        "Inbound messages without a reply yet, on this worker's partitions",
        ("channel", "kind"),
    ),
    "engagement_watermark_lag_seconds": (
        "Wall clock minus the partition's watermark",
        ("partition",),
    ),
    "engagement_consumer_lag": (
        "Messages between the committed position and the end of each assigned partition",
        ("topic", "partition"),
    ),
    "engagement_response_within_sla_ratio": (
        "First responses within their SLA / first responses with an SLA, per account, "
        "since the response state began (as the response-times API)",
        ("account",),
    ),
    "engagement_response_oldest_open_age_seconds": (
        "Age of the account's oldest inbound message without a reply, at its "
        "partition's watermark (event time)",
        ("account",),
    ),
    "engagement_account_open_inbound": (
        "Inbound messages without a reply yet, per account",
        ("account",),
    ),
    "engagement_response_first_response_seconds": (
        "First response time per account, calendar seconds, since the response state "
        "began: quantile 0.5 and 0.9 of a sketch with 1% relative error (as the "
        "response-times API)",
        ("account", "quantile"),
    ),
}


@dataclass(frozen=True)
class StateSource:
    """Where the gauges read from; each callable is asked at scrape time."""

    states: Callable[[], Mapping[int, PartitionState]]  # the partitions to describe
    consumer_lag: Callable[[], Mapping[tuple[str, int], int]]  # last measured, by topic/partition
    channels: frozenset[str]  # channel label values kept; others are OTHER
    wall_ms: Callable[[], int]
    # accounts with their own label (AccountLabels.has_own): the per-account gauges
    # are computed for these only, others are not exported per account
    own_account: Callable[[str], bool] = lambda account: False


class StateGauges(Collector):
    def __init__(self, source: StateSource) -> None:
        self.source = source

    def describe(self) -> Iterator[Metric]:
        """The families without samples, so registering needs no state."""
        for name, (doc, labels) in GAUGES.items():
            yield GaugeMetricFamily(name, doc, labels=labels)

    def collect(self) -> Iterator[Metric]:
        src = self.source
        states = dict(src.states())
        families = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, (doc, labels) in GAUGES.items()
        }
        families["engagement_open_windows"].add_metric(
            [], sum(len(s.windows) for s in states.values())
        )
        families["engagement_dedup_ids"].add_metric([], sum(len(s.dedup) for s in states.values()))
        open_inbound: Counter[tuple[str, str]] = Counter()
        for state in states.values():
            for (channel, kind), n in state.responses.open_counts.items():
                open_inbound[(channel if channel in src.channels else OTHER, kind)] += n
        for (channel, kind), n in sorted(open_inbound.items()):
            families["engagement_open_inbound"].add_metric([channel, kind], n)
        wall_ms = src.wall_ms()
        for p, state in sorted(states.items()):
            floor = state.watermark.floor_ms
            if floor is not None:
                families["engagement_watermark_lag_seconds"].add_metric(
                    [str(p)], (wall_ms - floor) / 1000
                )
        for (topic, partition), lag in sorted(src.consumer_lag().items()):
            families["engagement_consumer_lag"].add_metric([topic, str(partition)], lag)
        self._accounts(families, states.values())
        yield from families.values()

    def _accounts(
        self, families: dict[str, GaugeMetricFamily], states: Iterable[PartitionState]
    ) -> None:
        """Response times per labeled account: one pass over its tracked inbound
        messages at each scrape, nothing on the hot path."""
        own = self.source.own_account
        sla: dict[str, list[int]] = {}  # account -> [within, with SLA]
        firsts: dict[str, list[DDSketch]] = {}
        opened: Counter[str] = Counter()
        oldest: dict[str, float] = {}
        for state in states:
            st, wm = state.responses, state.watermark.floor_ms
            for account, tables in st.tables.items():
                if own(account):
                    acc = sla.setdefault(account, [0, 0])
                    for t in tables.values():
                        acc[0] += t.within_sla
                        acc[1] += t.with_sla
                    firsts.setdefault(account, []).extend(t.first for t in tables.values())
            for account, entries in st.inbound.items():
                if not own(account):
                    continue
                open_ts = [e.ts_ms for e in entries.values() if e.open]
                opened[account] += len(open_ts)  # 0 too: tracked, all answered
                if open_ts and wm is not None:
                    age = max(0.0, (wm - min(open_ts)) / 1000)
                    oldest[account] = max(age, oldest.get(account, 0.0))
        for account, (within, with_sla) in sorted(sla.items()):
            if with_sla:
                families["engagement_response_within_sla_ratio"].add_metric(
                    [account], within / with_sla
                )
        for account, sketches in sorted(firsts.items()):
            merged = sketch.merged(sketches)
            if merged.count:
                for q in (0.5, 0.9):
                    families["engagement_response_first_response_seconds"].add_metric(
                        [account, str(q)], sketch.quantile(merged, q)
                    )
        for account, age in sorted(oldest.items()):
            families["engagement_response_oldest_open_age_seconds"].add_metric([account], age)
        for account, n in sorted(opened.items()):
            families["engagement_account_open_inbound"].add_metric([account], n)

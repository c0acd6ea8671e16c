"""Gauges of engagement itself: each labeled account's latest final window of every
size, and how the spike/drop detectors judged its newest final window.

The metrics observer hands over what a step's close decided (its final window records
and detector judgments), once per step; nothing is done per event. The values are
held per partition and exported when Prometheus scrapes, only for accounts with their
own label (configured, or in the top N): an account without one is neither held nor
exported (an "other" sum of rates or expected values would mean nothing). A
partition that leaves this worker takes its values with it.

They describe the latest final window, in event time: a replay of old data moves them
when it is replayed, to the replayed windows. The windows topic (engagement.windows)
is what to chart history from.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from pipeline.detection.series import Judged
from pipeline.metrics.labels import OTHER, AccountLabels
from pipeline.windows.state import FinalWindow

BASES = ("followers", "reach", "impressions")
_LATEST = "Latest final window"
_JUDGED = "Latest final window judged by the detectors (the detection window size)"

# name -> (help, label names): the exposition contract of these gauges
WINDOW_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "engagement_window_events": (
        f"{_LATEST} of each size, per account: events by kind, channels summed",
        ("account", "size_seconds", "kind"),
    ),
    "engagement_window_weighted_engagement": (
        f"{_LATEST} of each size, per account: weighted engagement, channels summed",
        ("account", "size_seconds"),
    ),
    "engagement_window_unique_actors": (
        f"{_LATEST} of each size, per account: distinct actors of each channel, summed "
        "over channels",
        ("account", "size_seconds"),
    ),
    "engagement_window_rate": (
        f"{_LATEST} of each size, per account: weighted engagement / the basis (followers, "
        "reach or impressions), over the channels that report that basis",
        ("account", "size_seconds", "basis"),
    ),
    "engagement_window_end_timestamp_seconds": (
        f"{_LATEST} of each size, per account: its end in event time (Unix seconds)",
        ("account", "size_seconds"),
    ),
    "engagement_window_channel_events": (
        f"{_LATEST} of each size, per account and channel (channels outside "
        "metrics.channels summed as other): events by kind",
        ("account", "channel", "size_seconds", "kind"),
    ),
    "engagement_window_channel_weighted_engagement": (
        f"{_LATEST} of each size, per account and channel (channels outside "
        "metrics.channels summed as other): weighted engagement",
        ("account", "channel", "size_seconds"),
    ),
    "engagement_window_channel_rate": (
        f"{_LATEST} of each size, per account and channel (channels outside "
        "metrics.channels pooled as other): weighted engagement / the basis, where the "
        "channel reports it",
        ("account", "channel", "size_seconds", "basis"),
    ),
}
DETECTOR_GAUGES: dict[str, tuple[str, tuple[str, ...]]] = {
    "engagement_detector_observed": (
        f"{_JUDGED}: the value of each series (channels summed)",
        ("account", "series"),
    ),
    "engagement_detector_expected": (
        f"{_JUDGED}: the value the detector expected for it",
        ("account", "series"),
    ),
    "engagement_detector_threshold": (
        f"{_JUDGED}: the band, the value at or beyond which it qualifies as a spike "
        "(upper) or a drop (lower), persistence and cooldown aside; absent where no "
        "value would qualify (no history yet, a direction the series is not judged in)",
        ("account", "series", "bound"),
    ),
    "engagement_detector_anomaly_score": (
        f"{_JUDGED}: anomaly score in [0, 1], 0.5 where the deviation reaches the band",
        ("account", "series"),
    ),
    "engagement_detector_alert_active": (
        f"{_JUDGED}: 1 while an alert episode is active (a run of qualifying windows in "
        "which an alert was raised), else 0",
        ("account", "series"),
    ),
}
LATEST_GAUGES = {**WINDOW_GAUGES, **DETECTOR_GAUGES}


@dataclass(slots=True)
class _Latest:
    """One account's latest final window of one size: a record per channel."""

    start_ms: int
    end_ms: int
    channels: dict[str, dict[str, Any]] = field(default_factory=dict)


class LatestGauges(Collector):
    def __init__(self, labels: AccountLabels, channels: frozenset[str]) -> None:
        self.labels, self.channels = labels, channels
        # partition -> (account, size_seconds) -> latest window
        self.windows: dict[int, dict[tuple[str, int], _Latest]] = {}
        # partition -> (account, series) -> how it judged the newest final window
        self.judgments: dict[int, dict[tuple[str, str], Judged]] = {}

    # -- what the observer hands over, once per step ---------------------------------
    def closed(self, p: int, finals: Iterable[FinalWindow]) -> None:
        """Final windows of partition p, in any order: each labeled account keeps the
        newest of every size (all channels of one window close together)."""
        held = self.windows.setdefault(p, {})
        own = self.labels.has_own
        for fw in finals:
            rec = fw.record
            account = rec["account_id"]
            if not own(account):
                continue
            key = (account, rec["size_seconds"])
            cur = held.get(key)
            if cur is None or fw.start_ms > cur.start_ms:
                cur = held[key] = _Latest(fw.start_ms, fw.end_ms)
            elif fw.start_ms < cur.start_ms:
                continue
            cur.channels[rec["channel"]] = rec

    def judged(self, p: int, judged: Mapping[tuple[str, str], Judged], forgotten: set[str]) -> None:
        held = self.judgments.setdefault(p, {})
        own = self.labels.has_own
        for key, j in judged.items():
            if own(key[0]):
                held[key] = j
        if forgotten:
            for key in [k for k in held if k[0] in forgotten]:
                del held[key]

    def drop(self, p: int) -> None:
        """A partition this worker no longer owns."""
        self.windows.pop(p, None)
        self.judgments.pop(p, None)

    def forget(self, accounts: Iterable[str]) -> None:
        """Accounts that lost their label."""
        gone = set(accounts)
        if not gone:
            return
        for windows in self.windows.values():
            for wkey in [k for k in windows if k[0] in gone]:
                del windows[wkey]
        for judgments in self.judgments.values():
            for jkey in [k for k in judgments if k[0] in gone]:
                del judgments[jkey]

    # -- scrape ---------------------------------------------------------------------
    def describe(self) -> Iterator[Metric]:
        for name, (doc, labels) in LATEST_GAUGES.items():
            yield GaugeMetricFamily(name, doc, labels=labels)

    def collect(self) -> Iterator[Metric]:
        fam = {
            name: GaugeMetricFamily(name, doc, labels=labels)
            for name, (doc, labels) in LATEST_GAUGES.items()
        }
        own = self.labels.has_own
        for by_key in self.windows.values():
            for (account, size_s), latest in sorted(by_key.items()):
                if own(account):
                    self._window(fam, account, str(size_s), latest)
        for judgments in self.judgments.values():
            for (account, series), j in sorted(judgments.items()):
                if own(account) and j.step is not None:
                    self._judgment(fam, account, series, j)
        yield from fam.values()

    def _window(
        self, fam: dict[str, GaugeMetricFamily], account: str, size: str, w: _Latest
    ) -> None:
        counts: defaultdict[str, int] = defaultdict(int)
        by_channel: defaultdict[str, defaultdict[str, int]] = defaultdict(lambda: defaultdict(int))
        weighted_by_channel: defaultdict[str, float] = defaultdict(float)
        weighted = 0.0
        actors = 0
        pooled = {basis: [0.0, 0] for basis in BASES}  # weighted, denominator
        pooled_by_channel: defaultdict[tuple[str, str], list[float]] = defaultdict(
            lambda: [0.0, 0.0]
        )
        for channel, rec in w.channels.items():
            label = channel if channel in self.channels else OTHER
            for kind, n in rec["counts"].items():
                counts[kind] += n
                by_channel[label][kind] += n
            weighted += rec["weighted_engagement"]
            weighted_by_channel[label] += rec["weighted_engagement"]
            actors += rec["unique_actors"]
            for basis in BASES:
                den = rec.get(basis)
                if den:  # a rate exists only where its denominator is positive
                    pooled[basis][0] += rec["weighted_engagement"]
                    pooled[basis][1] += den
                    pooled_by_channel[(label, basis)][0] += rec["weighted_engagement"]
                    pooled_by_channel[(label, basis)][1] += den
        for kind, n in sorted(counts.items()):
            fam["engagement_window_events"].add_metric([account, size, kind], n)
        fam["engagement_window_weighted_engagement"].add_metric([account, size], weighted)
        fam["engagement_window_unique_actors"].add_metric([account, size], actors)
        for basis, (num, den) in pooled.items():
            if den > 0:
                fam["engagement_window_rate"].add_metric([account, size, basis], num / den)
        fam["engagement_window_end_timestamp_seconds"].add_metric([account, size], w.end_ms / 1000)
        for channel, kinds in sorted(by_channel.items()):
            for kind, n in sorted(kinds.items()):
                labels = [account, channel, size, kind]
                fam["engagement_window_channel_events"].add_metric(labels, n)
            fam["engagement_window_channel_weighted_engagement"].add_metric(
                [account, channel, size], weighted_by_channel[channel]
            )
        for (channel, basis), (num, den) in sorted(pooled_by_channel.items()):
            fam["engagement_window_channel_rate"].add_metric(
                [account, channel, size, basis], num / den
            )

    @staticmethod
    def _judgment(fam: dict[str, GaugeMetricFamily], account: str, series: str, j: Judged) -> None:
        s = j.step
        assert s is not None
        labels = [account, series]
        for name, value in (
            ("engagement_detector_observed", s.observed),
            ("engagement_detector_expected", s.expected),
            ("engagement_detector_anomaly_score", s.score),
        ):
            if math.isfinite(value):
                fam[name].add_metric(labels, value)
        fam["engagement_detector_alert_active"].add_metric(labels, 1.0 if j.active else 0.0)
        for bound, edge in (("upper", s.upper), ("lower", s.lower)):
            if edge is not None and math.isfinite(edge):
                fam["engagement_detector_threshold"].add_metric([*labels, bound], edge)

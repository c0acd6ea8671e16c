"""The metrics of what a processor step saw and published: counted once per step
(per batch), never per event on the hot path."""

from __future__ import annotations

import contextlib
from collections import Counter

import orjson

from pipeline.durability.processor import ALERT, WINDOW, Observed, Publish
from pipeline.metrics.factory import EngagementMetrics
from pipeline.metrics.labels import OTHER, AccountLabels
from pipeline.metrics.latest import LatestGauges
from pipeline.model import wire
from pipeline.responses.tracker import Decision

SLA_TYPES = frozenset({"response_sla_warning", "response_sla_breach"})


class StepMetrics:
    """`latest`: the gauges of the latest final windows and detector judgments it
    feeds (registered by the factory; by default an unregistered one)."""

    def __init__(
        self,
        metrics: EngagementMetrics,
        labels: AccountLabels,
        channels: frozenset[str],
        latest: LatestGauges | None = None,
    ) -> None:
        self.m, self.labels, self.channels = metrics, labels, channels
        self.latest = latest if latest is not None else LatestGauges(labels, channels)

    def _channel(self, channel: str) -> str:
        return channel if channel in self.channels else OTHER

    def refresh_labels(self) -> None:
        """Re-rank the accounts named in labels; a series of one that left the top is
        removed (label cardinality stays bounded)."""
        dropped = self.labels.refresh()
        for account in dropped:
            with contextlib.suppress(KeyError):
                self.m.account_events.remove(account)
        self.latest.forget(dropped)

    def drop(self, p: int) -> None:
        """A partition this worker no longer owns: its latest values go with it."""
        self.latest.drop(p)

    def published(self, effect: Publish, now: float) -> None:
        """A window or alert sent (dead letters are counted where they are decided)."""
        m = self.m
        if effect.topic == WINDOW:
            m.windows_emitted.labels(f"{orjson.loads(effect.value)['size_seconds']}s").inc()
        elif effect.topic == ALERT:
            alert = orjson.loads(effect.value)
            account = self.labels.label(alert["account_id"])
            m.alerts.labels(alert["type"], alert["severity"], account).inc()
        else:
            return
        if effect.newest_ms:
            m.output_latency.labels(effect.topic).observe(max(0.0, now - effect.newest_ms / 1000))

    def step(self, seen: Observed, now: float, partition: int = 0) -> None:
        m = self.m
        if seen.rows:
            self._count(seen.rows)
        if seen.duplicates:
            m.duplicates.inc(seen.duplicates)
        if seen.skipped_offsets:
            m.skipped_offsets.inc(seen.skipped_offsets)
        if seen.late_counted:
            m.late.labels("counted").inc(seen.late_counted)
        if seen.too_late:
            m.late.labels("dropped").inc(seen.too_late)
        if seen.oldest_ms is not None:
            m.processing_latency.observe(max(0.0, now - seen.oldest_ms / 1000))
        for channel, kind, seconds in seen.first_responses:
            m.first_response.labels(self._channel(channel), kind).observe(seconds)
        if seen.windows:
            self.latest.closed(partition, seen.windows)
        if seen.judged or seen.forgotten:
            self.latest.judged(partition, seen.judged, seen.forgotten)
        if seen.decisions:
            self._sla(seen.decisions)

    def _sla(self, decisions: list[Decision]) -> None:
        by: Counter[tuple[str, str, str, str]] = Counter()
        for d in decisions:
            if d.type in SLA_TYPES:
                by[(d.type, self._channel(d.channel or OTHER), d.kind, d.priority)] += 1
        for labels, n in by.items():
            self.m.sla_alerts.labels(*labels).inc(n)

    def _count(self, rows: list[wire.Row]) -> None:
        by_kind: Counter[tuple[str, str]] = Counter()
        by_account: Counter[str] = Counter()
        for row in rows:
            if row[0] == wire.INTERACTION:
                by_kind[(row[wire.I_KIND], row[wire.I_CHANNEL])] += 1
                by_account[row[wire.I_ACCOUNT]] += 1
        for (kind, channel), n in by_kind.items():
            self.m.events.labels(kind, self._channel(channel)).inc(n)
        self.labels.observe(by_account)
        per_label: Counter[str] = Counter()
        for account, n in by_account.items():
            per_label[self.labels.label(account)] += n
        for label, n in per_label.items():
            self.m.account_events.labels(label).inc(n)

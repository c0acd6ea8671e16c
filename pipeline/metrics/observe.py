"""The metrics of what a processor step saw and published: counted once per step
(per batch), never per event on the hot path."""

from __future__ import annotations

import contextlib
from collections import Counter

import orjson

from pipeline.durability.processor import ALERT, WINDOW, Observed, Publish
from pipeline.metrics.factory import EngagementMetrics
from pipeline.metrics.labels import OTHER, AccountLabels
from pipeline.model import wire


class StepMetrics:
    def __init__(
        self, metrics: EngagementMetrics, labels: AccountLabels, channels: frozenset[str]
    ) -> None:
        self.m, self.labels, self.channels = metrics, labels, channels

    def _channel(self, channel: str) -> str:
        return channel if channel in self.channels else OTHER

    def refresh_labels(self) -> None:
        """Re-rank the accounts named in labels; a series of one that left the top is
        removed (label cardinality stays bounded)."""
        for account in self.labels.refresh():
            with contextlib.suppress(KeyError):
                self.m.account_events.remove(account)

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

    def step(self, seen: Observed, now: float) -> None:
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

"""`engagement alertmanager-bridge`: engagement.alerts to Alertmanager's v2 API.

A consumer of the alerts topic in its own group. Each poll's records become one POST
/api/v2/alerts (`pipeline.alertmanager.payload`); the offsets are committed only once
Alertmanager accepted them, or they were skipped as not alert.v1 or refused as
malformed (`pipeline.alertmanager.delivery`). A crash between the post and the commit
posts the same alerts again: same labels, so the same Alertmanager alerts, notified
once. Log lines name records by topic[partition]@offset and alert_id, never by content.
"""

from __future__ import annotations

import http.client
import logging
import random
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kafka import ConsumerRebalanceListener, KafkaConsumer, OffsetAndMetadata, TopicPartition
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.alertmanager.delivery import TP, Offsets, Post, Retry, Stopped, deliver
from pipeline.alertmanager.payload import AmAlert, InvalidAlert, decode, to_alertmanager
from pipeline.config import security
from pipeline.config.settings import Settings
from pipeline.metrics.bridge import BridgeMetrics
from pipeline.model import topics

log = logging.getLogger("engagement.alertmanager_bridge")

# /healthz fails when the loop has not come round for this long (a wedged process):
# not while Alertmanager is down, which a restart would not cure.
STALL_S = 120.0


def poster(urls: Sequence[str], timeout_s: float) -> Post:
    """POST a body to every URL's /api/v2/alerts; one status per URL, None for no answer."""
    endpoints = [url.rstrip("/") + "/api/v2/alerts" for url in urls]

    def post(body: bytes) -> list[int | None]:
        statuses: list[int | None] = []
        for endpoint in endpoints:
            request = urllib.request.Request(
                endpoint, data=body, method="POST", headers={"Content-Type": "application/json"}
            )
            try:
                with urllib.request.urlopen(request, timeout=timeout_s) as response:
                    response.read()
                    statuses.append(response.status)
            except urllib.error.HTTPError as exc:
                exc.read()
                exc.close()
                statuses.append(exc.code)
            except (OSError, http.client.HTTPException) as exc:  # refused, reset, timeout
                log.debug("no answer from %s: %s", endpoint, type(exc).__name__)
                statuses.append(None)
            if statuses[-1] is None or not 200 <= statuses[-1] < 300:
                log.warning("POST %s: %s", endpoint, statuses[-1] or "no answer")
        return statuses

    return post


class Health:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.last_tick = 0.0
        self.failing = ""

    def tick(self) -> None:
        self.last_tick = time.monotonic()

    def ok(self) -> bool:
        return self.last_tick > 0 and time.monotonic() - self.last_tick < STALL_S


def serve(host: str, port: int, registry: CollectorRegistry, health: Health) -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if self.path == "/metrics":
                self._send(200, CONTENT_TYPE_LATEST, generate_latest(registry))
            elif self.path == "/healthz":
                ok = health.ok()
                text = "ok" if ok else "starting or stalled"
                if ok and health.failing:
                    text = f"ok; Alertmanager failing ({health.failing}), retrying"
                self._send(200 if ok else 503, "text/plain; charset=utf-8", text.encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found")

        def _send(self, status: int, ctype: str, data: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((host, port), Handler)
    threading.Thread(target=server.serve_forever, name="bridge-web", daemon=True).start()
    return server


class _Rebalance(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, offsets: Offsets) -> None:
        self.offsets = offsets

    def on_partitions_revoked(self, revoked: Any) -> None:
        self.offsets.forget([(tp.topic, tp.partition) for tp in revoked])

    def on_partitions_assigned(self, assigned: Any) -> None:
        log.info("assigned %s", sorted(f"{tp.topic}[{tp.partition}]" for tp in assigned))


class Bridge:
    """One poll, one post, one commit, until `stop` is set."""

    def __init__(
        self,
        s: Settings,
        stop: threading.Event,
        registry: CollectorRegistry,
        consumer: Any = None,
        post: Post | None = None,
    ) -> None:
        self.s, self.stop, self.registry = s, stop, registry
        self.metrics = BridgeMetrics.create(registry)
        self.health = Health()
        self.offsets = Offsets()
        self.post = post or poster(s.alertmanager_urls, s.alertmanager_timeout_s)
        self.retry = Retry(
            sleep=self._sleep,
            rand=random.random,
            cap_s=s.alertmanager_backoff_max_s,
            on_failure=self._failed,
        )
        self.consumer = (
            consumer
            if consumer is not None
            else KafkaConsumer(
                bootstrap_servers=s.bootstrap_servers,
                group_id=s.alertmanager_group,
                client_id="engagement-alertmanager-bridge",
                enable_auto_commit=False,
                # A new group starts at the oldest alert kept: none is missed; those already
                # past their endsAt are stored as resolved and never notified.
                auto_offset_reset="earliest",
                max_poll_records=s.alertmanager_batch_max,
                session_timeout_ms=int(s.session_timeout_s * 1000),
                heartbeat_interval_ms=int(s.heartbeat_interval_s * 1000),
                **security.kafka_python_config(s),
            )
        )
        self.topic = s.topic(topics.ALERTS)
        self.consumer.subscribe([self.topic], listener=_Rebalance(self.offsets))

    def _sleep(self, delay_s: float) -> bool:
        self.health.tick()
        return not self.stop.wait(delay_s)

    def _failed(self, reason: str, attempt: int) -> None:
        self.metrics.retries.labels(reason=reason).inc()
        self.health.failing = reason
        if attempt == 0 or attempt % 10 == 9:
            log.warning("Alertmanager did not take the alerts (%s): retrying", reason)

    def run(self) -> None:
        while not self.stop.is_set():
            batch = self.consumer.poll(timeout_ms=500, max_records=self.s.alertmanager_batch_max)
            self.health.tick()
            records = sorted(
                (r for rs in batch.values() for r in rs), key=lambda r: (r.partition, r.offset)
            )
            if records:
                try:
                    self.handle(records)
                except Stopped:
                    return
            self.commit()

    def handle(self, records: list[Any]) -> None:
        alerts: list[AmAlert] = []
        origin: list[Any] = []
        for r in records:
            tp = (r.topic, r.partition)
            self.offsets.fetched(tp, r.offset)
            try:
                alerts.append(
                    to_alertmanager(decode(r.value), self.s.alertmanager_resolve_timeout_s)
                )
                origin.append(r)
            except InvalidAlert as exc:
                log.error(
                    "skipped %s[%d]@%d: not an alert.v1 (%s)",
                    r.topic,
                    r.partition,
                    r.offset,
                    exc.reason,
                )
                self.metrics.skipped.labels(reason="invalid_record").inc()
                self.offsets.settled(tp, r.offset)
        if not alerts:
            return
        started = time.monotonic()
        result = deliver(alerts, self.post, self.retry)
        self.metrics.post_duration.observe(time.monotonic() - started)
        self.health.failing = ""
        now_ms = int(time.time() * 1000)
        stale = sum(1 for i in result.accepted if alerts[i].resolved_at(now_ms))
        if stale:
            self.metrics.resolved_on_arrival.inc(stale)
            log.warning(
                "%d alerts posted after their endsAt (older than alertmanager.resolve_timeout_s"
                " = %d s): Alertmanager stores them as resolved, without notifying",
                stale,
                self.s.alertmanager_resolve_timeout_s,
            )
        if result.accepted:
            self.metrics.posted.inc(len(result.accepted))
            self.metrics.last_accepted.set(time.time())
        for i in result.rejected:
            r = origin[i]
            log.error(
                "skipped %s[%d]@%d alert_id=%s: Alertmanager refused it as malformed",
                r.topic,
                r.partition,
                r.offset,
                alerts[i].alert_id,
            )
            self.metrics.skipped.labels(reason="rejected").inc()
        for i in (*result.accepted, *result.rejected):
            self.offsets.settled((origin[i].topic, origin[i].partition), origin[i].offset)

    def commit(self) -> None:
        positions: dict[TP, int] = self.offsets.to_commit()
        if not positions:
            return
        request = {
            TopicPartition(t, p): OffsetAndMetadata(pos, "", -1)
            for (t, p), pos in positions.items()
        }
        try:
            self.consumer.commit(request)
        except (KafkaError, AssertionError) as exc:
            # A rebalance took the partitions: their records are delivered again.
            self.metrics.commit_failures.inc()
            log.warning("offset commit failed (%s): those alerts will be posted again", exc)
            return
        self.offsets.committed(positions)

    def close(self) -> None:
        self.consumer.close(autocommit=False)


def run(s: Settings, stop: threading.Event) -> int:
    registry = CollectorRegistry()
    bridge = Bridge(s, stop, registry)
    server = None
    if s.alertmanager_web_port:
        server = serve(s.web_host, s.alertmanager_web_port, registry, bridge.health)
    log.info(
        "bridging %s to %s (group %s, resolve timeout %d s)",
        bridge.topic,
        ", ".join(s.alertmanager_urls),
        s.alertmanager_group,
        s.alertmanager_resolve_timeout_s,
    )
    try:
        bridge.run()
    finally:
        bridge.close()
        if server is not None:
            server.shutdown()
    return 0

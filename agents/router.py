"""Router agent: validate raw messages, dead-letter the bad ones, and forward valid
events in batches to the internal events topic, partitioned by account.

Repartitioning makes results correct even when producers do not key by
account_id. Events are acked only after their batch is handed to the producer,
and faust flushes the producer before it commits offsets; a delivery that fails
stops the worker before a commit can pass it (agents/delivery.py). At-least-once:
the aggregator's dedup makes a redelivery harmless.

The router also reports, several times a second, each input partition's
progress (newest event time forwarded, messages left to read) to every internal
partition, so watermarks never overtake an input partition that is behind.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from typing import TYPE_CHECKING, Any

from agents.delivery import fatal_on_failure
from pipeline.ingest import deadletter
from pipeline.ingest.partitioning import owner
from pipeline.ingest.validation import validate_row
from pipeline.model import wire
from pipeline.model.events import Invalid
from pipeline.windows.valve import KEEPALIVE_MS

if TYPE_CHECKING:
    from agents.context import Runtime

log = logging.getLogger("engagement.router")
MAX_BATCH_BYTES = 512 * 1024  # keep forwarded messages well below the broker's limit
QUEUED_FETCHES = 16
MAX_CACHED_OWNERS = 100_000  # accounts whose partition is remembered (then forgotten at once)


class Forwarded:
    """What this router has forwarded from each input partition it reads."""

    def __init__(self) -> None:
        self.max_ts: dict[Any, int] = {}  # TP -> newest event time forwarded
        self.next_offset: dict[Any, int] = {}  # TP -> next offset to process
        self.log_start: dict[Any, int] = {}  # TP -> earliest offset still in the log
        self.log_start_retry = 0.0
        self.last_report: dict[str, list[int | None]] = {}
        self.last_sent = 0.0

    async def report(
        self, consumer: Any, raw_topics: dict[str, str]
    ) -> dict[str, list[int | None]]:
        committed = getattr(consumer, "_committed_offset", {})
        out: dict[str, list[int | None]] = {}
        tps = [tp for tp in consumer.assignment() if tp.topic in raw_topics]
        # Records before the log start expired: without it, a partition never read
        # and never committed whose records all expired would show a lag forever.
        unknown = [
            tp
            for tp in tps
            if tp not in self.log_start and tp not in self.next_offset and committed.get(tp) is None
        ]
        if unknown and time.monotonic() >= self.log_start_retry:
            try:
                earliest = await asyncio.wait_for(consumer.earliest_offsets(*unknown), 5.0)
                self.log_start.update({tp: int(o or 0) for tp, o in earliest.items()})
            except Exception:  # lag stays conservative (holds) until the next try
                self.log_start_retry = time.monotonic() + 10.0
        for tp in tps:
            try:
                high = consumer.highwater(tp)
            except Exception:  # the partition is moving in a rebalance: lag unknown
                high = None
            # After a rebalance the committed offset may be ahead of what this router
            # last processed there.
            nxt = max(
                self.next_offset.get(tp) or 0, committed.get(tp) or 0, self.log_start.get(tp, 0)
            )
            lag = None if high is None or high < 0 else max(0, high - nxt)
            out[f"{tp.topic}:{tp.partition}"] = [self.max_ts.get(tp), lag]
        return out

    def forget(self, tps: Any) -> None:
        for tp in tps:
            self.max_ts.pop(tp, None)
            self.next_offset.pop(tp, None)
            self.log_start.pop(tp, None)


def register(rt: Runtime) -> None:
    s = rt.settings
    # Fetches queued for the router while it works on a batch: each holds up to a
    # partition fetch's worth of records (1 MiB of values), so faust's default of
    # 4,096 queued messages would let a slow producer pile up gigabytes. (faust's
    # App.topic drops its maxsize argument: the topic class takes it.)
    topic_class: Any = rt.app.conf.Topic
    topics = topic_class(
        rt.app,
        topics=list(rt.raw_topics),
        key_serializer="raw",
        value_serializer="raw",
        maxsize=QUEUED_FETCHES,
    )
    max_bytes, max_future_ms = s.max_message_bytes, s.max_future_s * 1000
    parts = s.partitions
    homes = s.detection.homes()  # competitors are placed with their brand
    families = rt.raw_topics
    invalid_metric = rt.metrics.invalid
    progress = Forwarded()
    owners: dict[str, int] = {}  # account -> owner partition (crc32 once per account)
    # where a row of each family holds its event time and account
    places = {
        "interaction": (wire.I_TS, wire.I_ACCOUNT),
        "exposure": (wire.X_TS, wire.X_ACCOUNT),
    }

    async def route(stream: Any) -> None:
        # Each event is one partition's fetch (agents/batched_fetch.py): up to
        # batch_max of them, or what came within batch_within_s, make a batch.
        async for events in stream.take_events(s.batch_max, within=s.batch_within_s):
            batches: dict[int, list[list[wire.Row]]] = {}
            sizes: dict[int, int] = {}
            rejected: Counter[str] = Counter()
            newest: dict[Any, int] = {}
            next_offset: dict[Any, int] = {}
            future_limit = int(time.time() * 1000) + max_future_ms
            for event in events:
                fetch = event.message
                tp, topic, partition = fetch.tp, fetch.topic, fetch.partition
                family = families[topic]
                at_ts, at_account = places[family]
                next_offset[tp] = fetch.offset + 1
                top = newest.get(tp, -1)
                for record in fetch.records:
                    value = record.value
                    src = [topic, partition, record.offset, record.timestamp]
                    row = validate_row(value, kind_family=family, max_bytes=max_bytes, src=src)
                    if isinstance(row, Invalid):
                        result = row
                    elif row[at_ts] > future_limit:
                        result = Invalid("future_ts", "ts: more than limits.max_future_s ahead")
                    else:
                        account = row[at_account]
                        p = owners.get(account)
                        if p is None:
                            if len(owners) >= MAX_CACHED_OWNERS:
                                owners.clear()
                            p = owners[account] = owner(account, homes, parts)
                        chunks = batches.setdefault(p, [[]])
                        size = sizes.get(p, 0) + len(value)
                        if size > MAX_BATCH_BYTES and chunks[-1]:
                            chunks.append([])
                            size = len(value)
                        sizes[p] = size
                        chunks[-1].append(row)
                        if row[at_ts] > top:
                            top = row[at_ts]
                        continue
                    rejected[result.reason] += 1
                    fut = await rt.deadletter_topic.send(
                        key=record.key,
                        value=deadletter.record(
                            result, topic, partition, record.offset, record.key, value
                        ),
                    )
                    fatal_on_failure(fut, "dead-letter")
                if top >= 0:
                    newest[tp] = top
            for p, chunks in batches.items():
                for rows in chunks:
                    fut = await rt.events_topic.send(partition=p, value=wire.encode_batch(rows))
                    # a send that fails stops the worker before its offsets are committed
                    fatal_on_failure(fut, "forwarded")
            # Only now, with the batch handed to the producer ahead of any later
            # report, may the progress it carries be reported.
            for tp, ts in newest.items():
                if ts > progress.max_ts.get(tp, -1):
                    progress.max_ts[tp] = ts
            progress.next_offset.update(next_offset)
            for reason, n in rejected.items():
                invalid_metric.labels(reason).inc(n)

    async def report_progress() -> None:
        # A timer whose body raises stops for good, silently; without reports every
        # watermark would hold forever. Log and try again on the next tick.
        try:
            await send_progress()
        except Exception:
            log.exception("progress report failed; retrying")

    async def send_progress() -> None:
        report = await progress.report(rt.app.consumer, families)
        now = time.monotonic()
        if not report or (
            report == progress.last_report and now - progress.last_sent < KEEPALIVE_MS / 1000
        ):
            return
        progress.last_report, progress.last_sent = report, now
        value = wire.encode_progress(report)
        for p in range(parts):
            await rt.events_topic.send(partition=p, value=value)

    async def on_revoked(sender: Any, revoked: set[Any], **kwargs: Any) -> None:
        progress.forget(revoked)

    rt.app.agent(topics, name="engagement.router")(route)
    rt.app.on_partitions_revoked.connect(on_revoked)  # type: ignore[arg-type]
    rt.app.timer(interval=s.progress_interval_s)(report_progress)

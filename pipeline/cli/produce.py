"""Write synthetic traffic to the input topics, paced in wall time."""

from __future__ import annotations

import time

from kafka import KafkaProducer

from pipeline.config.security import kafka_python_config
from pipeline.config.settings import Settings
from pipeline.model import topics
from pipeline.sim.generator import TrafficSpec, generate


def kafka_producer(s: Settings, client_id: str) -> KafkaProducer:
    """A producer for the input topics: acks from all in-sync replicas, idempotent
    (kafka-python's default), so a retried send is never written twice; requests
    large enough for any message the worker accepts."""
    return KafkaProducer(
        bootstrap_servers=s.bootstrap_servers,
        acks="all",
        linger_ms=20,
        client_id=client_id,
        max_request_size=max(1 << 20, s.max_message_bytes + 4096),
        **kafka_python_config(s),
    )


def generate_to_kafka(
    s: Settings,
    *,
    rate: float,
    duration_s: float | None,
    seed: int,
    malformed: float,
    speed: float = 1.0,
    backfill_s: float = 0.0,
    quiet: bool = False,
) -> int:
    """Produce generated messages; `speed` is event seconds per wall second (0: no pacing).
    Event time starts `backfill_s` seconds ago: the past is sent at once, then traffic
    continues live."""
    producer = kafka_producer(s, "engagement-generate")
    spec = TrafficSpec(seed=seed, rate_per_s=rate, malformed_fraction=malformed)
    now_ms = int(time.time() * 1000)
    start_ms = now_ms - int(backfill_s * 1000)
    wall0 = time.monotonic()
    sent = 0
    try:
        total_s = backfill_s + (duration_s if duration_s is not None else 10**9)
        for msg in generate(spec, start_ms, total_s):
            if speed > 0 and msg.ts_ms > now_ms:
                due = wall0 + (msg.ts_ms - now_ms) / 1000 / speed
                delay = due - time.monotonic()
                if delay > 0:
                    producer.flush()
                    time.sleep(delay)
            topic = s.topic(topics.INPUT_PREFIX + msg.topic_suffix)
            producer.send(topic, key=msg.key, value=msg.value)
            sent += 1
    finally:
        producer.flush()
        producer.close()
    return sent

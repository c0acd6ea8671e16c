"""Create the pipeline's topics before the worker starts (kafka-python is synchronous,
so this never runs inside the worker's event loop)."""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Mapping
from typing import Any

from kafka import KafkaAdminClient
from kafka.admin import NewTopic
from kafka.errors import KafkaError, TopicAlreadyExistsError

from pipeline.cli.broker import BrokerError


def ensure_topics(
    bootstrap: str,
    names: Iterable[str],
    partitions: int,
    timeout_s: float = 30.0,
    exact: Iterable[str] = (),
    client_config: Mapping[str, Any] | None = None,
) -> None:
    """Create missing topics with `partitions` partitions. Topics named in `exact`
    must have exactly that many (the router partitions by crc32 mod partitions).
    `client_config` is extra KafkaAdminClient configuration, such as
    `pipeline.config.security.kafka_python_config(settings)`."""
    names, exact = list(names), set(exact)
    config = {"client_id": "engagement-admin", "request_timeout_ms": 10_000}
    config.update(client_config or {})
    deadline = time.monotonic() + timeout_s
    last: Exception | None = None
    while time.monotonic() < deadline:
        try:
            admin = KafkaAdminClient(bootstrap_servers=bootstrap, **config)
        except KafkaError as exc:
            last = exc
            time.sleep(0.5)
            continue
        try:
            existing = set(admin.list_topics())
            missing = [n for n in names if n not in existing]
            if missing:
                with contextlib.suppress(TopicAlreadyExistsError):
                    admin.create_topics([NewTopic(n, partitions, 1) for n in missing])
            check = sorted(exact & existing)
            for desc in admin.describe_topics(check) if check else []:
                have = len(desc["partitions"])
                if have != partitions:
                    raise BrokerError(
                        f"topic {desc.get('topic', desc.get('name'))} has {have} partitions "
                        f"but partitions = {partitions}: set ENGAGEMENT_PARTITIONS={have} "
                        "or use a new topic_prefix / app_id"
                    )
            return
        except KafkaError as exc:
            last = exc
            time.sleep(0.5)
        finally:
            admin.close()
    raise BrokerError(f"could not create topics on {bootstrap}: {last}")

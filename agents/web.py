"""HTTP endpoints on the worker's web server: /healthz, /metrics and /api/v1/."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from faust.exceptions import SameNode
from faust.types import TP
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from yarl import URL

from pipeline.ingest.partitioning import owner
from pipeline.responses.views import account_view

if TYPE_CHECKING:
    from agents.aggregate import PartitionWork
    from agents.context import Runtime


def register(rt: Runtime, work: PartitionWork) -> None:
    app = rt.app

    async def healthz(web: Any, request: Any) -> Any:
        consumer_ok = app.consumer is not None and not app.should_stop
        status = 200 if consumer_ok else 503
        return web.json(
            {"status": "ok" if consumer_ok else "stopping", "partitions": sorted(rt.states)},
            status=status,
        )

    async def metrics(web: Any, request: Any) -> Any:
        # aiohttp refuses a charset in content_type=, so the header is set directly
        return web.bytes(
            generate_latest(rt.registry), headers={"Content-Type": CONTENT_TYPE_LATEST}
        )

    async def response_times(web: Any, request: Any, account_id: str) -> Any:
        p = owner(account_id, rt.settings.detection.homes(), rt.settings.partitions)
        state = rt.states.get(p)
        if state is None:
            # Another worker owns the account's partition: ask it (faust's router).
            changelog = rt.state_table.changelog_topic.get_topic_name()
            url = app.assignor._tps_url.get(TP(changelog, p))  # type: ignore[attr-defined]
            if url is not None:
                try:
                    return await app.router._route_req(URL(url), web, request)  # type: ignore[attr-defined]
                except SameNode:
                    pass  # ours, but not restored yet
            return web.json(
                {"error": f"partition {p} of account '{account_id}' is not served yet"},
                status=503,
                headers={"Retry-After": "1"},
            )
        view = account_view(account_id, state.responses, state.watermark.floor_ms)
        return web.json(view)

    async def status(web: Any, request: Any) -> Any:
        return web.json(work.status(int(time.time() * 1000)))

    app.page("/api/v1/status")(status)
    app.page("/api/v1/accounts/{account_id}/response-times")(response_times)
    app.page("/healthz")(healthz)
    app.page("/metrics")(metrics)

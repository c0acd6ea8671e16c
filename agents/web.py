"""HTTP endpoints on the worker's web server: /healthz and /metrics."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

if TYPE_CHECKING:
    from agents.app import Runtime


def register(rt: Runtime) -> None:
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

    app.page("/healthz")(healthz)
    app.page("/metrics")(metrics)

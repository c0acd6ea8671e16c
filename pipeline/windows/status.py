"""The worker's status document (`GET /api/v1/status`): per owned partition, where
its watermark stands, what it has published, and each input partition's status."""

from __future__ import annotations

from typing import Any

from pipeline.windows.arithmetic import rfc3339
from pipeline.windows.state import AggregatorConfig, PartitionState
from pipeline.windows.watermark import BLOCKED


def _stamp(ms: int | None) -> str | None:
    return None if ms is None or ms <= BLOCKED else rfc3339(ms)


def partition_status(
    state: PartitionState,
    cfg: AggregatorConfig,
    *,
    published_ms: int | None,
    catching_up: bool,
    lag: int | None,
    wall_ms: int,
    detectors_behind: bool = False,
) -> dict[str, Any]:
    """One partition of the internal topic. `published_ms`: the watermark whose
    outputs (final windows, settled responses, due alerts) are all published;
    `detectors_behind`: the spike/drop detectors still feed older final windows."""
    sources = state.sources
    settling = sources.settle_until_ms is not None and wall_ms < sources.settle_until_ms
    inputs = sources.describe(wall_ms, cfg.lateness_ms, cfg.idle_after_ms)
    holding = [src for src, v in inputs.items() if v["holds"]]
    if catching_up:
        why = "re-reading its backlog after a restore"
    elif settling:
        why = "waiting to hear from every router after a (re)start"
    elif holding:
        why = "; ".join(f"{src}: {inputs[src]['reason']}" for src in holding[:5])
    elif inputs:
        why = "every input partition is IDLE: advancing by wall time"
    else:
        why = "no input partition reported"
    return {
        "watermark_ms": state.watermark.floor_ms,
        "watermark": _stamp(state.watermark.floor_ms),
        "published_through_ms": published_ms,
        "published_through": _stamp(published_ms),
        "catching_up": catching_up,
        "detectors_caught_up": not detectors_behind,
        "settling": settling,
        "held_by": why,
        "lag": lag,
        "open_windows": len(state.windows),
        "inputs": inputs,
    }


def document(
    partitions: dict[int, dict[str, Any]],
    *,
    total: int,
    owners: dict[int, str],
    cfg: AggregatorConfig,
) -> dict[str, Any]:
    """The whole answer: owned partitions, and where the others are served."""
    return {
        "partitions_total": total,
        "partitions": {str(p): v for p, v in sorted(partitions.items())},
        "elsewhere": {str(p): url for p, url in sorted(owners.items()) if p not in partitions},
        "allowed_lateness_s": cfg.lateness_ms / 1000,
        "grace_s": cfg.grace_ms / 1000,
        "idle_after_s": cfg.idle_after_ms / 1000,
        "window_sizes_s": [s // 1000 for s in cfg.sizes_ms],
    }


def summary(view: dict[str, Any]) -> str:
    """One partition's `partition_status` as a log line's tail."""
    idle = sum(1 for i in view["inputs"].values() if i["status"] == "IDLE")
    return (
        f"watermark {view['watermark']}, published through {view['published_through']}, "
        f"{view['open_windows']} open windows, {idle} of {len(view['inputs'])} input "
        f"partitions IDLE, held by {view['held_by']}"
    )

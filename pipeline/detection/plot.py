"""A backtest as a picture: the series with its alerts and labeled windows above,
the detector's anomaly score below, so a reviewer sees at a glance what fired when.

matplotlib is an optional extra, imported only here and only when drawing."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

FIGSIZE = (14.0, 6.0)
DPI = 110


def plot(
    out: Path,
    timestamps: Sequence[datetime],
    values: Sequence[float],
    scores: Sequence[float],
    alerts: Sequence[bool],
    windows: Sequence[tuple[datetime, datetime]] = (),
    title: str = "",
) -> None:
    """Write a PNG to `out`: values (alert rows in red, windows shaded) over the
    anomaly score in [0, 1], sharing the time axis."""
    n = len(timestamps)
    if not len(values) == len(scores) == len(alerts) == n:
        raise ValueError(
            f"timestamps, values, scores and alerts differ in length: "
            f"{n}, {len(values)}, {len(scores)}, {len(alerts)}"
        )
    try:
        import matplotlib.dates as mdates
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError as exc:
        raise RuntimeError(
            "plotting needs matplotlib: pip install 'engagement-pipeline[plot]'"
        ) from exc

    # A bare Figure on an Agg canvas: non-interactive, and pyplot's global backend
    # and figure registry are never touched, so there is nothing to close.
    fig = Figure(figsize=FIGSIZE, dpi=DPI)
    FigureCanvasAgg(fig)
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    # matplotlib.dates has no type hints; its day numbers are plain floats
    days = mdates.date2num(list(timestamps))  # type: ignore[no-untyped-call]
    spans = mdates.date2num([t for w in windows for t in w])  # type: ignore[no-untyped-call]
    x = [float(v) for v in days]
    edges = [float(v) for v in spans]  # start, end, start, end, ...

    top.plot(x, list(values), color="tab:blue", linewidth=0.8, label="value")
    alert_x = [xi for xi, hit in zip(x, alerts, strict=True) if hit]
    alert_y = [v for v, hit in zip(values, alerts, strict=True) if hit]
    if alert_x:
        top.scatter(alert_x, alert_y, color="red", s=18, zorder=3, label="alert")
    for k in range(len(windows)):
        top.axvspan(
            edges[2 * k],
            edges[2 * k + 1],
            color="orange",
            alpha=0.25,
            label="labeled window" if k == 0 else None,  # one legend entry for all
        )
    top.set_ylabel("value")
    top.legend(loc="upper left")
    if title:
        top.set_title(title)

    bottom.plot(x, list(scores), color="tab:purple", linewidth=0.8, label="anomaly score")
    bottom.set_ylim(-0.02, 1.02)
    bottom.set_ylabel("score")
    bottom.legend(loc="upper left")
    locator = mdates.AutoDateLocator()  # type: ignore[no-untyped-call]
    formatter = mdates.ConciseDateFormatter(locator)  # type: ignore[no-untyped-call]
    bottom.xaxis.set_major_locator(locator)
    bottom.xaxis.set_major_formatter(formatter)

    fig.tight_layout()
    fig.savefig(out, format="png", dpi=DPI)

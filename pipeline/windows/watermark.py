"""A per-partition event-time watermark with allowed lateness and idle advance."""

from __future__ import annotations

from dataclasses import dataclass

BLOCKED = -(2**62)  # a hold below any event time: the watermark stays where it is


@dataclass(slots=True)
class WatermarkState:
    max_event_ms: int | None = None
    # Highest watermark ever reported: the watermark never moves backwards, even
    # after an idle advance overtook the events that followed it.
    floor_ms: int | None = None
    last_event_wall_ms: int | None = None
    # Set from input-partition progress before each use (not persisted): when
    # known, it replaces the watermark of this partition's own events.
    source_ms: int | None = None


class Watermark:
    """Watermark = max event time seen minus allowed lateness.

    Idle advance: when no event arrived for `idle_after_ms` of wall time, the
    watermark moves forward by the wall time elapsed since the partition's last
    event, so quiet accounts still close their windows. It is relative to the
    last event, never "now": a replay of last year's data that pauses for a
    minute advances by a minute, not by a year.
    """

    def __init__(self, lateness_ms: int, idle_after_ms: int, state: WatermarkState | None = None):
        self.lateness_ms = lateness_ms
        self.idle_after_ms = idle_after_ms
        self.state = state if state is not None else WatermarkState()

    def observe(self, max_ts_ms: int, wall_ms: int) -> None:
        """Record events up to `max_ts_ms` that arrived at `wall_ms`."""
        s = self.state
        # The floor is the watermark just before these events: the idle time that
        # ends now applies to the previous maximum, never on top of the new one.
        s.floor_ms = self.current(wall_ms)
        if s.max_event_ms is None or max_ts_ms > s.max_event_ms:
            s.max_event_ms = max_ts_ms
        s.last_event_wall_ms = wall_ms
        s.floor_ms = self.current(wall_ms)

    def current(self, wall_ms: int) -> int | None:
        s = self.state
        if s.source_ms == BLOCKED:
            return s.floor_ms
        if s.source_ms is not None:
            wm = s.source_ms
        elif s.max_event_ms is None:
            return s.floor_ms
        else:
            wm = s.max_event_ms - self.lateness_ms
            if s.last_event_wall_ms is not None:
                idle_ms = wall_ms - s.last_event_wall_ms
                if idle_ms >= self.idle_after_ms:
                    wm += idle_ms
        if s.floor_ms is not None and s.floor_ms > wm:
            return s.floor_ms
        return wm

    def advance(self, wall_ms: int) -> int | None:
        """Current watermark, remembered as the new floor."""
        wm = self.current(wall_ms)
        self.state.floor_ms = wm
        return wm

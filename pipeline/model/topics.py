"""Every topic name, once. A deployment's `topic_prefix` goes before each
(`Settings.topic`); the internal topic and the changelog are the worker's own."""

from __future__ import annotations

from typing import Final

INPUT_PREFIX: Final = "social."
# Interaction inputs by event kind: what the brand's audience does, and its replies.
INTERACTIONS: Final[dict[str, str]] = {
    "like": "social.likes",
    "comment": "social.comments",
    "share": "social.shares",
    "mention": "social.mentions",
    "dm": "social.dms",
    "reply": "social.replies",
}
EXPOSURE: Final = "social.exposure"  # audience snapshots: followers, reach, impressions
INPUTS: Final[tuple[str, ...]] = (*INTERACTIONS.values(), EXPOSURE)

EVENTS: Final = "engagement.events"  # internal: validated rows, keyed by account
WINDOWS: Final = "engagement.windows"
ALERTS: Final = "engagement.alerts"
DEADLETTER: Final = "engagement.deadletter"
OUTPUTS: Final[tuple[str, ...]] = (WINDOWS, ALERTS, DEADLETTER)
ALL: Final[tuple[str, ...]] = (*INPUTS, EVENTS, *OUTPUTS)


def family(topic: str) -> str:
    """ "interaction" or "exposure": which validator an input topic's messages meet."""
    return "exposure" if topic == EXPOSURE else "interaction"

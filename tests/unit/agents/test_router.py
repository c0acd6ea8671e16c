"""The router's input: whole fetches, and how many of them may wait for it."""

from __future__ import annotations

from agents import batched_fetch, router
from agents.app import create_app
from pipeline.config.settings import Settings


def test_few_fetches_wait_for_the_router() -> None:
    rt = create_app(Settings())
    agent = rt.app.agents["engagement.router"]
    assert agent.channel.maxsize == router.QUEUED_FETCHES <= 64
    # the raw topics are the ones fetched whole
    assert set(agent.channel.topics) == set(rt.raw_topics)
    assert batched_fetch.batched_topics(rt.app) == frozenset(rt.raw_topics)

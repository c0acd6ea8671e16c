"""Synthetic traffic for the input topics (schema v1), pure and deterministic.

No Kafka here: `generate` yields `RawMessage`s in event-time order (with a little
realistic disorder); the caller produces them and paces them in wall time.
Every text is made of nonsense words; no real data is ever involved.
"""

from __future__ import annotations

import heapq
import math
import random
from bisect import bisect
from collections.abc import Iterator
from dataclasses import dataclass
from itertools import accumulate
from typing import Any

import orjson

from pipeline.model import topics
from pipeline.windows.arithmetic import rfc3339

_KINDS = ("like", "comment", "share", "mention", "dm")  # replies come from the schedule
# kind -> its input topic's name after "social." (the names are in pipeline.model.topics)
TOPIC_SUFFIX: dict[str, str] = {
    k: name.removeprefix(topics.INPUT_PREFIX) for k, name in topics.INTERACTIONS.items()
}
EXPOSURE_SUFFIX = topics.EXPOSURE.removeprefix(topics.INPUT_PREFIX)
_KIND_CW = list(accumulate((60.0, 15.0, 8.0, 8.0, 4.0)))
_POSTED = frozenset(("like", "comment", "share"))
# Chance that the brand answers an inbound message: replies end up ~5% of events.
_ANSWER_P = {"comment": 0.1, "mention": 0.2, "dm": 0.55}
_PRIORITIES = ("low", "normal", "normal", "normal", "high", "high", "urgent")
_ISSUES = ("billing", "delivery", "account", "product", "outage", "other")
# Rate multiplier per UTC hour (linearly interpolated): night low, evening peak.
_HOURLY = (0.55, 0.42, 0.32, 0.25, 0.2, 0.22, 0.3, 0.42, 0.54, 0.62, 0.66, 0.7,
           0.74, 0.74, 0.72, 0.72, 0.76, 0.82, 0.9, 0.97, 1.0, 0.95, 0.85, 0.7)  # fmt: skip
_WEEKLY = (1.0, 1.0, 1.0, 1.0, 1.05, 1.15, 1.15)  # Monday .. Sunday
_AUDIENCE = 200_000  # actor pool; actor k drawn with P(k) ~ 1/k
_TAIL_POSTS = 400  # posts per account besides the hot ones
_BOT_RUN = (5, 15)  # likes per bot burst
_SYLLABLES = ("ka", "lo", "mi", "ne", "zu", "ra", "ti", "vo", "bes", "qua", "dor", "fin",
              "gli", "hep", "jun", "wex", "yor", "pla", "sku", "tro")  # fmt: skip


@dataclass(frozen=True)
class TrafficSpec:
    seed: int = 7
    accounts: tuple[str, ...] = ("acme", "globex", "initech", "umbrella", "hooli")
    channels: tuple[str, ...] = ("instagram", "x", "facebook", "tiktok", "linkedin")
    rate_per_s: float = 50.0  # mean events/s at the (weekday) diurnal peak, all accounts
    hot_posts: int = 3  # a few posts per account that get most of the traffic
    burst_probability: float = 0.002  # per generated second: a x5-x20 burst on one account
    bot_fraction: float = 0.03  # share of events from a few bot actors liking in rapid runs
    malformed_fraction: float = 0.0  # share of interaction messages replaced by bad payloads
    duplicate_fraction: float = 0.01  # share of events re-sent with the same bytes
    exposure_every_s: int = 60  # exposure snapshot per account x channel every N s


@dataclass(frozen=True, slots=True)
class RawMessage:
    topic_suffix: str  # likes comments shares mentions dms replies exposure
    key: bytes | None  # account_id utf-8 (None for some malformed)
    value: bytes
    ts_ms: int  # event time


def diurnal_multiplier(ts_ms: int) -> float:
    """Rate multiplier at an instant: hour of day (UTC) times day of week."""
    sec = ts_ms // 1000
    hour = (sec % 86400) / 3600.0
    i = int(hour)
    lo, hi = _HOURLY[i], _HOURLY[(i + 1) % 24]
    return (lo + (hi - lo) * (hour - i)) * _WEEKLY[(sec // 86400 + 3) % 7]


def _poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0.0:
        return 0
    if lam > 30.0:
        return max(0, int(rng.gauss(lam, math.sqrt(lam)) + 0.5))
    limit, k, p = math.exp(-lam), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


_Reply = tuple[int, int, str, str | None]  # due reply: account, channel, inbound id, post


class _Gen:
    def __init__(self, spec: TrafficSpec, start_ms: int, duration_s: float) -> None:
        self.spec, self.start_ms = spec, start_ms
        self.end_ms = start_ms + int(duration_s * 1000)
        rng = self.rng = random.Random(spec.seed)
        na, nc = len(spec.accounts), len(spec.channels)
        self.keys = [a.encode() for a in spec.accounts]
        self.acct_w = [rng.uniform(0.5, 2.0) for _ in range(na)]
        self.base_total = sum(self.acct_w)
        self.mult, self.until = [1.0] * na, [0] * na
        self.acct_cw = list(accumulate(self.acct_w))
        self.chan_cw = [
            list(accumulate(rng.uniform(0.2, 1.0) for _ in range(nc))) for _ in range(na)
        ]
        hot = max(0, spec.hot_posts)
        self.posts = [[f"{a}-p{i}" for i in range(hot + _TAIL_POSTS)] for a in spec.accounts]
        self.hot_cw = list(accumulate(1.0 / (i + 1) for i in range(hot)))
        self.words = ["".join(rng.choices(_SYLLABLES, k=rng.randint(1, 3))) for _ in range(300)]
        self.bots = [f"bot-{spec.seed}-{i}" for i in range(5)]
        bf = min(max(spec.bot_fraction, 0.0), 0.9)
        self.bot_p = bf / (sum(_BOT_RUN) / 2 * (1.0 - bf))
        base = [math.exp(rng.uniform(math.log(30_000), math.log(1_000_000))) for _ in range(na)]
        self.followers = [base[i // nc] * rng.uniform(0.35, 2.0) for i in range(na * nc)]
        self.activity = [0] * (na * nc)
        self.heap: list[tuple[int, int, RawMessage | _Reply]] = []
        self.n = self.seq = 0
        self.bad: list[tuple[str, bytes]] = []
        if spec.malformed_fraction > 0.0:
            from pipeline.sim.samples import malformed_interaction_payloads

            self.bad = list(malformed_interaction_payloads())

    def run(self) -> Iterator[RawMessage]:
        spec, rng, heap = self.spec, self.rng, self.heap
        every = max(1, spec.exposure_every_s) * 1000
        next_exp = (self.start_ms // every + 1) * every
        sec = self.start_ms
        while sec < self.end_ms:
            while next_exp <= sec:
                yield from self._exposure(next_exp, every)
                next_exp += every
            while heap and heap[0][0] <= sec:
                yield self._due(heapq.heappop(heap))
            self._bursts(sec)
            span = min(1000, self.end_ms - sec)
            total = self.acct_cw[-1]
            lam = spec.rate_per_s * diurnal_multiplier(sec) * total / self.base_total
            n = _poisson(rng, lam * span / 1000.0)
            for i in range(n):
                t = sec + int((i + rng.random()) * span / n)
                if rng.random() < 0.05:
                    t -= rng.randint(1000, 4000)  # a little out of order
                while heap and heap[0][0] <= t:
                    yield self._due(heapq.heappop(heap))
                a = bisect(self.acct_cw, rng.random() * total)
                if rng.random() < self.bot_p:
                    yield from self._bot_run(t, a)
                else:
                    yield self._event(t, a)
            sec += 1000
        while heap and heap[0][0] < self.end_ms:
            yield self._due(heapq.heappop(heap))
        while next_exp <= self.end_ms:
            yield from self._exposure(next_exp, every)
            next_exp += every

    def _bursts(self, sec: int) -> None:
        rng, changed = self.rng, False
        for a, until in enumerate(self.until):
            if until and sec >= until:
                self.mult[a], self.until[a], changed = 1.0, 0, True
        if rng.random() < self.spec.burst_probability:
            a = rng.randrange(len(self.mult))
            if not self.until[a]:
                self.mult[a] = rng.uniform(5.0, 20.0)
                self.until[a] = sec + rng.randint(30, 120) * 1000
                changed = True
        if changed:
            self.acct_cw = list(
                accumulate(w * m for w, m in zip(self.acct_w, self.mult, strict=True))
            )

    def _due(self, item: tuple[int, int, RawMessage | _Reply]) -> RawMessage:
        due, _, what = item
        return what if isinstance(what, RawMessage) else self._reply(due, what)

    def _channel(self, a: int) -> int:
        cw = self.chan_cw[a]
        return bisect(cw, self.rng.random() * cw[-1])

    def _post(self, a: int) -> str:
        rng, posts = self.rng, self.posts[a]
        if self.hot_cw and rng.random() < 0.75:
            return posts[bisect(self.hot_cw, rng.random() * self.hot_cw[-1])]
        return posts[len(self.hot_cw) + int(_TAIL_POSTS ** rng.random()) - 1]

    def _text(self) -> str:
        rng = self.rng
        return " ".join(rng.choices(self.words, k=rng.randint(3, 14))) + rng.choice(".!?")

    def _bad(self, t: int, a: int, kind: str) -> RawMessage | None:
        """With probability malformed_fraction, a bad payload replacing this interaction."""
        rng = self.rng
        if not self.bad or rng.random() >= self.spec.malformed_fraction:
            return None
        key = None if rng.random() < 0.2 else self.keys[a]
        return RawMessage(TOPIC_SUFFIX[kind], key, rng.choice(self.bad)[1], t)

    def _event(self, t: int, a: int) -> RawMessage:
        rng, spec = self.rng, self.spec
        c = self._channel(a)
        kind = _KINDS[bisect(_KIND_CW, rng.random() * 95.0)]
        bad = self._bad(t, a, kind)
        if bad is not None:
            return bad
        d: dict[str, Any] = {"event_id": self._id(), "kind": kind}
        d["channel"], d["account_id"] = spec.channels[c], spec.accounts[a]
        d["ts"] = t if rng.random() >= 0.1 else rfc3339(t)
        post = self._post(a) if kind in _POSTED else None
        if post is not None:
            d["post_id"] = post
        d["actor_id"] = f"u{int(_AUDIENCE ** rng.random())}"
        if kind != "like" and kind != "share":
            r = rng.random()
            if r < 0.4:
                d["priority"] = _PRIORITIES[int(r * 17.5)]
            if r > 0.5:
                d["sentiment"] = round(rng.uniform(-1.0, 1.0), 2)
            if kind != "comment" and rng.random() < 0.4:
                d["issue_type"] = rng.choice(_ISSUES)
            d["text"] = self._text()
            if rng.random() < _ANSWER_P[kind]:
                delay = min(math.exp(rng.gauss(5.2, 1.5)), 6 * 3600.0) + 5.0  # median ~3 min
                if d.get("priority") == "urgent":
                    delay /= 4.0
                self.seq += 1
                reply: _Reply = (a, c, d["event_id"], post)
                heapq.heappush(self.heap, (t + int(delay * 1000), self.seq, reply))
        return self._emit(t, a, c, kind, d)

    def _reply(self, t: int, item: _Reply) -> RawMessage:
        a, c, inbound, post = item
        bad = self._bad(t, a, "reply")
        if bad is not None:
            return bad
        rng, spec = self.rng, self.spec
        d: dict[str, Any] = {"event_id": self._id(), "kind": "reply", "channel": spec.channels[c]}
        d["account_id"] = spec.accounts[a]
        d["ts"] = t if rng.random() >= 0.1 else rfc3339(t)
        if post is not None:
            d["post_id"] = post
        d["actor_id"] = f"{spec.accounts[a]}-agent{rng.randint(1, 4)}"
        d["in_reply_to"] = d["thread_id"] = inbound
        d["text"] = self._text()
        return self._emit(t, a, c, "reply", d)

    def _bot_run(self, t: int, a: int) -> Iterator[RawMessage]:
        rng, spec = self.rng, self.spec
        c, post, bot = self._channel(a), self._post(a), rng.choice(self.bots)
        for _ in range(rng.randint(*_BOT_RUN)):
            bad = self._bad(t, a, "like")
            if bad is not None:
                yield bad
            else:
                d: dict[str, Any] = {"event_id": self._id(), "kind": "like"}
                d["channel"], d["account_id"] = spec.channels[c], spec.accounts[a]
                d.update(ts=t, post_id=post, actor_id=bot)
                yield self._emit(t, a, c, "like", d)
            t += rng.randint(20, 150)

    def _id(self) -> str:
        self.n += 1
        return f"{self.spec.seed}-{self.n}"

    def _emit(self, t: int, a: int, c: int, kind: str, d: dict[str, Any]) -> RawMessage:
        self.activity[a * len(self.spec.channels) + c] += 1
        msg = RawMessage(TOPIC_SUFFIX[kind], self.keys[a], orjson.dumps(d), t)
        if self.rng.random() < self.spec.duplicate_fraction:
            self.seq += 1
            heapq.heappush(self.heap, (t + self.rng.randint(100, 5000), self.seq, msg))
        return msg

    def _exposure(self, ts: int, every: int) -> Iterator[RawMessage]:
        rng, spec, nc = self.rng, self.spec, len(self.spec.channels)
        organic = diurnal_multiplier(ts) * every / 1000.0 * 2e-4
        for i, followers in enumerate(self.followers):
            a, count = i // nc, self.activity[i]
            followers *= 1.0 + rng.uniform(0.0, 1e-7) * every / 1000.0
            followers += count * rng.uniform(0.0, 0.05)
            self.followers[i], self.activity[i] = followers, 0
            imp = int(count * rng.uniform(15.0, 40.0) + followers * organic * rng.uniform(0.5, 1.5))
            reach, channel = int(imp * rng.uniform(0.45, 0.85)), spec.channels[i % nc]
            d = dict(account_id=spec.accounts[a], channel=channel, ts=ts, followers=int(followers))
            d.update(impressions=imp, reach=reach)
            yield RawMessage(EXPOSURE_SUFFIX, self.keys[a], orjson.dumps(d), ts)


def generate(spec: TrafficSpec, start_ms: int, duration_s: float) -> Iterator[RawMessage]:
    """Messages over `duration_s` seconds of event time from `start_ms`, deterministic per seed.

    Interactions go to their kind's topic; exposure snapshots (one per account x channel
    every `exposure_every_s`, aligned to multiples of it in epoch time) to "exposure".
    Replies answer earlier comments/mentions/DMs of the same account after seconds to
    hours; those due after the end are never sent. Duplicates repeat the exact bytes of
    an earlier message up to 5 s later. Event time may run a few seconds behind.
    """
    return _Gen(spec, start_ms, duration_s).run()

"""`engagement replay FILE.jsonl`: backfill history from a JSON Lines export.

Each line is one schema-v1 message: an interaction event (it has a `kind`) or an
exposure snapshot (no `kind`; followers, impressions and/or reach). A line is
sent to the input topic of its kind, keyed by `account_id` (UTF-8), with the
line's own bytes as the value (only the line ending is removed; a UTF-8 byte
order mark before the first line is dropped): the worker validates and
dead-letters exactly what a live producer would have sent.

- Blank lines are skipped silently.
- A line that fails validation (the same `pipeline.ingest.validation.validate` the worker
  runs) is not sent: it is reported by line number, reason and the validator's
  detail, which names fields and rules, never a payload value. Message text is
  passed through untouched and never printed.
- `speed` paces by event time: `speed` event seconds per wall second, relative to
  the first sent line's `ts`. A line whose time is already past is sent at once.
- Every send is acknowledged (acks=all) before success is reported; the first
  failed send stops the replay with a BrokerError naming the topic and the line.

The pure part (`parse_line`, `Pacer`, `skipped_report`, `ProgressBar` with an
injected clock and stream) runs without a broker; `replay` does the sending.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import math
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

import orjson

from pipeline.cli.broker import BrokerError
from pipeline.config.settings import Settings
from pipeline.ingest.validation import validate
from pipeline.model import topics
from pipeline.model.events import KINDS, Exposure, Interaction, Invalid

__all__ = [
    "MAX_LISTED",
    "Pacer",
    "ProgressBar",
    "Record",
    "ReplayResult",
    "count_lines",
    "parse_line",
    "replay",
    "skipped_report",
    "speed_arg",
]

assert set(topics.INTERACTIONS) == set(KINDS)

MAX_LISTED: Final = 20  # invalid lines listed one by one; the rest are counted
_BOM: Final = b"\xef\xbb\xbf"
_EXPOSURE_FIELDS: Final = ("followers", "impressions", "reach")
_NO_FAMILY: Final = Invalid(
    "missing_field",
    "kind: required (an exposure snapshot has no kind but followers, impressions or reach)",
)
_UNROUTABLE: Final = Invalid("unknown_kind", "kind: no input topic for this kind")


@dataclass(frozen=True, slots=True)
class Record:
    """One line to send: `topic` is the topic name before the prefix."""

    topic: str
    key: bytes
    value: bytes
    ts_ms: int


def parse_line(line: bytes, *, max_bytes: int = 65536) -> Record | Invalid | None:
    """The record for one line of the file (line ending included or not), an Invalid
    saying why it cannot be sent, or None for a blank line."""
    value = line[:-1] if line.endswith(b"\n") else line
    if value.endswith(b"\r"):
        value = value[:-1]
    if not value.strip():
        return None
    family = "interaction"
    if len(value) <= max_bytes:
        try:
            obj = orjson.loads(value)
        except orjson.JSONDecodeError:
            obj = None  # validate says why (not_json, not_utf8)
        if type(obj) is dict and obj.get("kind") is None:
            if all(obj.get(f) is None for f in _EXPOSURE_FIELDS):
                return _NO_FAMILY
            family = "exposure"
    result = validate(value, kind_family=family, max_bytes=max_bytes)
    if isinstance(result, Invalid):
        return result
    if isinstance(result, Interaction):
        topic = topics.INTERACTIONS.get(result.kind)
        if topic is None:
            return _UNROUTABLE
    else:
        assert isinstance(result, Exposure)
        topic = topics.EXPOSURE
    return Record(topic, result.account_id.encode("utf-8"), value, result.ts_ms)


class Pacer:
    """When to send each record: `speed` event seconds per wall second, relative to
    the first record's event time and the wall time it was sent. `speed` None or 0:
    as fast as possible."""

    def __init__(self, speed: float | None) -> None:
        self.speed = speed or 0.0
        self._origin: tuple[int, float] | None = None  # (event ms, wall s)

    def wait_s(self, ts_ms: int, now_s: float) -> float:
        """Seconds to wait before sending an event at `ts_ms`, at wall time `now_s`
        (0 when it is due or past)."""
        if self.speed <= 0:
            return 0.0
        if self._origin is None:
            self._origin = (ts_ms, now_s)
            return 0.0
        ts0, wall0 = self._origin
        due = wall0 + (ts_ms - ts0) / 1000.0 / self.speed
        return max(0.0, due - now_s)


def count_lines(path: str | Path) -> int:
    """Lines in the file, the last one counted also without a final newline."""
    n, last = 0, b"\n"
    with open(path, "rb") as f:
        for chunk in iter(functools.partial(f.read, 1 << 20), b""):
            n += chunk.count(b"\n")
            last = chunk[-1:]
    return n + (last != b"\n")


def skipped_report(line_no: int, invalid: Invalid) -> str:
    """How one invalid line is reported: its number, reason and the validator's
    detail (field and rule, never a value)."""
    return f"replay: line {line_no:,}: {invalid.reason} ({invalid.detail})"


def _more_report(listed: int, total: int) -> str:
    return f"replay: and {total - listed:,} more invalid lines ({total:,} in all)"


class ProgressBar:
    """The progress bar on stderr: one line redrawn with \\r on a terminal; otherwise a
    line every `every_s` seconds or at each 10% of the file (at most one a second)."""

    def __init__(
        self,
        total: int,
        stream: TextIO,
        *,
        quiet: bool = False,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        every_s: float = 5.0,
        redraw_s: float = 0.1,
        min_gap_s: float = 1.0,
    ) -> None:
        self.total, self.stream, self.quiet, self.clock = total, stream, quiet, clock
        self.tty = stream.isatty() if tty is None else tty
        self.every_s = every_s if not self.tty else redraw_s
        self.start = self.last = clock()
        self.min_gap_s = min_gap_s
        self.last_decile = 0
        self.shown = False  # a bar is on screen (tty) and must be erased first

    def _line(self, lines: int, sent: int, skipped: int) -> str:
        pct = 100.0 * lines / self.total if self.total else 100.0
        elapsed = self.clock() - self.start
        rate = sent / elapsed if elapsed > 0 else 0.0
        text = f"replay: {lines:,}/{self.total:,} lines  {pct:5.1f}%  {rate:,.0f} ev/s"
        return text + (f"  {skipped:,} invalid" if skipped else "")

    def update(self, lines: int, sent: int, skipped: int, force: bool = False) -> None:
        if self.quiet:
            return
        now = self.clock()
        decile = 10 * lines // self.total if self.total else 10
        since = now - self.last
        # off a terminal, each new 10% also gets a line, at most one a second
        new_decile = not self.tty and decile != self.last_decile and since >= self.min_gap_s
        if not force and since < self.every_s and not new_decile:
            return
        self.last, self.last_decile = now, decile
        if self.tty:
            self.stream.write("\r\x1b[K" + self._line(lines, sent, skipped))
            self.shown = True
        else:
            self.stream.write(self._line(lines, sent, skipped) + "\n")
        self.stream.flush()

    def clear(self) -> None:
        if self.shown:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.shown = False

    def note(self, text: str) -> None:
        """A line that is not progress (an invalid line, an error): always shown."""
        self.clear()
        self.stream.write(text + "\n")
        self.stream.flush()


class _Producer(Protocol):
    def send(self, topic: str, value: bytes, key: bytes) -> Any: ...
    def flush(self, timeout: float | None = None) -> None: ...
    def close(self, timeout: float | None = None) -> None: ...


@dataclass(slots=True)
class _Acks:
    """Outcome of every send, filled in by the producer's I/O thread."""

    acked: int = 0
    failure: tuple[int, str, BaseException] | None = None  # the first: line, topic, error
    lock: threading.Lock = field(default_factory=threading.Lock)

    def ok(self, _metadata: object) -> None:
        with self.lock:
            self.acked += 1

    def failed(self, line_no: int, topic: str, exc: BaseException) -> None:
        with self.lock:
            if self.failure is None or line_no < self.failure[0]:
                self.failure = (line_no, topic, exc)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    sent: int  # events sent and acknowledged
    skipped: int  # lines not sent because they are invalid
    lines: int  # lines read, blank ones included
    elapsed_s: float
    last_ts_ms: int | None = None  # the newest event time sent


def _lines(path: str | Path) -> Iterator[tuple[int, bytes]]:
    with open(path, "rb") as f:
        for n, line in enumerate(f, 1):
            yield n, (line.removeprefix(_BOM) if n == 1 else line)


def _records(
    path: str | Path, max_bytes: int, file_order: bool
) -> Iterator[tuple[int, Record | Invalid | None]]:
    """(line number, parsed line) for every line: in event-time order (ties in file
    order) unless `file_order`. Exports are often grouped by conversation rather than
    sorted by time; sent as they are, the watermark would run ahead of most events
    and make them late. Invalid lines are reported as they are read."""
    parsed = ((n, parse_line(line, max_bytes=max_bytes)) for n, line in _lines(path))
    if file_order:
        yield from parsed
        return
    held: list[tuple[int, int, Record]] = []
    for n, p in parsed:
        if isinstance(p, Record):
            held.append((p.ts_ms, n, p))
        else:
            yield n, p
    held.sort(key=lambda t: (t[0], t[1]))
    for _, n, rec in held:
        yield n, rec


def _kafka_producer(s: Settings) -> _Producer:
    from pipeline.cli.produce import kafka_producer  # kafka-python only when sending

    producer: _Producer = kafka_producer(s, "engagement-replay")
    return producer


def _error(exc: BaseException) -> str:
    text = str(exc)
    return type(exc).__name__ + (f": {text}" if text else "")


def replay(
    s: Settings,
    path: str | Path,
    *,
    speed: float | None = None,
    quiet: bool = False,
    file_order: bool = False,
    stream: TextIO,
    producer: _Producer | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> ReplayResult:
    """Send every valid line of `path` (settings `s`: topic prefix, message size
    limit, broker) and wait until all are acknowledged. Raises BrokerError on the
    first failed send, OSError if the file cannot be read."""
    from kafka.errors import KafkaError

    total = count_lines(path)
    progress = ProgressBar(total, stream, quiet=quiet, clock=clock)
    try:
        prod = producer if producer is not None else _kafka_producer(s)
    except KafkaError as exc:
        raise BrokerError(f"cannot connect to {s.bootstrap_servers}: {_error(exc)}") from None
    prefixed = {name: s.topic(name) for name in topics.INPUTS}
    pacer, acks = Pacer(speed), _Acks()
    lines = sent = skipped = 0
    last_ts_ms: int | None = None
    start = clock()
    try:
        for line_no, parsed in _records(path, s.max_message_bytes, file_order):
            if acks.failure is not None:
                break
            if parsed is None:
                pass
            elif isinstance(parsed, Invalid):
                skipped += 1
                if skipped <= MAX_LISTED:
                    progress.note(skipped_report(line_no, parsed))
            else:
                wait = pacer.wait_s(parsed.ts_ms, clock())
                while wait > 0.0005:  # a long wait keeps the bar moving
                    progress.update(lines, sent, skipped)
                    sleep(min(wait, 0.25))
                    wait = pacer.wait_s(parsed.ts_ms, clock())
                topic = prefixed[parsed.topic]
                try:
                    future = prod.send(topic, value=parsed.value, key=parsed.key)
                except KafkaError as exc:
                    acks.failed(line_no, topic, exc)
                    break
                future.add_callback(acks.ok)
                future.add_errback(acks.failed, line_no, topic)
                sent += 1
                if last_ts_ms is None or parsed.ts_ms > last_ts_ms:
                    last_ts_ms = parsed.ts_ms
            lines += 1
            progress.update(lines, sent, skipped)
        prod.flush()
    except KeyboardInterrupt:
        with contextlib.suppress(Exception):  # report what is known, then stop
            prod.flush(timeout=10)
        progress.note(
            f"replay: interrupted after {lines:,} lines: {acks.acked:,} of {sent:,} "
            "events sent were acknowledged"
        )
        raise
    finally:
        with contextlib.suppress(Exception):  # closing after a failure must not hide it
            prod.close(timeout=5)
        progress.clear()
    if acks.failure is not None:
        line_no, topic, error = acks.failure
        raise BrokerError(
            f"replay: sending line {line_no:,} to {topic} failed: {_error(error)} "
            f"({acks.acked:,} of {sent:,} events sent were acknowledged)"
        )
    if acks.acked != sent:
        raise BrokerError(
            f"replay: {sent - acks.acked:,} of {sent:,} sends were not acknowledged by "
            f"{s.bootstrap_servers}"
        )
    if skipped > MAX_LISTED:
        progress.note(_more_report(MAX_LISTED, skipped))
    elapsed = clock() - start
    if not quiet:
        stream.write(
            f"replayed {sent:,} events ({skipped:,} skipped as invalid) in {elapsed:.1f} s\n"
        )
        stream.flush()
    return ReplayResult(
        sent=sent, skipped=skipped, lines=lines, elapsed_s=elapsed, last_ts_ms=last_ts_ms
    )


def speed_arg(text: str) -> float:
    """argparse type for --speed: a finite number >= 0 (0: as fast as possible)."""
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(
            f"must be a number >= 0 (event seconds per wall second), not {text!r}"
        )
    return value

"""pipeline.cli.replay without a broker: routing, invalid lines, pacing, progress, acks."""

from __future__ import annotations

import argparse
import io
from pathlib import Path
from typing import Any

import orjson
import pytest
from kafka.errors import KafkaTimeoutError
from kafka.future import Future

from pipeline.cli import main as cli
from pipeline.cli.broker import BrokerError
from pipeline.cli.replay import (
    MAX_LISTED,
    Pacer,
    ProgressBar,
    Record,
    count_lines,
    parse_line,
    replay,
    speed_arg,
)
from pipeline.config.settings import Settings
from pipeline.model import topics
from pipeline.model.events import KINDS, Invalid

SECRET = "s3cr3t-Replay-Text"
TS = "2026-03-01T12:00:00Z"
TS_MS = 1_772_366_400_000


def event(kind: str, **extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {
        "event_id": f"e-{kind}",
        "kind": kind,
        "channel": "instagram",
        "account_id": "acme",
        "ts": TS,
        "post_id": "p1",
        "in_reply_to": "e-comment",
    }
    e.update(extra)
    return e


def exposure(**extra: Any) -> dict[str, Any]:
    e: dict[str, Any] = {"account_id": "acme", "channel": "x", "ts": TS_MS, "followers": 10}
    e.update(extra)
    return e


def line(obj: Any) -> bytes:
    return orjson.dumps(obj) + b"\n"


# --- routing ---------------------------------------------------------------


def test_every_input_topic_is_the_workers() -> None:
    assert set(topics.INTERACTIONS) == set(KINDS)
    assert set(topics.INPUTS) == {
        "social.likes",
        "social.comments",
        "social.shares",
        "social.mentions",
        "social.dms",
        "social.replies",
        "social.exposure",
    }


@pytest.mark.parametrize(
    ("kind", "topic"),
    [
        ("like", "social.likes"),
        ("comment", "social.comments"),
        ("share", "social.shares"),
        ("mention", "social.mentions"),
        ("dm", "social.dms"),
        ("reply", "social.replies"),
    ],
)
def test_each_kind_goes_to_its_topic_keyed_by_account(kind: str, topic: str) -> None:
    raw = line(event(kind, text=SECRET))
    rec = parse_line(raw)
    assert rec == Record(topic, b"acme", raw[:-1], TS_MS)


@pytest.mark.parametrize("counts", [{"followers": 5}, {"impressions": 7}, {"reach": 0}])
def test_exposure_snapshot_goes_to_the_exposure_topic(counts: dict[str, int]) -> None:
    obj = {"account_id": "acme", "channel": "x", "ts": TS, **counts}
    rec = parse_line(line(obj))
    assert isinstance(rec, Record)
    assert (rec.topic, rec.key, rec.ts_ms) == (topics.EXPOSURE, b"acme", TS_MS)


def test_value_is_the_line_as_given_not_reserialized() -> None:
    raw = (
        b'{ "ts" : "2026-03-01T12:00:00.000+00:00", "kind":"comment", "account_id":"caf\\u00e9",'
        b' "event_id":"e1", "channel":"x", "post_id":"p", "sentiment": 0.50,'
        b' "text": "' + SECRET.encode() + b' \\ud83d\\ude00" }  \r\n'
    )
    rec = parse_line(raw)
    assert isinstance(rec, Record)
    assert rec.value == raw[:-2]  # only the line ending goes
    assert rec.key == "café".encode()
    assert rec.ts_ms == TS_MS


def test_last_line_without_newline() -> None:
    raw = orjson.dumps(event("like"))
    rec = parse_line(raw)
    assert isinstance(rec, Record) and rec.value == raw


@pytest.mark.parametrize("raw", [b"\n", b"", b"   \n", b"\r\n", b"\t \r\n"])
def test_blank_lines_are_none(raw: bytes) -> None:
    assert parse_line(raw) is None


# --- invalid lines ---------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b'{"kind": "like", "text": "' + SECRET.encode() + b'"', "not_json"),
        (b"not json " + SECRET.encode(), "not_json"),
        (b'["' + SECRET.encode() + b'"]', "not_object"),
        (b'"' + SECRET.encode() + b'"', "not_object"),
        (b"42", "not_object"),
        (orjson.dumps({**event("like"), "ts": None, "text": SECRET}), "missing_field"),
        (orjson.dumps({k: v for k, v in event("like").items() if k != "post_id"}), "missing_field"),
        (orjson.dumps(event("follow", text=SECRET)), "unknown_kind"),
        (orjson.dumps(event("like", account_id=7)), "wrong_type"),
        (orjson.dumps(event("like", ts="yesterday")), "bad_ts"),
        (orjson.dumps(event("like", ts=12)), "absurd_ts"),
        (orjson.dumps(exposure(followers=-1)), "invalid_value"),
        (b"\xff\xfe{}", "not_utf8"),
    ],
)
def test_invalid_lines_are_invalid_without_content(raw: bytes, reason: str) -> None:
    result = parse_line(raw + b"\n")
    assert isinstance(result, Invalid)
    assert result.reason == reason
    assert SECRET not in result.detail


def test_an_object_neither_event_nor_snapshot_asks_for_kind() -> None:
    result = parse_line(line({"account_id": "acme", "channel": "x", "ts": TS}))
    assert isinstance(result, Invalid)
    assert result.reason == "missing_field" and result.detail.startswith("kind:")


def test_null_kind_is_absent_so_a_snapshot() -> None:
    rec = parse_line(line(exposure(kind=None)))
    assert isinstance(rec, Record) and rec.topic == topics.EXPOSURE


def test_oversized_line() -> None:
    raw = line(event("comment", text="x" * 200))
    result = parse_line(raw, max_bytes=100)
    assert isinstance(result, Invalid) and result.reason == "oversized"
    assert isinstance(parse_line(raw, max_bytes=len(raw)), Record)


# --- pacing ----------------------------------------------------------------


def test_no_speed_never_waits() -> None:
    for speed in (None, 0.0):
        p = Pacer(speed)
        assert p.wait_s(TS_MS, 0.0) == 0.0
        assert p.wait_s(TS_MS + 3_600_000, 0.0) == 0.0


def test_speed_paces_relative_to_the_first_event() -> None:
    p = Pacer(2.0)
    assert p.wait_s(TS_MS, 100.0) == 0.0  # the first sets the origin
    assert p.wait_s(TS_MS + 1000, 100.0) == pytest.approx(0.5)
    assert p.wait_s(TS_MS + 4000, 100.0) == pytest.approx(2.0)
    assert p.wait_s(TS_MS + 4000, 101.5) == pytest.approx(0.5)
    assert p.wait_s(TS_MS + 4000, 102.0) == 0.0
    assert p.wait_s(TS_MS + 4000, 105.0) == 0.0  # behind schedule: at once


def test_out_of_order_event_already_past_is_sent_at_once() -> None:
    p = Pacer(10.0)
    p.wait_s(TS_MS, 0.0)
    assert p.wait_s(TS_MS - 60_000, 0.0) == 0.0
    assert p.wait_s(TS_MS + 10_000, 0.0) == pytest.approx(1.0)


def test_slow_speed() -> None:
    p = Pacer(0.5)
    p.wait_s(TS_MS, 0.0)
    assert p.wait_s(TS_MS + 1000, 0.0) == pytest.approx(2.0)


@pytest.mark.parametrize("text", ["-1", "nan", "inf", "fast"])
def test_speed_argument_rejects(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError):
        speed_arg(text)


def test_speed_argument_accepts() -> None:
    assert speed_arg("0") == 0.0
    assert speed_arg("2.5") == 2.5
    args = cli.parser().parse_args(["replay", "f.jsonl", "--speed", "60", "--quiet"])
    assert (args.file, args.speed, args.quiet, args.func) == ("f.jsonl", 60.0, True, cli.cmd_replay)
    assert cli.parser().parse_args(["replay", "f.jsonl"]).speed is None


# --- line count ------------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "n"),
    [(b"", 0), (b"a", 1), (b"a\n", 1), (b"a\nb", 2), (b"\n\n\n", 3), (b"a\n" * 300_000, 300_000)],
)
def test_count_lines(tmp_path: Path, content: bytes, n: int) -> None:
    f = tmp_path / "f.jsonl"
    f.write_bytes(content)
    assert count_lines(f) == n


# --- progress --------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t

    def sleep(self, s: float) -> None:
        assert s > 0
        self.t += s


def test_progress_on_a_terminal_redraws_one_line() -> None:
    clock, out = Clock(), io.StringIO()
    p = ProgressBar(100_000, out, tty=True, clock=clock)
    clock.t += 1.0
    p.update(12_345, 8_100, 0)
    assert out.getvalue() == "\r\x1b[Kreplay: 12,345/100,000 lines   12.3%  8,100 ev/s"
    p.update(12_346, 8_101, 0)  # too soon: not redrawn
    assert out.getvalue().count("\r") == 1
    p.note("replay: line 7: not_json (message: not valid JSON)")
    assert out.getvalue().endswith("\r\x1b[Kreplay: line 7: not_json (message: not valid JSON)\n")
    p.clear()  # nothing shown: nothing to erase
    assert out.getvalue().endswith("JSON)\n")


def test_progress_off_a_terminal_every_ten_percent_or_five_seconds() -> None:
    clock, out = Clock(), io.StringIO()
    p = ProgressBar(1000, out, tty=False, clock=clock)
    for n in range(1, 1001):
        clock.t += 0.02
        p.update(n, n, 0)
    lines = out.getvalue().splitlines()
    assert len(lines) == 10
    assert lines[0].startswith("replay: 100/1,000 lines   10.0%  50 ev/s")
    assert lines[-1].startswith("replay: 1,000/1,000 lines  100.0%")
    out.truncate(0)
    out.seek(0)
    p = ProgressBar(1000, out, tty=False, clock=clock)
    for n in range(1, 1001):  # a fast run: each 10%, but at most one line a second
        clock.t += 0.001
        p.update(n, n, 0)
    assert len(out.getvalue().splitlines()) == 0
    clock.t += 1.0
    p.update(1000, 1000, 0)
    assert out.getvalue().startswith("replay: 1,000/1,000 lines  100.0%")
    out.truncate(0)
    out.seek(0)
    p = ProgressBar(10**9, out, tty=False, clock=clock)
    for n in range(1, 31):
        clock.t += 0.5
        p.update(n, n, 2)
    lines = out.getvalue().splitlines()
    assert len(lines) == 3 and lines[0].endswith("  2 invalid")


def test_quiet_progress_shows_only_notes() -> None:
    out = io.StringIO()
    p = ProgressBar(10, out, quiet=True, tty=True)
    p.update(10, 10, 0, force=True)
    p.note("replay: line 1: x (y)")
    assert out.getvalue() == "replay: line 1: x (y)\n"


# --- sending, with a fake producer ------------------------------------------


class FakeProducer:
    def __init__(self, fail_topic: str | None = None, clock: Clock | None = None) -> None:
        self.sent: list[tuple[str, bytes, bytes, float]] = []
        self.fail_topic, self.clock = fail_topic, clock
        self.pending: list[tuple[Future, str]] = []
        self.flushed = self.closed = False

    def send(self, topic: str, value: bytes, key: bytes) -> Future:
        self.sent.append((topic, key, value, self.clock() if self.clock else 0.0))
        f = Future()
        self.pending.append((f, topic))
        return f

    def flush(self, timeout: float | None = None) -> None:
        for f, topic in self.pending:
            if topic == self.fail_topic:
                f.failure(KafkaTimeoutError("Batch expired"))
            else:
                f.success(None)
        self.pending.clear()
        self.flushed = True

    def close(self, timeout: float | None = None) -> None:
        self.closed = True


def write(tmp_path: Path, lines: list[bytes]) -> Path:
    f = tmp_path / "in.jsonl"
    f.write_bytes(b"".join(lines))
    return f


def test_replay_sends_valid_lines_and_reports_invalid_ones(tmp_path: Path) -> None:
    lines = [
        line(event("like")),
        b"\n",
        b'{"text": "' + SECRET.encode() + b'"\n',  # line 3: not JSON
        line(exposure()),
        b"[1]\n",  # line 5
        line(event("dm", text=SECRET)),
        line(event("poke")),  # line 7
    ]
    f = write(tmp_path, lines)
    out, prod = io.StringIO(), FakeProducer()
    s = Settings(topic_prefix="pre.")
    result = replay(s, f, stream=out, producer=prod)
    assert (result.sent, result.skipped, result.lines) == (3, 3, 7)
    assert [(t, k, v) for t, k, v, _ in prod.sent] == [
        ("pre.social.likes", b"acme", lines[0][:-1]),
        ("pre.social.exposure", b"acme", lines[3][:-1]),
        ("pre.social.dms", b"acme", lines[5][:-1]),
    ]
    assert prod.flushed and prod.closed
    text = out.getvalue()
    assert "replay: line 3: not_json (message: not valid JSON)\n" in text
    assert "replay: line 5: not_object (" in text
    assert "replay: line 7: unknown_kind (" in text
    assert "line 2" not in text  # blank: silent
    assert SECRET not in text
    assert (
        text.rstrip("\n")
        .splitlines()[-1]
        .startswith("replayed 3 events (3 skipped as invalid) in ")
    )


def test_more_than_twenty_invalid_lines_are_counted(tmp_path: Path) -> None:
    f = write(tmp_path, [b"{bad\n"] * 25 + [line(event("like"))])
    out = io.StringIO()
    result = replay(Settings(), f, stream=out, producer=FakeProducer(), quiet=True)
    assert result.skipped == 25 and result.sent == 1
    text = out.getvalue().splitlines()
    assert len(text) == MAX_LISTED + 1
    assert text[MAX_LISTED - 1].startswith("replay: line 20: not_json")
    assert text[-1] == "replay: and 5 more invalid lines (25 in all)"


def test_quiet_prints_nothing_when_all_is_well(tmp_path: Path) -> None:
    f = write(tmp_path, [line(event("like")), line(event("share"))])
    out = io.StringIO()
    result = replay(Settings(), f, stream=out, producer=FakeProducer(), quiet=True)
    assert (result.sent, result.skipped) == (2, 0)
    assert out.getvalue() == ""


def test_a_failed_send_is_a_broker_error_naming_the_topic(tmp_path: Path) -> None:
    f = write(tmp_path, [line(event("like")), line(event("comment")), line(event("like"))])
    prod = FakeProducer(fail_topic="social.comments")
    with pytest.raises(BrokerError) as info:
        replay(Settings(), f, stream=io.StringIO(), producer=prod)
    msg = str(info.value)
    assert "line 2 to social.comments failed: KafkaTimeoutError" in msg
    assert "\n" not in msg
    assert prod.closed


def test_a_send_that_raises_stops_the_replay(tmp_path: Path) -> None:
    class Raising(FakeProducer):
        def send(self, topic: str, value: bytes, key: bytes) -> Future:
            if len(self.sent) == 1:
                raise KafkaTimeoutError("Failed to update metadata after 60.0 secs.")
            return super().send(topic, value, key)

    f = write(tmp_path, [line(event("like"))] * 5)
    prod = Raising()
    with pytest.raises(BrokerError, match=r"line 2 to social\.likes failed"):
        replay(Settings(), f, stream=io.StringIO(), producer=prod)
    assert len(prod.sent) == 1


@pytest.mark.parametrize(
    ("file_order", "expected_at", "expected_ts"),
    [
        # in the file's order, 500 and 2000 are already past when they are read
        (True, [0.0, 0.5, 0.5, 2.0, 2.0], [0, 1000, 500, 4000, 2000]),
        # by default the file is sent sorted by event time
        (False, [0.0, 0.25, 0.5, 1.0, 2.0], [0, 500, 1000, 2000, 4000]),
    ],
)
def test_replay_paces_by_event_time(
    tmp_path: Path, file_order: bool, expected_at: list[float], expected_ts: list[int]
) -> None:
    tss = [0, 1000, 500, 4000, 2000]
    f = write(tmp_path, [line(event("like", ts=TS_MS + t)) for t in tss])
    clock = Clock()
    prod = FakeProducer(clock=clock)
    t0 = clock.t
    replay(
        Settings(),
        f,
        speed=2.0,
        file_order=file_order,
        stream=io.StringIO(),
        producer=prod,
        clock=clock,
        sleep=clock.sleep,
    )
    at = [round(t - t0, 3) for *_, t in prod.sent]
    assert at == expected_at
    assert [orjson.loads(v)["ts"] - TS_MS for _, _, v, _ in prod.sent] == expected_ts


def test_missing_file_is_os_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        replay(Settings(), tmp_path / "nope.jsonl", stream=io.StringIO(), producer=FakeProducer())


def test_cli_missing_file_is_one_line_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], no_signal_handlers: None
) -> None:
    assert cli.main(["replay", str(tmp_path / "nope.jsonl")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope.jsonl" in err and "No such file" in err


def test_utf8_bom_before_the_first_line_is_dropped(tmp_path: Path) -> None:
    raw = line(event("like"))
    f = write(tmp_path, [b"\xef\xbb\xbf" + raw, raw])
    prod = FakeProducer()
    result = replay(Settings(), f, stream=io.StringIO(), producer=prod, quiet=True)
    assert result.skipped == 0
    assert [v for _, _, v, _ in prod.sent] == [raw[:-1], raw[:-1]]


def test_cli_invalid_settings_exit_2_not_1(
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
    no_signal_handlers: None,
) -> None:
    """Exit 1 means "some lines skipped"; a replay that sent nothing is a failure."""
    f = write(tmp_path, [line(event("like"))])
    monkeypatch.setenv("ENGAGEMENT_WEB_PORT", "eighty")
    assert cli.main(["replay", str(f)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "ENGAGEMENT_WEB_PORT" in err


def test_settle_options_and_the_default_worker_address() -> None:
    args = cli.parser().parse_args(["replay", "f.jsonl", "--settle", "--settle-timeout", "30"])
    assert (args.settle, args.settle_timeout, args.api) == (True, 30.0, None)
    plain = cli.parser().parse_args(["replay", "f.jsonl"])
    assert (plain.settle, plain.settle_timeout) == (False, 600.0)
    from pipeline.config.settings import Settings

    assert cli._api_url(Settings(web_host="0.0.0.0", web_port=7000)) == "http://127.0.0.1:7000"
    assert cli._api_url(Settings(web_host="10.1.2.3", web_port=6066)) == "http://10.1.2.3:6066"

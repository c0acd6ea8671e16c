"""The `engagement` command."""

from __future__ import annotations

import argparse
import dataclasses
import logging
import signal
import sys
import threading
from collections.abc import Sequence
from datetime import UTC
from typing import Any

from pipeline.cli import broker, login
from pipeline.config import security
from pipeline.config.load import load
from pipeline.config.settings import Settings, SettingsError


def _settings() -> Settings:
    try:
        s = load()
        security.ssl_context(s)  # unreadable TLS files, a wrong key password
    except SettingsError as exc:
        raise SystemExit(f"engagement: invalid settings: {exc}") from None
    security.redact_logs(s)
    return s


def cmd_broker(args: argparse.Namespace) -> int:
    proc = None
    try:  # Ctrl-C is the way to stop it, also while it is starting
        proc = broker.start(args.port)
        print(f"embedded broker listening on 127.0.0.1:{args.port} (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        if proc is not None:
            broker.stop(proc)


def _service(args: argparse.Namespace, names: list[str], exact: list[str]) -> Settings:
    """A long-running command's start: settings, logging, a reachable broker that
    accepts the login, and its topics (`exact`: those whose partition count must
    equal the setting)."""
    s = _settings()
    logging.basicConfig(
        level=args.loglevel.upper(), format="%(asctime)s %(levelname)s %(name)s %(message)s"
    )
    logging.getLogger("kafka").setLevel(logging.WARNING)
    broker.wait_reachable(s.bootstrap_servers, timeout_s=args.wait)
    login.check_login(s)
    from pipeline.cli.topics import ensure_topics

    ensure_topics(
        s.bootstrap_servers,
        [s.topic(n) for n in names],
        s.partitions,
        exact=[s.topic(n) for n in exact],
        client_config=security.kafka_python_config(s),
    )
    return s


def cmd_worker(args: argparse.Namespace) -> int:
    from pipeline.model import topics

    s = _service(args, list(topics.ALL), [topics.EVENTS])
    from agents.worker import run

    return run(s, loglevel=args.loglevel)


def cmd_alertmanager_bridge(args: argparse.Namespace) -> int:
    from pipeline.model import topics

    s = _service(args, [topics.ALERTS], [])
    from pipeline.cli.alertmanager_bridge import run

    stop = threading.Event()

    def _stop(signum: int, frame: object) -> None:
        stop.set()  # the loop ends after the current post; nothing unsettled is committed

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    return run(s, stop)


def cmd_generate(args: argparse.Namespace) -> int:
    s = _settings()
    broker.wait_reachable(s.bootstrap_servers, timeout_s=args.wait)
    login.check_login(s)
    from pipeline.cli.produce import generate_to_kafka

    n = generate_to_kafka(
        s,
        rate=args.rate,
        duration_s=args.duration,
        seed=args.seed,
        malformed=args.malformed,
        speed=args.speed,
        backfill_s=args.backfill,
        quiet=args.quiet,
    )
    if not args.quiet:
        print(f"generated {n} messages", flush=True)
    return 0


def cmd_replay(args: argparse.Namespace) -> int:
    """Exit 0: every line sent and acknowledged; 1: some lines skipped as invalid, all
    others sent and acknowledged; 2: nothing or not everything sent (invalid settings,
    an unreadable file, a broker error such as a send that was not acknowledged);
    3: with --settle, the workers did not make the file final in --settle-timeout."""
    from pipeline.cli import replay

    try:  # before waiting for the broker: a typo in the path fails at once
        with open(args.file, "rb"):
            pass
    except OSError as exc:
        print(f"engagement: replay: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    try:
        s = _settings()
    except SystemExit as exc:  # exit 1 means "lines skipped" here: a failure is 2
        print(exc.code, file=sys.stderr)
        return 2
    broker.wait_reachable(s.bootstrap_servers, timeout_s=args.wait)
    login.check_login(s)
    from pipeline.cli.topics import ensure_topics
    from pipeline.model import topics

    # Missing input topics get the partition count the worker would give them (a
    # broker that auto-creates topics would use its own default instead).
    ensure_topics(
        s.bootstrap_servers,
        [s.topic(n) for n in topics.INPUTS],
        s.partitions,
        client_config=security.kafka_python_config(s),
    )
    try:
        result = replay.replay(
            s,
            args.file,
            speed=args.speed,
            quiet=args.quiet,
            file_order=args.file_order,
            stream=sys.stderr,
        )
    except OSError as exc:
        print(f"engagement: replay: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return 2
    if args.settle and result.last_ts_ms is not None:
        from pipeline.cli import settle

        verdict = settle.wait(
            args.api or _api_url(s),
            result.last_ts_ms,
            timeout_s=args.settle_timeout,
            fetch=_fetch_json,
            stream=sys.stderr,
            quiet=args.quiet,
        )
        if not verdict.settled:
            return 3
    return 1 if result.skipped else 0


def _api_url(s: Settings) -> str:
    host = s.web_host if s.web_host not in ("", "0.0.0.0", "::") else "127.0.0.1"
    return f"http://{host}:{s.web_port}"


def _fetch_json(url: str) -> dict[str, Any]:
    import urllib.request

    import orjson

    with urllib.request.urlopen(url, timeout=5) as r:
        doc: dict[str, Any] = orjson.loads(r.read())
    return doc


def cmd_backtest(args: argparse.Namespace) -> int:
    from pathlib import Path

    from pipeline.detection import backtest, nab

    cfg = _settings().detection.settings_for_kind(args.kind)
    try:
        series = backtest.read_series(Path(args.series))
        windows = (
            nab.labels_for(nab.load_labels(Path(args.labels)), Path(args.series))
            if args.labels
            else None
        )
    except (backtest.BacktestError, ValueError, KeyError, OSError) as exc:
        reason = exc.args[0] if isinstance(exc, KeyError) and exc.args else exc
        print(f"engagement backtest: {reason}", file=sys.stderr)
        return 2
    if series.unordered:
        print(
            f"engagement backtest: warning: {series.unordered} rows have a timestamp not "
            "after the previous row's (repeated or backwards); scored in file order",
            file=sys.stderr,
        )
    steps = backtest.run(series, cfg)
    backtest.write_scored(Path(args.out), series, steps)
    alerts = [bool(s.alert) for s in steps]
    print(f"{len(steps)} rows, {sum(alerts)} alerts written to {args.out}")
    if windows is not None:
        naive = [t.replace(tzinfo=None) for t in series.timestamps]
        rows = nab.window_rows(naive, windows)
        for profile in nab.PROFILES:
            fs = nab.score_file(alerts, rows, profile)
            print(
                f"NAB {profile.name}: {nab.normalized([fs], profile):.1f} "
                f"(raw {fs.score:.3f}; {fs.true_positives} of {fs.windows} windows detected, "
                f"{fs.false_positives} false positives)"
            )
    if args.plot:
        from pipeline.detection.plot import plot

        plot(
            Path(args.plot),
            series.timestamps,
            series.values,
            [s.score for s in steps],
            alerts,
            [(a.replace(tzinfo=UTC), b.replace(tzinfo=UTC)) for a, b in windows or ()],
            title=Path(args.series).name,
        )
        print(f"plot written to {args.plot}")
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from pipeline.cli.demo import run_demo

    return run_demo(port=args.port, web_port=args.web_port, rate=args.rate)


def cmd_config_check(args: argparse.Namespace) -> int:
    try:
        s = load(args.file, env={})
        security.ssl_context(s)
    except SettingsError as exc:
        for path, reason in exc.problems:
            print(f"{args.file}: {path}: {reason}")
        return 1
    print(f"{args.file}: ok")
    # The effective settings, defaults filled in; passwords are Secrets, shown masked.
    for f in dataclasses.fields(s):
        print(f"  {f.name} = {getattr(s, f.name)!r}")
    return 0


def replay_speed(text: str) -> float:
    from pipeline.cli.replay import speed_arg

    return speed_arg(text)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="engagement", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)
    b = sub.add_parser("broker", help="run the embedded Kafka-compatible broker in the foreground")
    b.add_argument("--port", type=int, default=9092)
    b.set_defaults(func=cmd_broker)
    w = sub.add_parser("worker", help="run the stream-processing worker")
    w.add_argument("--loglevel", default="info")
    w.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the broker")
    w.set_defaults(func=cmd_worker)
    am = sub.add_parser(
        "alertmanager-bridge",
        help="post the alerts of engagement.alerts to Alertmanager (at least once)",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Consume engagement.alerts (with topic_prefix) in the consumer group
alertmanager.group_id and post each alert to every Alertmanager URL
(ENGAGEMENT_ALERTMANAGER_URL, POST /api/v2/alerts), in batches. Offsets are
committed only after Alertmanager accepted the alerts before them; connection
errors and 5xx are retried with capped, jittered exponential backoff; an alert
Alertmanager refuses as malformed (400/422) is logged by topic[partition]@offset
and skipped. Labels: alertname (the type), severity, account, channel, metric,
alert_id; startsAt = emitted_at, endsAt = emitted_at + resolve_timeout_s.
/healthz and /metrics on ENGAGEMENT_WEB_HOST:ENGAGEMENT_ALERTMANAGER_WEB_PORT.""",
    )
    am.add_argument("--loglevel", default="info")
    am.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the broker")
    am.set_defaults(func=cmd_alertmanager_bridge)
    g = sub.add_parser("generate", help="write synthetic traffic to the input topics")
    g.add_argument("--rate", type=float, default=50.0, help="events/s at the daily peak")
    g.add_argument("--duration", type=float, default=None, help="seconds (default: forever)")
    g.add_argument("--seed", type=int, default=7)
    g.add_argument("--malformed", type=float, default=0.0, help="fraction of malformed messages")
    g.add_argument("--speed", type=float, default=1.0, help="event time per wall time; 0 = max")
    g.add_argument(
        "--backfill",
        type=float,
        default=0.0,
        help="start this many seconds in the past (sent at once)",
    )
    g.add_argument("--quiet", action="store_true")
    g.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the broker")
    g.set_defaults(func=cmd_generate)
    r = sub.add_parser(
        "replay",
        help="backfill: send the events of a JSON Lines file to the input topics",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Send each line of FILE.jsonl (a schema-v1 interaction event, or an exposure
snapshot without `kind`) to its input topic, keyed by account_id, with the
line's bytes unchanged, in event-time order (the file is read whole and
sorted; --file-order keeps the file's order). Blank lines are skipped. Invalid
lines are not sent: they are listed on stderr by line number and reason, never
by content.

exit codes:
  0  every line sent and acknowledged by the broker
  1  some lines skipped as invalid; all the others sent and acknowledged
  2  invalid settings, an unreadable file or a broker error (such as a send
     that was not acknowledged): not everything was sent
  3  with --settle: the workers did not make the whole file final within
     --settle-timeout (what is still open is listed)""",
    )
    r.add_argument("file", metavar="FILE.jsonl", help="one JSON object per line")
    r.add_argument(
        "--speed",
        type=replay_speed,
        default=None,
        metavar="X",
        help="pace by event time: X event seconds per wall second, from the first "
        "line's ts (default: as fast as possible)",
    )
    r.add_argument("--quiet", action="store_true", help="no progress bar or summary")
    r.add_argument(
        "--file-order",
        action="store_true",
        help="send lines in the file's order, not sorted by event time (streams the "
        "file instead of holding it in memory)",
    )
    r.add_argument("--wait", type=float, default=10.0, help="seconds to wait for the broker")
    r.add_argument(
        "--settle",
        action="store_true",
        help="after sending, wait until the workers have made the whole file final "
        "(every partition's published watermark past the file's last event time plus "
        "grace), printing progress",
    )
    r.add_argument(
        "--settle-timeout",
        type=float,
        default=600.0,
        metavar="S",
        help="with --settle: give up after S seconds, exit 3 (default: 600)",
    )
    r.add_argument(
        "--api",
        metavar="URL",
        default=None,
        help="with --settle: a worker's web address (default: http://ENGAGEMENT_WEB_HOST:"
        "ENGAGEMENT_WEB_PORT); the workers owning other partitions are asked too",
    )
    r.set_defaults(func=cmd_replay)
    bt = sub.add_parser(
        "backtest",
        help="run the spike/drop detector over a timestamp,value CSV",
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description="""\
Run the live spike/drop detector, with the live settings (the [detection]
defaults of ENGAGEMENT_CONFIG, else the built-in ones), over SERIES.csv
(header timestamp,value; one row per window, in time order; repeated or
backwards timestamps are scored where they stand, with a warning counting
them) and write timestamp,value,anomaly_score,alert: alert is 1 where the
worker would have raised a spike or drop alert on a series of that kind
(--series: count, as weighted engagement and mentions; rate, as engagement
rates, judged in logs; share, as shares and other levels, judged as they are).
With --labels (a JSON object: file name -> [[start, end], ...]), print the NAB
scores of the alerts.

exit codes:
  0  scored
  2  an unreadable or invalid series or labels file""",
    )
    bt.add_argument("series", metavar="SERIES.csv")
    bt.add_argument("--out", required=True, metavar="SCORED.csv")
    bt.add_argument("--labels", metavar="WINDOWS.json", help="labeled anomaly windows")
    bt.add_argument("--plot", metavar="OUT.png", help="draw series, alerts and windows")
    bt.add_argument(
        "--series",
        dest="kind",
        choices=("count", "rate", "share"),
        default="count",
        help="the kind of series: its transform and floors, as the worker uses them "
        "(default: count)",
    )
    bt.set_defaults(func=cmd_backtest)
    d = sub.add_parser("demo", help="broker + worker + generator, alerts shown live")
    d.add_argument("--port", type=int, default=0, help="broker port (default: a free one)")
    d.add_argument("--web-port", type=int, default=6066)
    d.add_argument("--rate", type=float, default=40.0)
    d.set_defaults(func=cmd_demo)
    c = sub.add_parser("config", help="configuration tools")
    csub = c.add_subparsers(dest="config_command", required=True)
    cc = csub.add_parser(
        "check", help="report every invalid key of a config file, or the settings it gives"
    )
    cc.add_argument("file")
    cc.set_defaults(func=cmd_config_check)
    return p


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    # SIGTERM behaves like Ctrl-C so child processes are always cleaned up.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args))
    except broker.BrokerError as exc:
        print(f"engagement: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

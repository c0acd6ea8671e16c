"""Every query operators run, through a real Prometheus scraping a real worker: each
PromQL expression of the Grafana dashboards (panels, rows' panels, annotations, the
template variables' label_values) and each recording and alerting rule of
deploy/prometheus/rules.yml must parse, evaluate and return data, or be listed below,
with the reason, as empty in this scenario (and then it must be empty). An alerting
rule's condition must be empty (no alert holds in this healthy run) and the operands of
its comparisons must have data; EITHER_WAY names the one condition that may hold.

The scenario: the generator's traffic for five accounts (30 minutes sent at once, then
about a minute live, a little of it malformed), with two generator bursts on acme, one
in the past and one live, a few events too late for their windows, and a worker that
labels acme. Prometheus (tests/prometheus.py) scrapes the worker every second under
the job name of deploy/prometheus/prometheus.yml and evaluates a copy of rules.yml.
"""

from __future__ import annotations

import heapq
import json
import re
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from pipeline.sim.generator import RawMessage, TrafficSpec, generate
from tests.integration.conftest import ROOT, Env, Worker, wait_for
from tests.prometheus import Prometheus, PrometheusError, deploy_job_name, ensure_prometheus

pytestmark = pytest.mark.integration

PROMETHEUS_BIN = ensure_prometheus()
if PROMETHEUS_BIN is None:
    pytest.skip(
        "prometheus not found: run `make prometheus-tools` as root (apt-get install prometheus)",
        allow_module_level=True,
    )

DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RULES = ROOT / "deploy" / "prometheus" / "rules.yml"
ACCOUNT = "acme"
SIZE_S = "300"  # the detectors' window; must be one of $size's values
CONFIG = f"""
[windows]
sizes_s = [60, 300]
idle_after_s = 2

[metrics]
accounts = ["{ACCOUNT}"]
top_accounts = 2

[detection.competitors]
{ACCOUNT} = ["globex", "initech"]

# fires on acme's bursts (its busiest channel has about 15 events a minute otherwise)
[[alerts.thresholds]]
name = "acme-volume-spike"
metric = "volume"
op = "above"
value = 25
accounts = ["{ACCOUNT}"]
window_s = 60
severity = "warning"
cooldown_s = 0
"""
BACKFILL_S = 1800
LIVE_S = 60
BURSTS = ((-900, 60), (5, 30))  # acme bursts: start (s from now), length (s)
WAIT_S = 150  # for every expression to have its data

# Grafana's built-in variables, as a dashboard of the last hour would resolve them;
# $account and $size come from the template variables' own queries.
TEMPLATE_VALUES = {"account": ACCOUNT, "size": SIZE_S}
BUILT_IN = {"__rate_interval": "1m", "__interval": "15s", "__range": "5m"}
_VARIABLE = re.compile(r"\$\{(\w+)(?::[\w]+)?\}|\$(\w+)|\[\[(\w+)\]\]")

EMPTY_ALERT = "an alert condition: false in a healthy run"
# Expressions that are empty in this scenario, each with why. They are checked to BE
# empty, so the list stays true.
EXPECTED_EMPTY: dict[str, str] = {
    'absent(up{job="engagement-worker"})': "the worker is scraped",
    "absent(engagement_windows_emitted_total) * 0": "windows are emitted",
    # no band without history: the detectors need whole days of it, the run has 30 min
    'max by (bound) (engagement_detector_threshold{account="acme", series="engagement"})': (
        "the detector's band needs whole days of history; the run has 30 minutes"
    ),
    'max(engagement_detector_threshold{account="acme", series="share_of_voice", '
    'bound="lower"})': "the detector's band needs whole days of history; the run has 30 minutes",
}
# Alert conditions whose result depends on when they are evaluated: they must parse and
# evaluate, and their operands have data, but they may hold or not.
EITHER_WAY: dict[str, str] = {
    "engagement:event_to_output_latency_seconds:p99_5m > 30": (
        "a window's latency counts from its newest event, so the sparse 1- and 5-minute "
        "windows of this traffic take up to their length plus lateness and grace (60 s "
        "seen) once live windows close; `for: 10m` keeps the alert from firing"
    ),
}
# Metric names that no scrape has in this scenario (see EXPECTED_EMPTY).
EXPECTED_ABSENT = {"engagement_detector_threshold": "no band without days of history"}


# --------------------------------------------------------------------------- expressions


def substitute(expr: str, variables: dict[str, str], where: str) -> str:
    def one(m: re.Match[str]) -> str:
        name = m[1] or m[2] or m[3]
        if name not in variables:
            raise AssertionError(f"{where}: unknown variable ${name} in {expr!r}")
        return variables[name]

    return _VARIABLE.sub(one, expr)


def panels_of(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    """Every panel, the panels of rows (collapsed or not) included."""
    for panel in panels:
        yield panel
        yield from panels_of(panel.get("panels", []))


def dashboard_exprs(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, expr) of every panel target and annotation, variables unresolved."""
    out = []
    for panel in panels_of(dashboard["panels"]):
        for target in panel.get("targets", []):
            if target.get("expr"):
                out.append((f"{dashboard['title']} / {panel['title']}", target["expr"]))
    for a in dashboard.get("annotations", {}).get("list", []):
        for expr in {a.get("expr"), (a.get("target") or {}).get("expr")} - {None}:
            out.append((f"{dashboard['title']} / annotation {a['name']}", expr))
    return out


def variable_query(variable: dict[str, Any]) -> str:
    query = variable.get("query", "")
    return str(query.get("query", "") if isinstance(query, dict) else query)


def rule_exprs() -> list[tuple[str, str, bool]]:
    """(name, expr, is_alert) of every rule in rules.yml."""
    groups = yaml.safe_load(RULES.read_text(encoding="utf-8"))["groups"]
    return [
        (rule.get("record") or rule["alert"], " ".join(rule["expr"].split()), "alert" in rule)
        for group in groups
        for rule in group["rules"]
    ]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_MODIFIER = re.compile(r"^\s*(?:bool\b|(?:on|ignoring|group_left|group_right)\s*\([^)]*\))\s*")
_LEVELS = (
    re.compile(r"\bor\b"),
    re.compile(r"\b(?:and|unless)\b"),
    re.compile(r"==|!=|>=|<=|>|<"),
)
_NUMBER = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:e[+-]?\d+)?$", re.IGNORECASE)


def _top_level(expr: str) -> str | None:
    """`expr` with strings blanked and everything inside brackets replaced by spaces,
    positions kept: what is left is the expression's top level."""
    blanked = _STRING.sub(lambda m: " " * len(m[0]), expr)
    out, depth = [], 0
    for ch in blanked:
        if ch in "([{":
            depth += 1
            out.append(ch if depth == 1 else " ")
        elif ch in ")]}":
            depth -= 1
            out.append(ch if depth == 0 else " ")
        else:
            out.append(ch if depth == 0 else " ")
    return "".join(out) if depth == 0 else None  # Prometheus will say what is wrong


def operands(expr: str) -> list[str]:
    """The operands under an expression's set operators (or, and, unless) and
    comparisons, recursively, number literals left out: for `a > 5 or b` that is
    [a, b]. An expression without such operators is its own only operand."""
    expr = expr.strip()
    top = _top_level(expr)
    if top is None:
        return [expr]
    if top.startswith("(") and top.endswith(")") and top.count("(") == 1:
        return operands(expr[1:-1])
    for level in _LEVELS:
        cuts = [(m.start(), m.end()) for m in level.finditer(top)]
        if cuts:
            parts, begin = [], 0
            for start, end in cuts:
                parts.append(expr[begin:start])
                begin = end
            parts.append(expr[begin:])
            found = []
            for part in parts:
                part = _MODIFIER.sub("", part.strip(), count=1)
                found += [] if _NUMBER.match(part.strip()) else operands(part)
            return found
    return [expr]


def metric_names(expr: str) -> set[str]:
    """The engagement metric names an expression selects, as scraped (_bucket etc.)."""
    return set(re.findall(r"(?<![\w:])(engagement[_:][a-zA-Z0-9_:]+)", _STRING.sub('""', expr)))


def test_operands_split_conditions_only() -> None:
    assert operands("a > 5 or b") == ["a", "b"]
    assert operands('up{job="x"} == 0 or absent(up{job="x"})') == [
        'up{job="x"}',
        'absent(up{job="x"})',
    ]
    assert operands("(a == 0 or absent(b) * 0) and on () (sum(rate(c[5m])) > 0)") == [
        "a",
        "absent(b) * 0",
        "sum(rate(c[5m]))",
    ]
    assert operands('histogram_quantile(0.5, sum by (le) (rate(x{a=~"b|c"}[1m])))') == [
        'histogram_quantile(0.5, sum by (le) (rate(x{a=~"b|c"}[1m])))'
    ]
    assert operands("(a) / (b)") == ["(a) / (b)"]
    assert metric_names("rate(engagement_x_bucket[1m]) / engagement:y:rate5m") == {
        "engagement_x_bucket",
        "engagement:y:rate5m",
    }


# --------------------------------------------------------------------------- scenario


def traffic(now_ms: int) -> Iterator[RawMessage]:
    """The generator's five accounts, with its bursts on acme merged in, in event time."""
    base = generate(
        TrafficSpec(seed=21, rate_per_s=5.0, malformed_fraction=0.01),
        now_ms - BACKFILL_S * 1000,
        BACKFILL_S + LIVE_S,
    )
    # one account that bursts (x5 to x20) from its first second on, for `length_s`
    bursts = [
        generate(
            TrafficSpec(
                seed=22 + i,
                accounts=(ACCOUNT,),
                rate_per_s=1.0,
                burst_probability=1.0,
                exposure_every_s=10**7,  # exposure comes from the base traffic
            ),
            now_ms + start_s * 1000,
            length_s,
        )
        for i, (start_s, length_s) in enumerate(BURSTS)
    ]
    return heapq.merge(base, *bursts, key=lambda m: m.ts_ms)


def produce(env: Env, now_ms: int, live: threading.Event) -> None:
    """Everything before now at once, then in wall time; `live` is set once the past
    is sent."""
    wall0 = time.monotonic()
    for msg in traffic(now_ms):
        if msg.ts_ms > now_ms:
            if not live.is_set():
                env.producer.flush()
                live.set()
            delay = wall0 + (msg.ts_ms - now_ms) / 1000 - time.monotonic()
            if delay > 0:
                env.producer.flush()
                time.sleep(delay)
        env.producer.send(env.topic(f"social.{msg.topic_suffix}"), key=msg.key, value=msg.value)
    env.producer.flush()
    live.set()


def stragglers(env: Env, now_ms: int) -> None:
    """A few likes of acme 20 minutes old, long after their windows are final."""
    for i in range(5):
        env.send(
            "likes",
            {
                "event_id": f"straggler-{i}",
                "kind": "like",
                "channel": "instagram",
                "account_id": ACCOUNT,
                "ts": now_ms - 1_200_000 + i * 1000,
                "post_id": "late",
                "actor_id": f"late-{i}",
            },
        )


@pytest.fixture
def prometheus(tmp_path: Path) -> Iterator[Callable[[Worker], Prometheus]]:
    """Starts a Prometheus that scrapes a worker; stopped at teardown."""
    started: list[Prometheus] = []

    def start(worker: Worker) -> Prometheus:
        assert PROMETHEUS_BIN is not None
        run = tmp_path / "prometheus"
        run.mkdir()
        started.append(Prometheus(PROMETHEUS_BIN, run, [f"127.0.0.1:{worker.web_port}"]))
        return started[-1].start()

    try:
        yield start
    finally:
        for prom in started:
            prom.stop()


def label_values(prom: Prometheus, query: str) -> tuple[str, list[str]]:
    """Grafana's label_values(selector, label) through the label values API."""
    m = re.fullmatch(r"\s*label_values\(\s*(.+?)\s*,\s*(\w+)\s*\)\s*", query)
    assert m, f"not a label_values query: {query!r}"
    selector, label = m[1], m[2]
    return selector, sorted(prom.get(f"label/{label}/values", **{"match[]": selector}))


def offering(prom: Prometheus, query: str, wanted: str, where: str, timeout_s: float = 30) -> str:
    """Waits until a label_values query offers `wanted`; returns its selector."""
    deadline = time.monotonic() + timeout_s
    while True:
        selector, values = label_values(prom, query)
        if wanted in values:
            return selector
        if time.monotonic() > deadline:
            raise AssertionError(f"{where}: {query} offers {values}, not {wanted}")
        time.sleep(0.5)


def test_every_dashboard_and_rule_query_returns_data(
    env: Env, prometheus: Callable[[Worker], Prometheus]
) -> None:
    began = time.monotonic()
    worker = env.worker(CONFIG).start()
    prom = prometheus(worker)
    job = deploy_job_name()

    def up() -> bool:
        return [s["value"][1] for s in prom.query(f'up{{job="{job}"}}')] == ["1"]

    wait_for(up, 30, f"Prometheus to scrape the worker as job {job}", worker)

    now_ms = int(time.time() * 1000)
    live = threading.Event()
    failed: list[BaseException] = []

    def run() -> None:
        try:
            produce(env, now_ms, live)
        except BaseException as exc:  # reported by the test
            failed.append(exc)
            live.set()

    producer = threading.Thread(target=run, daemon=True)
    producer.start()
    assert live.wait(120) and not failed, failed
    # acme's windows of 20 minutes ago are final before the stragglers come
    wait_for(
        lambda: (
            worker.metric(
                "engagement_window_end_timestamp_seconds", account=ACCOUNT, size_seconds="60"
            )
            * 1000
            > now_ms - 600_000
        ),
        90,
        "acme's windows of the backfill to be final",
        worker,
    )
    stragglers(env, now_ms)

    # $account and $size from the template variables' own queries, in order
    variables = dict(BUILT_IN)
    checks: list[tuple[str, str]] = []  # (where, expr)
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for variable in dashboard.get("templating", {}).get("list", []):
            where = f"{dashboard['title']} / variable {variable['name']}"
            query = substitute(variable_query(variable), variables, where)
            assert variable["name"] in TEMPLATE_VALUES, f"{where}: no value chosen for it"
            wanted = TEMPLATE_VALUES[variable["name"]]
            checks.append((where, offering(prom, query, wanted, where)))
            variables[variable["name"]] = wanted
    for path in DASHBOARDS:
        dashboard = json.loads(path.read_text(encoding="utf-8"))
        for where, expr in dashboard_exprs(dashboard):
            checks.append((where, substitute(expr, variables, where)))
    expected_empty = dict(EXPECTED_EMPTY)
    for name, expr, is_alert in rule_exprs():
        checks.append((f"rule {name}", expr))
        if not is_alert:
            checks.append((f"rule {name} (its recorded series)", name))
        elif expr not in EITHER_WAY:
            expected_empty.setdefault(expr, EMPTY_ALERT)
    # the conditions' own operands: `x > 5` needs x to have data
    for where, expr in list(checks):
        parts = operands(expr)
        if parts != [expr]:
            checks += [(f"{where} (operand)", part) for part in parts]
    unused = (EXPECTED_EMPTY.keys() | EITHER_WAY.keys()) - {expr for _, expr in checks}
    assert not unused, f"listed expressions that no dashboard or rule has: {unused}"

    def problems() -> list[str]:
        """What is not as it should be yet; a query Prometheus refuses fails at once."""
        found = []
        for where, expr in checks:
            try:
                result = prom.query(expr)
            except PrometheusError as exc:
                pytest.fail(f"{where}: {expr}\n  {exc}")
            if expr in EITHER_WAY:
                continue
            if expr in expected_empty and result:
                found.append(f"{where}: expected empty ({expected_empty[expr]}), got {result[:3]}")
            elif expr not in expected_empty and not result:
                found.append(f"{where}: no data: {expr}")
        return found

    deadline = began + WAIT_S
    while (left := problems()) and time.monotonic() < deadline:
        assert not failed, failed
        time.sleep(1.0)
    assert not left, "\n".join([f"after {WAIT_S} s:", *left, "worker log:", worker.log()[-2000:]])

    # every rule evaluates without error, and every metric named anywhere is scraped
    for group in prom.get("rules")["groups"]:
        for rule in group["rules"]:
            assert rule["health"] == "ok", f"{rule['name']}: {rule.get('lastError')}"
    scraped = set(prom.get("label/__name__/values"))
    named = set().union(*(metric_names(expr) for _, expr in checks))
    assert not named - scraped - EXPECTED_ABSENT.keys(), named - scraped - EXPECTED_ABSENT.keys()
    assert not EXPECTED_ABSENT.keys() & scraped, EXPECTED_ABSENT.keys() & scraped
    empty = sum(expr in expected_empty for _, expr in checks)
    producer.join(LIVE_S + 30)
    assert not failed, failed
    print(f"{len(checks)} expressions: {empty} expected empty, {len(EITHER_WAY)} either way")

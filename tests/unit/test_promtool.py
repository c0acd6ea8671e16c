"""promtool on what deploy/prometheus gives Prometheus: the config with the rule files it
names, the rules, and the rules' unit tests (rules.test.yml: each alerting rule fires with
its labels and annotations, and stays quiet when it should; each recorded series is checked).

promtool comes with Prometheus (Debian's `prometheus` package). `make test` installs it
when it may (as root, with apt-get) and otherwise prints one line saying these tests were
skipped; only then are they skipped here.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
PROMETHEUS = ROOT / "deploy" / "prometheus"
CONFIG = PROMETHEUS / "prometheus.yml"
RULES = PROMETHEUS / "rules.yml"
RULE_TESTS = PROMETHEUS / "rules.test.yml"

Promtool = Callable[..., str]


def load(path: Path) -> Any:
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def rules() -> list[dict[str, Any]]:
    return [rule for group in load(RULES)["groups"] for rule in group["rules"]]


def relative(path: Path) -> str:
    return str(path.relative_to(ROOT))


@pytest.fixture(scope="module")
def promtool() -> Promtool:
    """Runs promtool from the repository root; its whole output is the failure message."""
    found = shutil.which("promtool")
    if found is None:
        pytest.skip("promtool not found (make test installs it: apt-get install prometheus)")
    path: str = found

    def run(*args: str) -> str:
        done = subprocess.run(
            [path, *args], cwd=ROOT, capture_output=True, text=True, timeout=120, check=False
        )
        output = done.stdout + done.stderr
        assert done.returncode == 0, f"promtool {' '.join(args)}: exit {done.returncode}\n{output}"
        return output

    return run


def test_the_config_is_valid_and_finds_its_rule_files(promtool: Promtool) -> None:
    output = promtool("check", "config", "--lint=all", "--lint-fatal", relative(CONFIG))
    # A rule_files pattern that matches nothing is no error to promtool: count them.
    found = len(load(CONFIG)["rule_files"])
    assert f"SUCCESS: {found} rule files found" in output, output


def test_the_rules_are_valid(promtool: Promtool) -> None:
    output = promtool("check", "rules", "--lint=all", "--lint-fatal", relative(RULES))
    assert f"SUCCESS: {len(rules())} rules found" in output, output


def test_the_rules_pass_their_unit_tests(promtool: Promtool) -> None:
    promtool("test", "rules", relative(RULE_TESTS))


def test_every_rule_has_unit_tests() -> None:
    """Without promtool too: an alerting rule added to rules.yml needs a test group where
    it fires and one where it is tested and never fires; a recording rule, a check of its
    output. (promtool passes a test of an alert name that no rule has, as long as it
    expects nothing: the names are checked here.)"""
    alerts = {rule["alert"] for rule in rules() if "alert" in rule}
    records = {rule["record"] for rule in rules() if "record" in rule}
    suite = load(RULE_TESTS)
    assert suite["rule_files"] == [RULES.name]

    fires: set[str] = set()
    quiet: set[str] = set()
    checked: set[str] = set()
    for group in suite["tests"]:
        firing_here: set[str] = set()
        tested_here: set[str] = set()
        for case in group.get("alert_rule_test", []):
            tested_here.add(case["alertname"])
            if case["exp_alerts"]:
                firing_here.add(case["alertname"])
        fires |= firing_here
        quiet |= tested_here - firing_here
        for case in group.get("promql_expr_test", []):
            if re.fullmatch(r"engagement:[a-z0-9_:]+", case["expr"]) and case["exp_samples"]:
                checked.add(case["expr"])

    assert fires | quiet <= alerts, f"tests of no rule: {sorted((fires | quiet) - alerts)}"
    assert checked <= records, f"checks of no rule: {sorted(checked - records)}"
    assert alerts - fires == set(), "no case where these fire"
    assert alerts - quiet == set(), "no case where these stay quiet"
    assert records - checked == set(), "recorded series not checked"

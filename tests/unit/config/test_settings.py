"""pipeline.config (settings, load, checks): defaults, file and environment
precedence, validation, `config check`."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from pipeline.cli import main as cli
from pipeline.config.load import load
from pipeline.config.settings import Settings, SettingsError, ThresholdRule
from pipeline.model.events import KINDS

EXAMPLE = Path(__file__).resolve().parents[3] / "deploy" / "config.example.toml"


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(path: Path | None, env: dict[str, str] | None = None) -> dict[str, str]:
    with pytest.raises(SettingsError) as info:
        load(path, env={} if env is None else env)
    found = dict(info.value.problems)
    assert len(found) == len(info.value.problems), "one problem per path"
    return found


# -- defaults -----------------------------------------------------------------


def test_defaults_without_file_or_environment() -> None:
    s = load(env={})
    assert s == Settings()
    assert s.broker == "kafka://127.0.0.1:9092"
    assert s.bootstrap_servers == "127.0.0.1:9092"
    assert s.web_port == 6066
    assert s.window_sizes_s == (60, 300)
    assert (s.allowed_lateness_s, s.grace_s, s.idle_after_s) == (10, 5, 10)
    assert set(s.weights) == set(KINDS)
    assert s.weights["reply"] == 0.0
    assert s.default_rate_basis == "followers"
    assert s.thresholds == ()
    assert s.max_window_s == 300


def test_default_dedup_horizon_covers_the_largest_window_lateness_and_grace() -> None:
    s = Settings()
    assert s.dedup_horizon_s >= s.max_window_s + s.allowed_lateness_s + s.grace_s


def test_settings_and_rules_are_frozen() -> None:
    s = Settings()
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.broker = "kafka://elsewhere:9092"  # type: ignore[misc]
    rule = ThresholdRule("r", "volume", "above", 1.0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        rule.value = 2.0  # type: ignore[misc]


def test_helpers() -> None:
    s = Settings(
        broker="kafka://a:1,b:2",
        topic_prefix="staging.",
        rate_basis_by_account={"acme": "reach"},
    )
    assert s.bootstrap_servers == "a:1,b:2"
    assert s.topic("social.likes") == "staging.social.likes"
    assert s.rate_basis("acme") == "reach"
    assert s.rate_basis("other") == "followers"
    assert ThresholdRule("r", "volume", "above", 1, accounts=("*",)).applies_to("anyone")
    only = ThresholdRule("r", "volume", "above", 1, accounts=("acme",))
    assert only.applies_to("acme") and not only.applies_to("beta")


# -- file and environment -----------------------------------------------------

FILE = """
broker = "kafka://file-host:9092"
web_port = 7000
topic_prefix = "staging."
session_timeout_s = 5

[windows]
sizes_s = [60, 900]
grace_s = 2

[dedup]
horizon_s = 1200

[weights]
like = 0.5

[rates]
default_basis = "reach"

[rates.by_account]
acme = "impressions"

[metrics]
accounts = ["acme", "beta"]

[[alerts.thresholds]]
name = "mentions"
metric = "count.mention"
op = "above"
value = 10
window_s = 60
"""


def test_file_values_override_defaults(tmp_path: Path) -> None:
    s = load(write(tmp_path, FILE), env={})
    assert s.broker == "kafka://file-host:9092"
    assert s.web_port == 7000
    assert s.topic("x") == "staging.x"
    assert s.session_timeout_s == 5.0 and isinstance(s.session_timeout_s, float)
    assert s.window_sizes_s == (60, 900)
    assert s.grace_s == 2
    assert s.allowed_lateness_s == 10  # untouched keys keep their defaults
    assert s.weights["like"] == 0.5 and s.weights["share"] == 3.0
    assert s.default_rate_basis == "reach"
    assert s.rate_basis("acme") == "impressions"
    assert s.metrics_accounts == ("acme", "beta")
    assert s.dedup_horizon_s == 1200
    assert s.thresholds == (
        ThresholdRule("mentions", "count.mention", "above", 10.0, ("*",), 60, "warning", 900),
    )


def test_environment_wins_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    env = {"ENGAGEMENT_BROKER": "kafka://env-host:9093", "ENGAGEMENT_WEB_PORT": "8080"}
    s = load(path, env=env)
    assert s.broker == "kafka://env-host:9093"
    assert s.bootstrap_servers == "env-host:9093"
    assert s.web_port == 8080 and isinstance(s.web_port, int)
    assert s.grace_s == 2  # the file still supplies what the environment does not


def test_engagement_config_names_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, FILE)
    s = load(env={"ENGAGEMENT_CONFIG": str(path), "ENGAGEMENT_WEB_PORT": "9999"})
    assert s.broker == "kafka://file-host:9092"
    assert s.web_port == 9999


def test_early_alerts_are_on_by_default_and_turned_off_by_file_or_environment(
    tmp_path: Path,
) -> None:
    assert load(env={}).early_alerts is True
    path = write(tmp_path, "[alerts]\nearly = false\n")
    assert load(path, env={}).early_alerts is False
    assert load(path, env={"ENGAGEMENT_EARLY_ALERTS": "true"}).early_alerts is True
    assert load(env={"ENGAGEMENT_EARLY_ALERTS": "false"}).early_alerts is False
    bad = write(tmp_path, "[alerts]\nearly = 1\n")
    assert "alerts.early" in problems_of(bad, {})


def test_environment_alone_without_a_file() -> None:
    s = load(env={"ENGAGEMENT_BROKER": "kafka://k1:9092,k2:9092", "ENGAGEMENT_GRACE_S": "0"})
    assert s.bootstrap_servers == "k1:9092,k2:9092"
    assert s.grace_s == 0


@pytest.mark.parametrize(
    ("var", "value", "path"),
    [
        ("ENGAGEMENT_WEB_PORT", "http", "ENGAGEMENT_WEB_PORT"),
        ("ENGAGEMENT_WEB_PORT", "70000", "web_port"),
        ("ENGAGEMENT_BROKER", "localhost:9092", "broker"),
        ("ENGAGEMENT_BROKER", "kafka://", "broker"),
        ("ENGAGEMENT_PARTITIONS", "0", "partitions"),
        ("ENGAGEMENT_GRACE_S", "-1", "windows.grace_s"),
    ],
)
def test_invalid_environment_values(var: str, value: str, path: str) -> None:
    found = problems_of(None, {var: value})
    assert set(found) == {path}
    assert found[path]


def test_settings_error_lists_every_problem_at_once(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
broker = "http://broker:9092"
colour = "blue"
web_port = "6066"

[windows]
sizes_s = [60, 7]
size = 60

[dedup]
horizon_s = 10

[weights]
like = "heavy"
retweet = 1.0

[rates]
default_basis = "likes"

[[alerts.thresholds]]
name = "bad"
metric = "happiness"
op = "over"
value = 1
severity = "fatal"
colour = "red"

[[alerts.thresholds]]
name = "wrong-size"
metric = "volume"
op = "above"
value = 1
window_s = 120

[[alerts.thresholds]]
name = "no-value"
metric = "volume"
op = "below"
""",
    )
    found = problems_of(path)
    assert set(found) == {
        "broker",
        "colour",
        "web_port",
        "windows.sizes_s",
        "windows.size",
        "dedup.horizon_s",
        "weights.like",
        "weights.retweet",
        "rates.default_basis",
        "alerts.thresholds[0].metric",
        "alerts.thresholds[0].op",
        "alerts.thresholds[0].severity",
        "alerts.thresholds[0].colour",
        "alerts.thresholds.wrong-size.window_s",
        "alerts.thresholds[2].value",
    }
    assert "unknown key" in found["colour"]
    assert "unknown key" in found["windows.size"]
    assert "unknown key" in found["alerts.thresholds[0].colour"]
    assert "kafka://" in found["broker"]
    assert "int" in found["web_port"] and "str" in found["web_port"]
    assert "86400" in found["windows.sizes_s"]
    assert "required" in found["alerts.thresholds[2].value"]
    for reason in ("above", "below"):
        assert reason in found["alerts.thresholds[0].op"]
    assert "critical" in found["alerts.thresholds[0].severity"]
    assert "count.<kind>" in found["alerts.thresholds[0].metric"]


def test_settings_error_message_names_every_path(tmp_path: Path) -> None:
    path = write(tmp_path, 'colour = 1\nbroker = "nope"\n')
    with pytest.raises(SettingsError) as info:
        load(path, env={})
    assert isinstance(info.value, ValueError)
    assert "colour" in str(info.value) and "broker" in str(info.value)


@pytest.mark.parametrize(
    ("toml", "path"),
    [
        ('[windows]\nsizes_s = ["60"]\n', "windows.sizes_s"),  # strings where ints belong
        ("[windows]\nsizes_s = [60, 60]\n", "windows.sizes_s"),  # would count events twice
        ("[windows]\nsizes_s = []\n", "windows.sizes_s"),
        ("[windows]\nsizes_s = [0]\n", "windows.sizes_s"),
        ("[windows]\nsizes_s = 60\n", "windows.sizes_s"),
        ("[metrics]\naccounts = [1, 2]\n", "metrics.accounts"),
        ("[metrics]\ntop_accounts = -1\n", "metrics.top_accounts"),
        ("[dedup]\nmax_ids_per_partition = 0\n", "dedup.max_ids_per_partition"),
        ("[limits]\nmax_message_bytes = 0\n", "limits.max_message_bytes"),
        ("partitions = true\n", "partitions"),
        ("partitions = 2000\n", "partitions"),
        ("web_port = -1\n", "web_port"),
        ('session_timeout_s = "10"\n', "session_timeout_s"),
        ("windows = 3\n", "windows"),
        ("[ingest]\nbatch_max = 0\n", "ingest.batch_max"),
        ("[weights]\nlike = true\n", "weights.like"),
        ('[rates.by_account]\nacme = "clicks"\n', "rates.by_account.acme"),
        ('[rates]\nby_account = "acme"\n', "rates.by_account"),
        ("[alerts]\nthresholds = 1\n", "alerts.thresholds"),
        ("[alerts]\nrules = []\n", "alerts.rules"),
        (
            "[[alerts.thresholds]]\nname='r'\nmetric='count.retweet'\nop='above'\nvalue=1\n",
            "alerts.thresholds[0].metric",
        ),
        (
            "[[alerts.thresholds]]\nname='r'\nmetric='volume'\nop='above'\nvalue=true\n",
            "alerts.thresholds[0].value",
        ),
        (
            "[[alerts.thresholds]]\nname='r'\nmetric='volume'\nop='above'\nvalue=1\n"
            "accounts='acme'\n",
            "alerts.thresholds[0].accounts",
        ),
        (
            "[[alerts.thresholds]]\nname='r'\nmetric='volume'\nop='above'\nvalue=1\n"
            "cooldown_s=-5\n",
            "alerts.thresholds[0].cooldown_s",
        ),
    ],
)
def test_each_invalid_value_is_reported_with_its_path(tmp_path: Path, toml: str, path: str) -> None:
    found = problems_of(write(tmp_path, toml))
    assert path in found
    assert found[path]


def test_any_divisor_of_a_day_is_a_valid_window_size(tmp_path: Path) -> None:
    path = write(tmp_path, "[windows]\nsizes_s = [45, 7200, 86400]\n[dedup]\nhorizon_s = 90000\n")
    s = load(path, env={})
    assert s.window_sizes_s == (45, 7200, 86400)
    assert s.max_window_s == 86400


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    missing = tmp_path / "absent.toml"
    assert problems_of(missing) == {str(missing): "file not found"}
    broken = write(tmp_path, "broker = \n")
    found = problems_of(broken)
    assert list(found) == [str(broken)]
    assert "TOML" in found[str(broken)]


def test_the_example_config_loads() -> None:
    s = load(EXAMPLE, env={})
    assert s.broker.startswith("kafka://")
    assert s.window_sizes_s == (60, 300)
    assert s.rate_basis("acme") == "impressions"
    assert s.metrics_accounts == ("acme",)
    assert [r.name for r in s.thresholds] == ["acme-rate-high", "any-account-silent"]
    assert all(r.window_s in s.window_sizes_s for r in s.thresholds)


# -- engagement config check --------------------------------------------------


@pytest.mark.usefixtures("no_signal_handlers")
def test_config_check_reports_each_problem_as_file_path_reason(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(
        tmp_path,
        'broker = "localhost"\ncolour = 1\n[windows]\nsizes_s = [60, 7]\n'
        "[[alerts.thresholds]]\nname='r'\nmetric='mood'\nop='above'\nvalue=1\n",
    )
    assert cli.main(["config", "check", str(path)]) == 1
    lines = capsys.readouterr().out.splitlines()
    parsed = [line.split(": ", 2) for line in lines]
    assert all(len(p) == 3 and p[0] == str(path) and p[2] for p in parsed), lines
    assert {p[1] for p in parsed} == {
        "broker",
        "colour",
        "windows.sizes_s",
        "alerts.thresholds[0].metric",
    }


@pytest.mark.usefixtures("no_signal_handlers")
def test_config_check_accepts_a_good_file_whatever_the_environment(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ENGAGEMENT_BROKER", "not-a-url")
    assert cli.main(["config", "check", str(EXAMPLE)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == f"{EXAMPLE}: ok"
    assert "  broker = 'kafka://localhost:9092'" in lines  # the file's, not the environment's
    good = write(tmp_path, FILE)
    assert cli.main(["config", "check", str(good)]) == 0


@pytest.mark.usefixtures("no_signal_handlers")
def test_config_check_on_a_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "nope.toml"
    assert cli.main(["config", "check", str(missing)]) == 1
    assert capsys.readouterr().out.strip() == f"{missing}: {missing}: file not found"


# -- [alertmanager]: the bridge's settings ------------------------------------------


def test_alertmanager_defaults() -> None:
    s = load(env={})
    assert s.alertmanager_urls == ("http://127.0.0.1:9093",)
    assert s.alertmanager_resolve_timeout_s == 3600
    assert s.alertmanager_group == "engagement-alertmanager-bridge"
    assert load(env={"ENGAGEMENT_APP_ID": "prod"}).alertmanager_group == (
        "prod-alertmanager-bridge"
    )


def test_alertmanager_from_the_environment() -> None:
    s = load(
        env={
            "ENGAGEMENT_ALERTMANAGER_URL": "http://am-0:9093, http://am-1:9093/prefix",
            "ENGAGEMENT_ALERTMANAGER_RESOLVE_TIMEOUT_S": "900",
            "ENGAGEMENT_ALERTMANAGER_GROUP_ID": "bridges",
            "ENGAGEMENT_ALERTMANAGER_BATCH_MAX": "50",
            "ENGAGEMENT_ALERTMANAGER_TIMEOUT_S": "2.5",
            "ENGAGEMENT_ALERTMANAGER_BACKOFF_MAX_S": "5",
            "ENGAGEMENT_ALERTMANAGER_WEB_PORT": "0",
        }
    )
    assert s.alertmanager_urls == ("http://am-0:9093", "http://am-1:9093/prefix")
    assert (s.alertmanager_resolve_timeout_s, s.alertmanager_group) == (900, "bridges")
    assert (s.alertmanager_batch_max, s.alertmanager_timeout_s) == (50, 2.5)
    assert (s.alertmanager_backoff_max_s, s.alertmanager_web_port) == (5.0, 0)


def test_alertmanager_from_the_file(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[alertmanager]\nurls = ["https://am.example:443"]\nresolve_timeout_s = 120\n'
        'group_id = "g"\nbatch_max = 10\n',
        encoding="utf-8",
    )
    s = load(f, env={})
    assert s.alertmanager_urls == ("https://am.example:443",)
    assert (s.alertmanager_resolve_timeout_s, s.alertmanager_group) == (120, "g")
    assert s.alertmanager_batch_max == 10


def test_alertmanager_problems_are_all_reported(tmp_path: Path) -> None:
    f = tmp_path / "c.toml"
    f.write_text(
        '[alertmanager]\nurls = ["ftp://x", "http://ok:9093"]\nresolve_timeout_s = 0\n'
        "batch_max = 0\ntimeout_s = 0\nbackoff_max_s = -1\nweb_port = 70000\nsurprise = 1\n",
        encoding="utf-8",
    )
    with pytest.raises(SettingsError) as exc:
        load(f, env={})
    paths = [p for p, _ in exc.value.problems]
    assert paths == [
        "alertmanager.surprise",
        "alertmanager.urls",
        "alertmanager.resolve_timeout_s",
        "alertmanager.batch_max",
        "alertmanager.timeout_s",
        "alertmanager.backoff_max_s",
        "alertmanager.web_port",
    ]
    with pytest.raises(SettingsError) as exc:
        load(env={"ENGAGEMENT_ALERTMANAGER_URL": " , "})
    assert exc.value.problems == [("alertmanager.urls", "at least one Alertmanager URL is needed")]

"""One frozen settings object and the vocabulary of its values (`config.load` reads
it from a TOML file and ENGAGEMENT_* variables; `config.checks` checks it).
Every setting that has an environment variable names it beside its field.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from pipeline.detection.settings import DetectionSettings
from pipeline.responses.settings import ResponseSettings

RATE_BASES = ("followers", "reach", "impressions")
ALERT_METRICS = ("engagement_rate", "weighted_engagement", "volume", "unique_actors")
SEVERITIES = ("info", "warning", "critical")
SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
SASL_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
PROCESSING_GUARANTEES = ("at_least_once", "exactly_once")


class SettingsError(ValueError):
    """Every problem found in a configuration, each as (path, reason)."""

    def __init__(self, problems: list[tuple[str, str]]) -> None:
        self.problems = problems
        super().__init__("; ".join(f"{p}: {r}" for p, r in problems))


class Secret:
    """A password: its repr and str are masked, so printing the settings, an error or a
    log line never shows it. `reveal()` gives the value to the one place that needs it.
    (Deliberately not a dataclass: `dataclasses.asdict` would copy the value out.)"""

    __slots__ = ("_value",)

    def __init__(self, value: str = "") -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __bool__(self) -> bool:
        return bool(self._value)

    def __str__(self) -> str:
        return "********" if self._value else ""

    def __repr__(self) -> str:
        return f"Secret({str(self)!r})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash((Secret, self._value))


@dataclass(frozen=True, slots=True)
class ThresholdRule:
    name: str
    metric: str  # one of ALERT_METRICS or "count.<kind>"
    op: str  # "above" | "below"
    value: float
    accounts: tuple[str, ...] = ("*",)
    window_s: int = 300
    severity: str = "warning"
    cooldown_s: int = 900

    def applies_to(self, account_id: str) -> bool:
        return "*" in self.accounts or account_id in self.accounts


@dataclass(frozen=True, slots=True)
class Settings:
    broker: str = "kafka://127.0.0.1:9092"  # ENGAGEMENT_BROKER
    topic_prefix: str = ""  # ENGAGEMENT_TOPIC_PREFIX
    partitions: int = 4  # ENGAGEMENT_PARTITIONS: partitions of topics the worker creates
    web_port: int = 6066  # ENGAGEMENT_WEB_PORT
    web_host: str = "127.0.0.1"  # ENGAGEMENT_WEB_HOST
    app_id: str = "engagement"  # ENGAGEMENT_APP_ID: consumer group and changelog prefix
    data_dir: str = ".engagement-data"  # ENGAGEMENT_DATA_DIR
    # Group-join timings: faust's defaults make the first join take ~30 s; these
    # make it take seconds while tolerating a member that stalls for 10 s.
    session_timeout_s: float = 10.0  # ENGAGEMENT_SESSION_TIMEOUT_S
    rebalance_timeout_s: float = 10.0  # ENGAGEMENT_REBALANCE_TIMEOUT_S
    heartbeat_interval_s: float = 1.0  # ENGAGEMENT_HEARTBEAT_INTERVAL_S
    commit_interval_s: float = 1.0  # ENGAGEMENT_COMMIT_INTERVAL_S
    # at_least_once; exactly_once is recognised and refused with the reason
    processing_guarantee: str = "at_least_once"  # ENGAGEMENT_PROCESSING_GUARANTEE
    # Broker security ([security] in the file): one of SECURITY_PROTOCOLS.
    security_protocol: str = "PLAINTEXT"  # ENGAGEMENT_SECURITY_PROTOCOL
    # SASL, for SASL_PLAINTEXT and SASL_SSL: mechanism one of SASL_MECHANISMS.
    sasl_mechanism: str = ""  # ENGAGEMENT_SASL_MECHANISM
    sasl_username: str = ""  # ENGAGEMENT_SASL_USERNAME
    sasl_password: Secret = field(default_factory=Secret)  # ENGAGEMENT_SASL_PASSWORD
    # TLS, for SSL and SASL_SSL: CA bundle (default: the system's CAs), and the
    # client's certificate and key for mutual TLS (PEM files).
    ssl_cafile: str = ""  # ENGAGEMENT_SSL_CAFILE
    ssl_certfile: str = ""  # ENGAGEMENT_SSL_CERTFILE
    ssl_keyfile: str = ""  # ENGAGEMENT_SSL_KEYFILE
    # ENGAGEMENT_SSL_KEY_PASSWORD: if the key is encrypted
    ssl_key_password: Secret = field(default_factory=Secret)
    ssl_check_hostname: bool = True  # ENGAGEMENT_SSL_CHECK_HOSTNAME: true | false
    # Windows, in event time
    window_sizes_s: tuple[int, ...] = (60, 300)
    allowed_lateness_s: int = 10
    grace_s: int = 5
    idle_after_s: int = 10
    # Ingest batching: the router forwards at most this many events per batch
    batch_max: int = 1000
    batch_within_s: float = 0.05
    # How often the router reports input-partition progress to the aggregator
    progress_interval_s: float = 0.2
    # How long an input partition's last progress report holds the watermark after
    # its router stops reporting: longer than a rebalance after a worker dies.
    progress_stale_s: float = 40.0
    weights: Mapping[str, float] = field(
        default_factory=lambda: {
            "like": 1.0,
            "comment": 2.0,
            "share": 3.0,
            "mention": 2.0,
            "dm": 1.0,
            "reply": 0.0,
        }
    )
    default_rate_basis: str = "followers"
    rate_basis_by_account: Mapping[str, str] = field(default_factory=dict)
    metrics_accounts: tuple[str, ...] = ()
    # Channels with their own metric label; any other channel is reported as "other".
    metrics_channels: tuple[str, ...] = (
        "instagram",
        "facebook",
        "x",
        "linkedin",
        "tiktok",
        "youtube",
        "threads",
        "reddit",
    )
    metrics_top_accounts: int = 20
    dedup_horizon_s: int = 600
    dedup_max_ids: int = 2_000_000
    max_message_bytes: int = 65536
    # Events further ahead of the wall clock are rejected (future_ts): one bad clock
    # must not move a watermark, and so close windows, ahead of real time.
    max_future_s: int = 300
    thresholds: tuple[ThresholdRule, ...] = ()
    # Alerts that can only become more true as their window fills are published as
    # soon as they are certain, not at the close (pipeline.windows.early)
    early_alerts: bool = True  # ENGAGEMENT_EARLY_ALERTS; [alerts] early
    # [responses] and [calendars.NAME]: pairing, SLAs, business hours
    responses: ResponseSettings = field(default_factory=ResponseSettings)
    # [detection]: spike/drop detectors (defaults, per-account overrides, competitors)
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    # [alertmanager]: `engagement alertmanager-bridge`, engagement.alerts to Alertmanager.
    # Base URLs (a path prefix allowed); every alert goes to each, as to the members of
    # an HA cluster.  ENGAGEMENT_ALERTMANAGER_URL: comma-separated; [alertmanager] urls
    alertmanager_urls: tuple[str, ...] = ("http://127.0.0.1:9093",)
    # endsAt = emitted_at + this: an alert.v1 record is an event, so it resolves by itself
    alertmanager_resolve_timeout_s: int = 3600  # ENGAGEMENT_ALERTMANAGER_RESOLVE_TIMEOUT_S
    # consumer group of the bridges; "" means "<app_id>-alertmanager-bridge"
    alertmanager_group_id: str = ""  # ENGAGEMENT_ALERTMANAGER_GROUP_ID
    alertmanager_batch_max: int = 500  # ENGAGEMENT_ALERTMANAGER_BATCH_MAX: alerts per POST
    alertmanager_timeout_s: float = 10.0  # ENGAGEMENT_ALERTMANAGER_TIMEOUT_S: per request
    # retries wait exponentially longer, with jitter, up to this
    alertmanager_backoff_max_s: float = 30.0  # ENGAGEMENT_ALERTMANAGER_BACKOFF_MAX_S
    # the bridge's /healthz and /metrics (on web_host); 0: no web server
    alertmanager_web_port: int = 6067  # ENGAGEMENT_ALERTMANAGER_WEB_PORT

    @property
    def bootstrap_servers(self) -> str:
        return self.broker.removeprefix("kafka://")

    def topic(self, name: str) -> str:
        return f"{self.topic_prefix}{name}"

    def rate_basis(self, account_id: str) -> str:
        return self.rate_basis_by_account.get(account_id, self.default_rate_basis)

    @property
    def max_window_s(self) -> int:
        return max(self.window_sizes_s)

    @property
    def alertmanager_group(self) -> str:
        return self.alertmanager_group_id or f"{self.app_id}-alertmanager-bridge"

    @property
    def uses_sasl(self) -> bool:
        return self.security_protocol in ("SASL_PLAINTEXT", "SASL_SSL")

    @property
    def uses_tls(self) -> bool:
        return self.security_protocol in ("SSL", "SASL_SSL")

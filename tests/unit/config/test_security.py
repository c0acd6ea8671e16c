"""Broker security settings: parsing, validation, masking, and the client configurations
built from them (pipeline.config: settings, load, checks, security; pipeline.cli.login)."""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import shutil
import socket
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from faust.transport.drivers.aiokafka import credentials_to_aiokafka_auth

from agents.app import faust_credentials
from pipeline.cli import broker, login
from pipeline.cli import main as cli
from pipeline.config import security
from pipeline.config.load import load
from pipeline.config.settings import Secret, Settings, SettingsError
from tests.unit.config.test_settings import problems_of, write

PASSWORD = "Pw-4d1e-never-shown"
KEY_PASSWORD = "KeyPw-90ab-never-shown"


SASL_ENV = {
    "ENGAGEMENT_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
    "ENGAGEMENT_SASL_MECHANISM": "SCRAM-SHA-256",
    "ENGAGEMENT_SASL_USERNAME": "svc-engagement",
    "ENGAGEMENT_SASL_PASSWORD": PASSWORD,
}


def sasl(**kw: object) -> Settings:
    values: dict[str, object] = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "PLAIN",
        "sasl_username": "svc",
        "sasl_password": Secret(PASSWORD),
    }
    return Settings(**{**values, **kw})  # type: ignore[arg-type]


# -- TLS material: a throwaway CA and a client certificate with an encrypted key ------


@dataclasses.dataclass
class Pki:
    ca: Path
    cert: Path
    key: Path  # encrypted with KEY_PASSWORD


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    if not shutil.which("openssl"):
        pytest.skip("needs the `openssl` command to make a throwaway certificate")
    d = tmp_path_factory.mktemp("pki")

    def run(*args: str) -> None:
        subprocess.run(["openssl", *args], cwd=d, check=True, capture_output=True, timeout=60)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key", "-out", "ca.pem",
        "-days", "2", "-subj", "/CN=engagement-test-ca")  # fmt: skip
    run("genrsa", "-aes256", "-passout", f"pass:{KEY_PASSWORD}", "-out", "client.key", "2048")
    run("req", "-new", "-key", "client.key", "-passin", f"pass:{KEY_PASSWORD}",
        "-subj", "/CN=engagement-client", "-out", "client.csr")  # fmt: skip
    run("x509", "-req", "-in", "client.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-out", "client.pem")  # fmt: skip
    return Pki(d / "ca.pem", d / "client.pem", d / "client.key")


# -- Secret -----------------------------------------------------------------------------


def test_a_secret_never_shows_its_value() -> None:
    secret = Secret(PASSWORD)
    assert secret.reveal() == PASSWORD
    for shown in (str(secret), repr(secret), f"{secret}", f"{secret!r}"):
        assert PASSWORD not in shown
    assert str(secret) == "********" and repr(secret) == "Secret('********')"
    assert secret and not Secret() and str(Secret()) == ""
    assert secret == Secret(PASSWORD) and secret != Secret("other") and secret != PASSWORD
    assert hash(secret) == hash(Secret(PASSWORD))


def test_settings_never_show_the_passwords() -> None:
    s = sasl(ssl_key_password=Secret(KEY_PASSWORD))
    for shown in (repr(s), str(s), repr(dataclasses.asdict(s)), str(dataclasses.astuple(s))):
        assert PASSWORD not in shown and KEY_PASSWORD not in shown
    assert "sasl_password=Secret('********')" in repr(s)


# -- environment and file ---------------------------------------------------------------


def test_defaults_are_plaintext_and_at_least_once() -> None:
    s = load(env={})
    assert s.security_protocol == "PLAINTEXT" and not s.uses_sasl and not s.uses_tls
    assert (s.sasl_mechanism, s.sasl_username, s.sasl_password) == ("", "", Secret())
    assert (s.ssl_cafile, s.ssl_certfile, s.ssl_keyfile) == ("", "", "")
    assert s.ssl_check_hostname is True
    assert s.processing_guarantee == "at_least_once"


def test_sasl_from_the_environment() -> None:
    s = load(env={**SASL_ENV, "ENGAGEMENT_PROCESSING_GUARANTEE": "at_least_once"})
    assert s.security_protocol == "SASL_PLAINTEXT" and s.uses_sasl and not s.uses_tls
    assert s.sasl_mechanism == "SCRAM-SHA-256"
    assert s.sasl_username == "svc-engagement"
    assert isinstance(s.sasl_password, Secret) and s.sasl_password.reveal() == PASSWORD
    assert s.processing_guarantee == "at_least_once"


def test_tls_from_the_environment(pki: Pki) -> None:
    env = {
        "ENGAGEMENT_SECURITY_PROTOCOL": "SASL_SSL",
        **{k: v for k, v in SASL_ENV.items() if k != "ENGAGEMENT_SECURITY_PROTOCOL"},
        "ENGAGEMENT_SSL_CAFILE": str(pki.ca),
        "ENGAGEMENT_SSL_CERTFILE": str(pki.cert),
        "ENGAGEMENT_SSL_KEYFILE": str(pki.key),
        "ENGAGEMENT_SSL_KEY_PASSWORD": KEY_PASSWORD,
        "ENGAGEMENT_SSL_CHECK_HOSTNAME": "false",
    }
    s = load(env=env)
    assert s.uses_sasl and s.uses_tls
    files = (s.ssl_cafile, s.ssl_certfile, s.ssl_keyfile)
    assert files == (str(pki.ca), str(pki.cert), str(pki.key))
    assert s.ssl_key_password.reveal() == KEY_PASSWORD
    assert s.ssl_check_hostname is False


@pytest.mark.parametrize(
    ("text", "value"),
    [("true", True), ("1", True), ("Yes", True), ("on", True), ("FALSE", False), ("0", False),
     ("no", False), (" off ", False)],
)  # fmt: skip
def test_check_hostname_flag_values(text: str, value: bool) -> None:
    env = {"ENGAGEMENT_SECURITY_PROTOCOL": "SSL", "ENGAGEMENT_SSL_CHECK_HOSTNAME": text}
    assert load(env=env).ssl_check_hostname is value


def test_a_flag_that_is_not_a_flag() -> None:
    found = problems_of(None, {"ENGAGEMENT_SSL_CHECK_HOSTNAME": "maybe"})
    assert found == {"ENGAGEMENT_SSL_CHECK_HOSTNAME": "must be true or false"}


SECURITY_FILE = f"""
broker = "kafka://k1:9093"
processing_guarantee = "at_least_once"

[security]
protocol = "SASL_PLAINTEXT"
sasl_mechanism = "SCRAM-SHA-512"
sasl_username = "file-user"
sasl_password = "{PASSWORD}"
ssl_check_hostname = false
"""


def test_security_from_the_file(tmp_path: Path) -> None:
    s = load(write(tmp_path, SECURITY_FILE), env={})
    assert s.security_protocol == "SASL_PLAINTEXT"
    assert s.sasl_mechanism == "SCRAM-SHA-512"
    assert s.sasl_username == "file-user"
    assert s.sasl_password == Secret(PASSWORD)
    assert s.ssl_check_hostname is False
    assert s.processing_guarantee == "at_least_once"


def test_the_environment_wins_over_the_file(tmp_path: Path) -> None:
    env = {"ENGAGEMENT_SASL_PASSWORD": "from-env", "ENGAGEMENT_SASL_MECHANISM": "PLAIN"}
    s = load(write(tmp_path, SECURITY_FILE), env=env)
    assert s.sasl_password.reveal() == "from-env"
    assert s.sasl_mechanism == "PLAIN"
    assert s.sasl_username == "file-user"


def test_a_password_of_the_wrong_type_is_reported_without_its_value(tmp_path: Path) -> None:
    path = write(tmp_path, '[security]\nprotocol = "SASL_SSL"\nsasl_password = 123456789\n')
    found = problems_of(path)
    assert found["security.sasl_password"] == "must be str, got int"
    assert "123456789" not in str(found)


def test_unknown_security_keys_are_reported(tmp_path: Path) -> None:
    found = problems_of(write(tmp_path, '[security]\nsasl_pasword = "x"\n'))
    assert found == {"security.sasl_pasword": "unknown key"}
    assert "must be a table" in problems_of(write(tmp_path, 'security = "SASL_SSL"\n'))["security"]


# -- validation -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "path", "words"),
    [
        ({"ENGAGEMENT_SECURITY_PROTOCOL": "TLS"}, "security.protocol", "SASL_SSL"),
        ({"ENGAGEMENT_SECURITY_PROTOCOL": "sasl_ssl"}, "security.protocol", "SASL_PLAINTEXT"),
        ({**SASL_ENV, "ENGAGEMENT_SASL_MECHANISM": "GSSAPI"}, "security.sasl_mechanism",
         "SCRAM-SHA-512"),
        ({**SASL_ENV, "ENGAGEMENT_SASL_MECHANISM": ""}, "security.sasl_mechanism", "required"),
        ({**SASL_ENV, "ENGAGEMENT_SASL_USERNAME": ""}, "security.sasl_username", "required"),
        ({**SASL_ENV, "ENGAGEMENT_SASL_PASSWORD": ""}, "security.sasl_password", "required"),
        ({"ENGAGEMENT_SASL_USERNAME": "svc"}, "security.sasl_username", "does not use SASL"),
        ({"ENGAGEMENT_SECURITY_PROTOCOL": "SSL", "ENGAGEMENT_SASL_PASSWORD": "x"},
         "security.sasl_password", "does not use SASL"),
        ({"ENGAGEMENT_SSL_CAFILE": "/etc/hostname"}, "security.ssl_cafile", "does not use TLS"),
        ({"ENGAGEMENT_SECURITY_PROTOCOL": "SSL", "ENGAGEMENT_SSL_CAFILE": "/no/such/ca.pem"},
         "security.ssl_cafile", "no such file: /no/such/ca.pem"),
        ({"ENGAGEMENT_PROCESSING_GUARANTEE": "exactly-once"}, "processing_guarantee",
         "at_least_once, exactly_once"),
        ({"ENGAGEMENT_PROCESSING_GUARANTEE": "exactly_once"}, "processing_guarantee",
         "exactly_once is not supported"),
    ],
)  # fmt: skip
def test_each_invalid_security_setting_is_reported(
    env: dict[str, str], path: str, words: str
) -> None:
    found = problems_of(None, env)
    assert set(found) == {path}, found
    assert words in found[path]


def test_sasl_without_any_credentials_lists_all_three() -> None:
    found = problems_of(None, {"ENGAGEMENT_SECURITY_PROTOCOL": "SASL_SSL"})
    assert set(found) == {
        "security.sasl_mechanism",
        "security.sasl_username",
        "security.sasl_password",
    }
    assert all("required with security.protocol SASL_SSL" in r for r in found.values())


def test_client_certificate_and_key_go_together(pki: Pki) -> None:
    tls = {"ENGAGEMENT_SECURITY_PROTOCOL": "SSL"}
    cert_only = problems_of(None, {**tls, "ENGAGEMENT_SSL_CERTFILE": str(pki.cert)})
    assert set(cert_only) == {"security.ssl_keyfile"}
    assert "required with ssl_certfile" in cert_only["security.ssl_keyfile"]
    key_only = problems_of(None, {**tls, "ENGAGEMENT_SSL_KEYFILE": str(pki.key)})
    assert key_only == {"security.ssl_certfile": "required with ssl_keyfile"}
    pw_only = problems_of(None, {**tls, "ENGAGEMENT_SSL_KEY_PASSWORD": KEY_PASSWORD})
    assert pw_only == {"security.ssl_key_password": "set, but there is no ssl_keyfile"}


def test_errors_never_show_a_password(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        f'[security]\nprotocol = "SASL_SSL"\nsasl_password = "{PASSWORD}"\n'
        f'ssl_key_password = "{KEY_PASSWORD}"\n',
    )
    env = {"ENGAGEMENT_SSL_KEY_PASSWORD": KEY_PASSWORD, "ENGAGEMENT_WEB_PORT": PASSWORD}
    with pytest.raises(SettingsError) as info:
        load(path, env=env)
    assert set(dict(info.value.problems)) == {
        "security.sasl_mechanism",
        "security.sasl_username",
        "security.ssl_key_password",
        "ENGAGEMENT_WEB_PORT",
    }
    shown = f"{info.value} {info.value!r} {info.value.problems}"
    assert PASSWORD not in shown and KEY_PASSWORD not in shown


# -- engagement config check ------------------------------------------------------------


@pytest.mark.usefixtures("no_signal_handlers")
def test_config_check_prints_the_settings_with_passwords_masked(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, SECURITY_FILE)
    assert cli.main(["config", "check", str(path)]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[0] == f"{path}: ok"
    assert "  security_protocol = 'SASL_PLAINTEXT'" in lines
    assert "  sasl_username = 'file-user'" in lines
    assert "  sasl_password = Secret('********')" in lines
    assert "  processing_guarantee = 'at_least_once'" in lines
    assert PASSWORD not in out
    names = {line.split(" = ")[0].strip() for line in lines[1:]}
    assert names == {f.name for f in dataclasses.fields(Settings)}


@pytest.mark.usefixtures("no_signal_handlers")
def test_config_check_reports_a_wrong_key_password(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], pki: Pki
) -> None:
    path = write(
        tmp_path,
        f'[security]\nprotocol = "SSL"\nssl_cafile = "{pki.ca}"\nssl_certfile = "{pki.cert}"\n'
        f'ssl_keyfile = "{pki.key}"\nssl_key_password = "not-{KEY_PASSWORD}"\n',
    )
    assert cli.main(["config", "check", str(path)]) == 1
    out = capsys.readouterr().out
    assert out.startswith(f"{path}: security.ssl_certfile: could not load")
    assert KEY_PASSWORD not in out


# -- client configurations --------------------------------------------------------------


def test_plaintext_configs() -> None:
    s = Settings()
    assert security.kafka_python_config(s) == {"security_protocol": "PLAINTEXT"}
    assert security.aiokafka_config(s) == {"security_protocol": "PLAINTEXT"}
    assert faust_credentials(s) is None
    assert security.ssl_context(s) is None


@pytest.mark.parametrize("mechanism", ["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"])
def test_sasl_plaintext_configs(mechanism: str) -> None:
    s = sasl(sasl_mechanism=mechanism)
    expected = {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": mechanism,
        "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD,
    }
    assert security.kafka_python_config(s) == expected
    assert security.aiokafka_config(s) == expected
    creds = faust_credentials(s)
    assert PASSWORD not in repr(creds)
    # What faust hands to aiokafka: the same keys, with no TLS context.
    assert dict(credentials_to_aiokafka_auth(creds)) == {**expected, "ssl_context": None}


def test_sasl_ssl_configs(pki: Pki) -> None:
    s = sasl(
        security_protocol="SASL_SSL",
        sasl_mechanism="SCRAM-SHA-512",
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.key),
        ssl_key_password=Secret(KEY_PASSWORD),
    )
    assert security.kafka_python_config(s) == {
        "security_protocol": "SASL_SSL",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "svc",
        "sasl_plain_password": PASSWORD,
        "ssl_check_hostname": True,
        "ssl_cafile": str(pki.ca),
        "ssl_certfile": str(pki.cert),
        "ssl_keyfile": str(pki.key),
        "ssl_password": KEY_PASSWORD,
    }
    aio = security.aiokafka_config(s)
    assert aio["security_protocol"] == "SASL_SSL" and aio["sasl_mechanism"] == "SCRAM-SHA-512"
    assert isinstance(aio["ssl_context"], ssl.SSLContext)
    auth = dict(credentials_to_aiokafka_auth(faust_credentials(s)))
    assert auth["security_protocol"] == "SASL_SSL"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-512"
    assert auth["sasl_plain_password"] == PASSWORD
    assert isinstance(auth["ssl_context"], ssl.SSLContext)


def test_ssl_configs_without_client_certificate(pki: Pki) -> None:
    s = Settings(security_protocol="SSL", ssl_cafile=str(pki.ca), ssl_check_hostname=False)
    assert security.kafka_python_config(s) == {
        "security_protocol": "SSL",
        "ssl_check_hostname": False,
        "ssl_cafile": str(pki.ca),
    }
    auth = dict(credentials_to_aiokafka_auth(faust_credentials(s)))
    assert auth["security_protocol"] == "SSL"
    assert auth["ssl_context"].check_hostname is False


def test_the_ssl_context_loads_the_ca_and_the_client_certificate(pki: Pki) -> None:
    s = Settings(
        security_protocol="SSL",
        ssl_cafile=str(pki.ca),
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.key),
        ssl_key_password=Secret(KEY_PASSWORD),
    )
    context = security.ssl_context(s)
    assert context is not None
    subjects = [dict(rdn[0] for rdn in c["subject"]) for c in context.get_ca_certs()]
    assert {"commonName": "engagement-test-ca"} in subjects
    assert context.verify_mode == ssl.CERT_REQUIRED and context.check_hostname is True
    loose = security.ssl_context(dataclasses.replace(s, ssl_check_hostname=False))
    assert loose is not None
    assert loose.check_hostname is False and loose.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize("key_password", ["wrong", ""], ids=["wrong", "missing"])
def test_a_wrong_or_missing_key_password_is_a_settings_error(pki: Pki, key_password: str) -> None:
    s = Settings(
        security_protocol="SSL",
        ssl_certfile=str(pki.cert),
        ssl_keyfile=str(pki.key),
        ssl_key_password=Secret(key_password),
    )
    # A missing password fails instead of OpenSSL prompting on the terminal.
    with pytest.raises(SettingsError) as info:
        security.ssl_context(s)
    assert [p for p, _ in info.value.problems] == ["security.ssl_certfile"]


def test_a_ca_file_that_is_not_pem_is_a_settings_error(tmp_path: Path) -> None:
    bogus = write(tmp_path, "not a certificate\n", "ca.pem")
    with pytest.raises(SettingsError) as info:
        security.ssl_context(Settings(security_protocol="SSL", ssl_cafile=str(bogus)))
    assert [p for p, _ in info.value.problems] == ["security.ssl_cafile"]


def test_describe_names_the_user_not_the_password() -> None:
    assert security.describe(Settings()) == "PLAINTEXT"
    text = security.describe(sasl(sasl_mechanism="SCRAM-SHA-256"))
    assert text == "SASL_PLAINTEXT, SASL SCRAM-SHA-256 as 'svc'"


def test_the_faust_app_gets_the_credentials_and_the_guarantee() -> None:
    from faust.types.enums import ProcessingGuarantee

    from agents.app import create_app

    rt = create_app(sasl(sasl_mechanism="SCRAM-SHA-256"))
    conf = rt.app.conf
    auth = dict(credentials_to_aiokafka_auth(conf.broker_credentials, conf.ssl_context))
    assert auth["security_protocol"] == "SASL_PLAINTEXT"
    assert auth["sasl_mechanism"] == "SCRAM-SHA-256"
    assert PASSWORD not in repr(conf.broker_credentials)
    plain = create_app(Settings()).app.conf
    assert plain.broker_credentials is None
    assert plain.processing_guarantee == ProcessingGuarantee.AT_LEAST_ONCE


# -- logs and the login check -----------------------------------------------------------


@pytest.fixture
def record_factory() -> Iterator[None]:
    saved = logging.getLogRecordFactory()
    try:
        yield
    finally:
        logging.setLogRecordFactory(saved)


@pytest.mark.usefixtures("record_factory")
def test_passwords_are_masked_in_every_log_record(caplog: pytest.LogCaptureFixture) -> None:
    security.redact_logs(sasl(ssl_key_password=Secret(KEY_PASSWORD)))
    log = logging.getLogger("aiokafka.conn")
    with caplog.at_level(logging.DEBUG):
        # As aiokafka's debug log prints a SASL PLAIN request:
        token = b"svc\x00svc\x00" + PASSWORD.encode()
        log.debug("Request %d: SaslAuthenticateRequest(sasl_auth_bytes=%r)", 3, token)
        log.info("key password %s", KEY_PASSWORD)
        log.warning("%d%% done, nothing secret", 100)
    text = caplog.text + " ".join(r.getMessage() for r in caplog.records)
    assert PASSWORD not in text and KEY_PASSWORD not in text
    messages = [r.getMessage() for r in caplog.records]
    assert messages == [
        r"Request 3: SaslAuthenticateRequest(sasl_auth_bytes=b'svc\x00svc\x00********')",
        "key password ********",
        "100% done, nothing secret",
    ]


@pytest.mark.usefixtures("record_factory")
def test_without_passwords_the_log_records_are_untouched() -> None:
    before = logging.getLogRecordFactory()
    security.redact_logs(Settings())
    assert logging.getLogRecordFactory() is before


def test_check_login_leaves_plaintext_and_unreachable_brokers_to_the_clients() -> None:
    login.check_login(Settings())  # PLAINTEXT: nothing to check, no connection
    closed = f"kafka://127.0.0.1:{broker.free_port()}"
    login.check_login(sasl(broker=closed), timeout_s=2)  # refused: the clients retry


@pytest.fixture
def tls_server(pki: Pki) -> Iterator[str]:
    """A TLS socket on 127.0.0.1 (no broker: it completes handshakes, then hangs up),
    whose certificate is signed by the test CA for the name engagement-client."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(pki.cert, pki.key, KEY_PASSWORD)
    listener = socket.create_server(("127.0.0.1", 0))
    listener.settimeout(0.2)
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            with conn, contextlib.suppress(OSError):
                conn.settimeout(5)
                context.wrap_socket(conn, server_side=True).close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"kafka://127.0.0.1:{listener.getsockname()[1]}"
    finally:
        stop.set()
        thread.join(5)
        listener.close()


def test_check_login_names_an_untrusted_certificate(tls_server: str, pki: Pki) -> None:
    system_cas = Settings(broker=tls_server, security_protocol="SSL")
    with pytest.raises(broker.BrokerError, match=r"was not accepted .*ENGAGEMENT_SSL_CAFILE"):
        login.check_login(system_cas, timeout_s=5)
    wrong_name = Settings(broker=tls_server, security_protocol="SSL", ssl_cafile=str(pki.ca))
    with pytest.raises(broker.BrokerError, match=r"mismatch.*CHECK_HOSTNAME=false"):
        login.check_login(wrong_name, timeout_s=5)
    # Trusted, and the host name not checked: the handshake passes; the hang-up after
    # it is a connection problem, left to the clients.
    trusted = dataclasses.replace(wrong_name, ssl_check_hostname=False)
    login.check_login(trusted, timeout_s=5)

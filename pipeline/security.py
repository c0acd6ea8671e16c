"""Broker security (TLS, SASL PLAIN / SCRAM) from the settings, for each Kafka client.

The builders are pure: they turn `Settings` into what kafka-python, aiokafka and
faust take. The dictionaries they return hold the password in clear, as the clients
need it: pass them on, never log them. `check_login` is the one network call here:
one connection and login, so a rejected password is a one-line error before the
worker starts instead of a client retrying in a loop.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable, Iterable
from typing import Any

import faust
from aiokafka import errors as aiokafka_errors
from aiokafka.conn import create_conn
from aiokafka.helpers import create_ssl_context

from pipeline.broker import BrokerError
from pipeline.settings import Settings, SettingsError

MASK = "********"


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context for aiokafka and faust (None without TLS). Unreadable files or a
    wrong key password are a SettingsError on the key at fault."""
    if not s.uses_tls:
        return None
    try:
        context: ssl.SSLContext = create_ssl_context(cafile=s.ssl_cafile or None)
    except (ssl.SSLError, OSError) as exc:
        reason = f"not a readable PEM CA file ({exc})"
        raise SettingsError([("security.ssl_cafile", reason)]) from None
    if s.ssl_certfile:
        # A callable password, so that an encrypted key without ssl_key_password fails
        # instead of OpenSSL prompting on the terminal.
        password: Callable[[], str] = s.ssl_key_password.reveal
        try:
            context.load_cert_chain(s.ssl_certfile, s.ssl_keyfile or None, password)
        except (ssl.SSLError, OSError) as exc:
            reason = f"could not load the certificate and key ({type(exc).__name__})"
            raise SettingsError(
                [("security.ssl_certfile", f"{reason}: is ssl_key_password right?")]
            ) from None
    # After the CA is loaded: check_hostname can be switched off, verification stays on.
    context.check_hostname = s.ssl_check_hostname
    return context


def _sasl(s: Settings) -> dict[str, Any]:
    """SASL keyword arguments, named alike in kafka-python and aiokafka."""
    if not s.uses_sasl:
        return {}
    return {
        "sasl_mechanism": s.sasl_mechanism,
        "sasl_plain_username": s.sasl_username,
        "sasl_plain_password": s.sasl_password.reveal(),
    }


def kafka_python_config(s: Settings) -> dict[str, Any]:
    """Keyword arguments for kafka-python's KafkaProducer, KafkaConsumer and
    KafkaAdminClient."""
    config: dict[str, Any] = {"security_protocol": s.security_protocol}
    config.update(_sasl(s))
    if s.uses_tls:
        config["ssl_check_hostname"] = s.ssl_check_hostname
        files = {
            "ssl_cafile": s.ssl_cafile,
            "ssl_certfile": s.ssl_certfile,
            "ssl_keyfile": s.ssl_keyfile,
        }
        config.update({key: path for key, path in files.items() if path})
        if s.ssl_key_password:
            config["ssl_password"] = s.ssl_key_password.reveal()
    return config


def aiokafka_config(s: Settings) -> dict[str, Any]:
    """Keyword arguments for aiokafka's clients (AIOKafkaProducer, AIOKafkaConsumer,
    AIOKafkaAdminClient): TLS goes in as an `ssl_context`."""
    config: dict[str, Any] = {"security_protocol": s.security_protocol}
    config.update(_sasl(s))
    if s.uses_tls:
        config["ssl_context"] = ssl_context(s)
    return config


def faust_credentials(s: Settings) -> faust.SASLCredentials | faust.SSLCredentials | None:
    """faust.App's `broker_credentials`. faust maps them onto aiokafka
    (`credentials_to_aiokafka_auth`): SASLCredentials becomes security_protocol
    SASL_PLAINTEXT, or SASL_SSL when it carries an ssl_context, with the mechanism
    (PLAIN, SCRAM-SHA-256 and SCRAM-SHA-512 are all in faust's SASLMechanism) and
    username/password; SSLCredentials becomes SSL with its context. Everything these
    settings express maps; SASLCredentials' repr shows the username only."""
    context = ssl_context(s)
    if s.uses_sasl:
        return faust.SASLCredentials(
            username=s.sasl_username,
            password=s.sasl_password.reveal(),
            mechanism=s.sasl_mechanism,
            ssl_context=context,
        )
    if context is not None:
        return faust.SSLCredentials(context)
    return None


def describe(s: Settings) -> str:
    """How the clients connect, for messages: never the password."""
    if s.uses_sasl:
        return f"{s.security_protocol}, SASL {s.sasl_mechanism} as {s.sasl_username!r}"
    return s.security_protocol


# -- logs -----------------------------------------------------------------------


def _needles(secrets: Iterable[str]) -> list[str]:
    """Each secret as it may appear in a log line: as is, and inside a str or bytes
    repr (the clients' debug logs print SASL requests, whose PLAIN token holds it)."""
    found: set[str] = set()
    for secret in secrets:
        if secret:
            found |= {secret, repr(secret)[1:-1], repr(secret.encode())[2:-1]}
    return sorted(found, key=len, reverse=True)


def redact_logs(s: Settings) -> None:
    """Mask the settings' passwords in every log record from now on, whatever logger
    or handler emits it (a record factory, so handlers installed later are covered)."""
    needles = _needles([s.sasl_password.reveal(), s.ssl_key_password.reveal()])
    if not needles:
        return
    make_record = logging.getLogRecordFactory()

    def redacting(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make_record(*args, **kwargs)
        try:
            text = record.getMessage()
        except Exception:  # a malformed call: the handler reports it as usual
            return record
        if any(n in text for n in needles):
            for n in needles:
                text = text.replace(n, MASK)
            record.msg, record.args = text, ()
        return record

    logging.setLogRecordFactory(redacting)


# -- login check ----------------------------------------------------------------


# OpenSSL's X509_V_ERR_HOSTNAME_MISMATCH and X509_V_ERR_IP_ADDRESS_MISMATCH
_NAME_MISMATCH = (62, 64)


async def _login(host: str, port: int, s: Settings, timeout_s: float) -> None:
    conn = await asyncio.wait_for(
        create_conn(
            host,
            port,
            client_id="engagement-login-check",
            request_timeout_ms=int(timeout_s * 1000),
            **aiokafka_config(s),
        ),
        timeout_s,
    )
    conn.close()


def check_login(s: Settings, timeout_s: float = 10.0) -> None:
    """Connect and log in to the first bootstrap server once. A broker that rejects the
    credentials, the mechanism or the TLS handshake is a BrokerError saying what to
    fix; other connection problems are left to the clients' own retries."""
    if s.security_protocol == "PLAINTEXT":
        return
    server = s.bootstrap_servers.split(",")[0]
    host, _, port = server.rpartition(":")
    try:
        asyncio.run(_login(host, int(port), s, timeout_s))
    except (aiokafka_errors.SaslAuthenticationFailed, aiokafka_errors.AuthenticationFailedError):
        raise BrokerError(
            f"the broker at {server} rejected the login ({describe(s)}): check "
            "ENGAGEMENT_SASL_USERNAME, ENGAGEMENT_SASL_PASSWORD and ENGAGEMENT_SASL_MECHANISM"
        ) from None
    except aiokafka_errors.IllegalSaslStateError:
        raise BrokerError(
            f"the broker at {server} does not expect a SASL login there: is it a "
            f"{s.security_protocol} listener? check ENGAGEMENT_BROKER and "
            "ENGAGEMENT_SECURITY_PROTOCOL"
        ) from None
    except aiokafka_errors.UnsupportedSaslMechanismError as exc:
        raise BrokerError(
            f"the broker at {server} does not accept SASL {s.sasl_mechanism} ({exc}): "
            "set ENGAGEMENT_SASL_MECHANISM to one it enables"
        ) from None
    except ssl.SSLCertVerificationError as exc:
        if exc.verify_code in _NAME_MISMATCH:
            fix = "connect by a name it holds, or set ENGAGEMENT_SSL_CHECK_HOSTNAME=false"
        else:
            fix = "set ENGAGEMENT_SSL_CAFILE to the CA that signed it"
        raise BrokerError(
            f"the TLS certificate of {server} was not accepted ({exc.verify_message}): {fix}"
        ) from None
    except ssl.SSLError as exc:
        raise BrokerError(
            f"the TLS handshake with {server} failed ({exc.reason}): is it a TLS listener? "
            "check ENGAGEMENT_SECURITY_PROTOCOL"
        ) from None
    except (OSError, TimeoutError, aiokafka_errors.KafkaError):
        return

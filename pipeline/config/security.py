"""Broker security (TLS, SASL PLAIN / SCRAM) from the settings, for each Kafka client.

The builders are pure: they turn `Settings` into what kafka-python and aiokafka take
(faust's credentials are built from them in `agents.app`). The dictionaries they
return hold the password in clear, as the clients need it: pass them on, never log
them. The login check before start is `pipeline.cli.login`.
"""

from __future__ import annotations

import logging
import ssl
from collections.abc import Callable, Iterable
from typing import Any

from pipeline.config.settings import Settings, SettingsError

MASK = "********"


def ssl_context(s: Settings) -> ssl.SSLContext | None:
    """The TLS context for aiokafka and faust (None without TLS). Unreadable files or a
    wrong key password are a SettingsError on the key at fault."""
    if not s.uses_tls:
        return None
    try:
        # what aiokafka's create_ssl_context does: the default client context
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=s.ssl_cafile or None)
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

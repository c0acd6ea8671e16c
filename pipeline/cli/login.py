"""One login against the broker before a command starts, so that a rejected password,
mechanism or certificate is a one-line error instead of a client retrying in a loop."""

from __future__ import annotations

import asyncio
import ssl

from aiokafka import errors as aiokafka_errors
from aiokafka.conn import create_conn

from pipeline.cli.broker import BrokerError
from pipeline.config.security import aiokafka_config, describe
from pipeline.config.settings import Settings

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

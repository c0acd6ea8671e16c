"""A single-node Apache Kafka 4.x broker in KRaft mode, for the integration suite.

The jars come from Maven Central through `tests/kafka/pom.xml`
(`mvn dependency:copy-dependencies`) and are cached in
`$ENGAGEMENT_KAFKA_CACHE` (default `~/.cache/engagement-pipeline`), so only the
first run downloads anything. Each broker gets free ports, its own data
directory and a log file that the tests print when they fail.
"""

from __future__ import annotations

import base64
import fcntl
import hashlib
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

HERE = Path(__file__).resolve().parent
POM = HERE / "pom.xml"


class KafkaUnavailable(RuntimeError):
    """Java or Maven is missing, or the jars could not be fetched."""


def tools_present() -> bool:
    return bool(shutil.which("java") and shutil.which("mvn"))


def cache_root() -> Path:
    default = Path.home() / ".cache" / "engagement-pipeline"
    return Path(os.environ.get("ENGAGEMENT_KAFKA_CACHE", default))


def jars(timeout_s: float = 600) -> Path:
    """The directory of broker jars, fetched once per pom version (one fetch at a
    time: parallel test processes wait for the first one's)."""
    digest = hashlib.sha256(POM.read_bytes()).hexdigest()[:12]
    libs = cache_root() / f"apache-kafka-{digest}"
    if (libs / ".complete").exists():
        return libs
    if not tools_present():
        raise KafkaUnavailable("Apache Kafka needs `java` and `mvn` on PATH")
    libs.parent.mkdir(parents=True, exist_ok=True)
    with open(libs.with_name(libs.name + ".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (libs / ".complete").exists():
            return libs
        tmp = libs.with_name(libs.name + f".tmp{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        cmd = [
            "mvn", "-q", "-B", "-f", str(POM), "dependency:copy-dependencies",
            f"-DoutputDirectory={tmp}", "-DincludeScope=runtime",
        ]  # fmt: skip
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0:
            raise KafkaUnavailable(f"mvn could not fetch the Kafka jars:\n{done.stdout[-3000:]}")
        (tmp / ".complete").write_text(digest)
        shutil.rmtree(libs, ignore_errors=True)
        tmp.rename(libs)
    return libs


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


def make_certificates(workdir: Path) -> tuple[Path, Path]:
    """A throwaway CA and a server certificate for 127.0.0.1 and localhost, made with
    the `openssl` command. -> (CA certificate, server key+certificate PEM)"""
    ca_key, ca, key, csr, cert = (
        workdir / n for n in ("ca.key", "ca.pem", "server.key", "server.csr", "server.crt")
    )
    ext = workdir / "san.ext"
    ext.write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n", encoding="utf-8")
    steps = [
        ["req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-out", ca,
         "-days", "2", "-subj", "/CN=engagement test CA"],
        ["req", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", csr,
         "-subj", "/CN=127.0.0.1"],
        ["x509", "-req", "-in", csr, "-CA", ca, "-CAkey", ca_key, "-CAcreateserial",
         "-out", cert, "-days", "2", "-extfile", ext],
    ]  # fmt: skip
    for step in steps:
        done = subprocess.run(["openssl", *map(str, step)], capture_output=True, text=True)
        if done.returncode != 0:
            raise KafkaUnavailable(f"openssl failed: {done.stderr[-2000:]}")
    keystore = workdir / "server-keystore.pem"  # Kafka's PEM keystore: key, then chain
    keystore.write_text(key.read_text() + cert.read_text(), encoding="utf-8")
    return ca, keystore


class ApacheKafka:
    """One broker+controller process. `sasl_users` adds a SASL_PLAINTEXT listener
    (PLAIN and SCRAM-SHA-256/512) on `sasl_port`, and with `tls` a SASL_SSL one on
    `tls_port` whose CA certificate is `ca_file`; the PLAINTEXT listener stays for
    admin work and inter-broker traffic."""

    def __init__(
        self, workdir: Path, sasl_users: dict[str, str] | None = None, tls: bool = False
    ) -> None:
        self.workdir = workdir
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.controller_port = free_port()
        self.sasl_users = sasl_users or {}
        self.sasl_port = free_port() if self.sasl_users else 0
        self.tls_port = free_port() if tls and self.sasl_users else 0
        self.ca_file: Path | None = None
        self._keystore: Path | None = None
        if self.tls_port:
            self.ca_file, self._keystore = make_certificates(workdir)
        self.log_path = workdir / "kafka.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._formatted = False

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def sasl_bootstrap(self) -> str:
        return f"127.0.0.1:{self.sasl_port}"

    @property
    def tls_bootstrap(self) -> str:
        return f"127.0.0.1:{self.tls_port}"

    def _properties(self) -> str:
        listeners = [
            f"PLAINTEXT://127.0.0.1:{self.port}",
            f"CONTROLLER://127.0.0.1:{self.controller_port}",
        ]
        advertised = [f"PLAINTEXT://127.0.0.1:{self.port}"]
        protocols = ["PLAINTEXT:PLAINTEXT", "CONTROLLER:PLAINTEXT"]
        lines = []
        sasl = [("SASL_PLAINTEXT", self.sasl_port)] if self.sasl_users else []
        if self.tls_port:
            sasl.append(("SASL_SSL", self.tls_port))
            lines += ["ssl.keystore.type=PEM", f"ssl.keystore.location={self._keystore}"]
        if sasl:
            lines.append("sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256,SCRAM-SHA-512")
        users = " ".join(f'user_{u}="{p}"' for u, p in self.sasl_users.items())
        for name, port in sasl:
            listeners.append(f"{name}://127.0.0.1:{port}")
            advertised.append(f"{name}://127.0.0.1:{port}")
            protocols.append(f"{name}:{name}")
            prefix = f"listener.name.{name.lower()}"
            lines += [
                f"{prefix}.plain.sasl.jaas.config="
                f"org.apache.kafka.common.security.plain.PlainLoginModule required {users};",
                *(
                    f"{prefix}.{mech}.sasl.jaas.config="
                    "org.apache.kafka.common.security.scram.ScramLoginModule required;"
                    for mech in ("scram-sha-256", "scram-sha-512")
                ),
            ]
        lines += [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{self.controller_port}",
            f"listeners={','.join(listeners)}",
            f"advertised.listeners={','.join(advertised)}",
            "controller.listener.names=CONTROLLER",
            f"listener.security.protocol.map={','.join(protocols)}",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={self.workdir / 'data'}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=4",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "transaction.state.log.num.partitions=4",
            # A test's consumer group should not wait 3 s for more members.
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
        ]
        return "\n".join(lines) + "\n"

    def _java(self, main: str, *args: str) -> list[str]:
        return [
            "java", "-Xms256m", "-Xmx768m", "-XX:+UseSerialGC", "-XX:TieredStopAtLevel=1",
            f"-Dlog4j2.configurationFile={HERE / 'log4j2.properties'}",
            "-cp", f"{jars()}/*", main, *args,
        ]  # fmt: skip

    def _format(self) -> None:
        props = self.workdir / "server.properties"
        props.write_text(self._properties(), encoding="utf-8")
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        # `--cluster-id=` form: a base64url id may start with "-", which would be read
        # as an option.
        cmd = self._java(
            "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(props)
        )
        for user, password in self.sasl_users.items():
            for mech in ("SCRAM-SHA-256", "SCRAM-SHA-512"):
                cmd += ["--add-scram", f"{mech}=[name={user},password={password}]"]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        if done.returncode != 0:
            output = (done.stdout + done.stderr)[-3000:]
            raise KafkaUnavailable(f"kafka storage format failed:\n{output}")
        self._formatted = True

    def start(self, timeout_s: float = 60) -> ApacheKafka:
        """Start (or restart, keeping its data) and wait until the broker accepts
        connections."""
        if not self._formatted:
            self._format()
        props = str(self.workdir / "server.properties")
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        self.proc = subprocess.Popen(
            self._java("kafka.Kafka", props),
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise KafkaUnavailable(f"Apache Kafka exited:\n{self.log()}")
            if _listening(self.port) and "Kafka Server started" in self.log():
                return self
            time.sleep(0.1)
        self.stop()
        raise KafkaUnavailable(f"Apache Kafka did not start in {timeout_s} s:\n{self.log()}")

    def stop(self, timeout_s: float = 30) -> None:
        """A clean shutdown (SIGTERM), as an operator's restart would do."""
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def log(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-6000:]
        except FileNotFoundError:
            return ""

"""A single-node KRaft Kafka broker assembled from Maven Central jars, for tests and the demo.

Apache's download site is not reachable here, so the broker's runtime jars are fetched once
with Maven into a cache outside the repository and the broker runs as a plain JVM process.
"""

from __future__ import annotations

import base64
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from laer.local.ports import free_port, port_open

KAFKA_VERSION = "4.3.1"
DEFAULT_PORT = 19092
DEFAULT_PARTITIONS = 4


class LocalServiceError(RuntimeError):
    """A local service (Kafka, Prefect, PostgreSQL) could not be prepared or started."""


def jar_cache_dir() -> Path:
    """Where the broker jars are cached (outside the repository)."""
    base = Path(os.environ.get("LAER_CACHE_DIR", Path.home() / ".cache" / "laer"))
    return base / f"kafka-{KAFKA_VERSION}" / "libs"


def ensure_jars(echo: bool = False) -> Path:
    """Download the Kafka broker jars with Maven unless they are cached already."""
    libs = jar_cache_dir()
    if any(libs.glob("kafka_2.13-*.jar")):
        return libs
    if shutil.which("mvn") is None:
        raise LocalServiceError("Kafka: Maven (mvn) is needed to fetch the broker jars")
    libs.mkdir(parents=True, exist_ok=True)
    pom = resources.files("laer.local").joinpath("kafka-pom.xml")
    with resources.as_file(pom) as pom_path:
        cmd = [
            "mvn", "-B", "-q", "-f", str(pom_path), "dependency:copy-dependencies",
            "-DincludeScope=runtime", f"-DoutputDirectory={libs}",
        ]
        if echo:
            print("fetching Kafka jars:", " ".join(cmd), flush=True)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if done.returncode != 0 or not any(libs.glob("kafka_2.13-*.jar")):
        raise LocalServiceError(
            f"Kafka: fetching the broker jars failed (mvn exit {done.returncode}): "
            f"{(done.stdout + done.stderr)[-2000:]}"
        )
    return libs


def cluster_id(random_uuid: Callable[[], uuid.UUID] = uuid.uuid4) -> str:
    """A cluster id as Kafka's `Uuid.randomUuid()` makes one: URL-safe base64 of a random
    UUID, drawn again while it starts with '-' (the storage tool would read it as an option).
    """
    while True:
        encoded = base64.urlsafe_b64encode(random_uuid().bytes).decode().rstrip("=")
        if not encoded.startswith("-"):
            return encoded


def create_topics(bootstrap: str, topics: Iterable[str], partitions: int) -> None:
    """Create the topics that do not exist yet; return once the broker's metadata shows each
    with a leader for every partition (a consumer assigned at once then sees them all)."""
    from kafka import KafkaAdminClient

    admin = KafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=15000)
    try:
        existing = set(admin.list_topics())
        missing = [t for t in topics if t not in existing]
        if missing:
            admin.create_topics(
                {t: {"num_partitions": partitions, "replication_factor": 1} for t in missing},
                wait_for_metadata=True)
    finally:
        admin.close()


_LOG4J2 = """<?xml version="1.0" encoding="UTF-8"?>
<Configuration status="WARN">
  <Appenders>
    <File name="file" fileName="{log}"><PatternLayout pattern="[%d] %p %m (%c)%n"/></File>
  </Appenders>
  <Loggers><Root level="INFO"><AppenderRef ref="file"/></Root></Loggers>
</Configuration>
"""


@dataclass
class LocalKafka:
    """A broker whose data, config and pid live under `home`."""

    home: Path
    port: int = DEFAULT_PORT
    overrides: dict[str, str] = field(default_factory=dict)  # server.properties to change

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def pid_file(self) -> Path:
        return self.home / "broker.pid"

    @property
    def log_file(self) -> Path:
        return self.home / "broker.log"

    def _write_config(self, controller_port: int) -> Path:
        data = self.home / "data"
        props = {
            "process.roles": "broker,controller",
            "node.id": "1",
            "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
            "listeners": (f"PLAINTEXT://127.0.0.1:{self.port},"
                          f"CONTROLLER://127.0.0.1:{controller_port}"),
            "advertised.listeners": f"PLAINTEXT://127.0.0.1:{self.port}",
            "controller.listener.names": "CONTROLLER",
            "inter.broker.listener.name": "PLAINTEXT",
            "listener.security.protocol.map": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
            "log.dirs": str(data),
            "num.partitions": str(DEFAULT_PARTITIONS),
            "offsets.topic.replication.factor": "1",
            "offsets.topic.num.partitions": "4",
            "transaction.state.log.replication.factor": "1",
            "transaction.state.log.min.isr": "1",
            "share.coordinator.state.topic.replication.factor": "1",
            "share.coordinator.state.topic.min.isr": "1",
            "group.initial.rebalance.delay.ms": "0",
            "auto.create.topics.enable": "false",
            **self.overrides,
        }
        path = self.home / "server.properties"
        path.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
        (self.home / "log4j2.xml").write_text(_LOG4J2.format(log=self.home / "kafka-server.log"))
        return path

    def _java(self, libs: Path, *args: str) -> list[str]:
        java = shutil.which("java")
        if java is None:
            raise LocalServiceError("Kafka: java (17+) is not on PATH")
        return [
            java, "-Xmx512m", "-Xms128m", "-XX:+UseG1GC", "-Djava.awt.headless=true",
            f"-Dlog4j2.configurationFile={self.home / 'log4j2.xml'}",
            "-cp", f"{libs}/*", *args,
        ]

    def running_pid(self) -> int | None:
        """The broker's pid if it is alive."""
        try:
            pid = int(self.pid_file.read_text().strip())
            os.kill(pid, 0)
        except (OSError, ValueError):
            return None
        return pid

    def start(self, topics: Iterable[str] = (), partitions: int = DEFAULT_PARTITIONS,
              timeout: float = 120.0, echo: bool = False) -> None:
        """Format storage on first use, start the broker, wait until ready, create topics."""
        self.home.mkdir(parents=True, exist_ok=True)
        if self.running_pid() is None:
            if port_open(self.port):
                raise LocalServiceError(f"Kafka: port {self.port} is taken by another process")
            libs = ensure_jars(echo=echo)
            state = self.home / "controller.port"
            if state.exists():
                controller_port = int(state.read_text())
            else:
                controller_port = free_port()
                state.write_text(str(controller_port))
            config = self._write_config(controller_port)
            if not (self.home / "data" / "meta.properties").exists():
                fmt = subprocess.run(
                    self._java(libs, "kafka.tools.StorageTool", "format", "-t", cluster_id(),
                               "-c", str(config)),
                    capture_output=True, text=True, check=False,
                )
                if fmt.returncode != 0:
                    raise LocalServiceError(
                        f"Kafka: formatting storage failed: {fmt.stderr[-2000:]}")
            with self.log_file.open("ab") as log:
                proc = subprocess.Popen(
                    self._java(libs, "kafka.Kafka", str(config)),
                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            self.pid_file.write_text(str(proc.pid))
        self.wait_ready(timeout)
        if topics:
            self.create_topics(topics, partitions)

    def wait_ready(self, timeout: float) -> None:
        """Block until an admin client can describe the cluster."""
        from kafka import KafkaAdminClient

        deadline = time.monotonic() + timeout
        last: Exception | None = None
        while time.monotonic() < deadline:
            if self.running_pid() is None:
                raise LocalServiceError(
                    f"Kafka: broker exited during start-up; see {self.log_file}")
            if port_open(self.port):
                try:
                    admin = KafkaAdminClient(bootstrap_servers=self.bootstrap,
                                             request_timeout_ms=5000)
                    try:
                        admin.describe_cluster()
                        return
                    finally:
                        admin.close()
                except Exception as exc:  # broker still starting: retry until the deadline
                    last = exc
            time.sleep(0.5)
        raise LocalServiceError(
            f"Kafka: not ready after {timeout:.0f}s ({last}); see {self.log_file}")

    def create_topics(self, topics: Iterable[str], partitions: int) -> None:
        """Create the topics that do not exist yet on this broker."""
        create_topics(self.bootstrap, topics, partitions)

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the broker (SIGTERM, then SIGKILL after `timeout`)."""
        pid = self.running_pid()
        if pid is None:
            return
        os.killpg(pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                reaped, _ = os.waitpid(pid, os.WNOHANG)
                if reaped == pid:
                    break
            except ChildProcessError:
                pass
            if self.running_pid() is None:
                break
            time.sleep(0.2)
        else:
            os.killpg(pid, signal.SIGKILL)
        self.pid_file.unlink(missing_ok=True)

"""The consumers' own settings: broker, topics, client security, batching and limits."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field, SecretStr, field_validator


class KafkaSettings(BaseModel):
    """Broker address, topics and client security."""

    bootstrap_servers: str = "127.0.0.1:19092"
    billing_topic: str = "laer.billing"
    usage_topic: str = "laer.usage"
    support_topic: str = "laer.support"
    dlq_topic: str = "laer.dlq"
    group_id: str = "laer-consumers"
    group_instance_id: str | None = None  # static membership: a restart keeps partitions
    partitions: int = Field(default=4, ge=1, description="partitions for topics the tool creates")
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None

    @field_validator("bootstrap_servers")
    @classmethod
    def _host_port(cls, value: str) -> str:
        for server in value.split(","):
            host, sep, port = server.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port], got {server!r}")
        return value

    @property
    def source_topics(self) -> dict[str, str]:
        """Topic name -> event family it carries."""
        return {self.billing_topic: "billing", self.usage_topic: "usage",
                self.support_topic: "support"}

    def client_options(self) -> dict[str, object]:
        """Security options shared by kafka-python producers, consumers and admins."""
        opts: dict[str, object] = {"bootstrap_servers": self.bootstrap_servers.split(","),
                                   "security_protocol": self.security_protocol}
        if self.sasl_mechanism:
            opts["sasl_mechanism"] = self.sasl_mechanism
            opts["sasl_plain_username"] = self.sasl_username
            opts["sasl_plain_password"] = (
                self.sasl_password.get_secret_value() if self.sasl_password else None)
        if self.ssl_cafile:
            opts["ssl_cafile"] = str(self.ssl_cafile)
        return opts


class ConsumerSettings(BaseModel):
    """Limits and batching of the ingesting consumer."""

    max_record_bytes: int = Field(default=256 * 1024, gt=0)
    max_future: timedelta = timedelta(days=1)
    park_window: timedelta = timedelta(days=7)
    # per-batch costs (round trips, an account's write) spread over more events: about 1.3x
    # the ingest rate of 500 on a backlog (bench.ingest); a live stream polls fewer anyway
    max_poll_records: int = Field(default=2000, gt=0)
    poll_timeout_ms: int = Field(default=500, gt=0)
    session_timeout_ms: int = Field(default=10_000, ge=1000)
    heartbeat_interval_ms: int = Field(default=3_000, ge=100)
    record_attempts: int = Field(
        default=3, ge=1,
        description="tries of a record that fails on its own before it is dead-lettered")
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    account_cache_size: int = Field(
        default=10_000, ge=0,
        description="accounts kept parsed between batches (about 8 KB each; 0 = none)")
    align: bool = Field(
        default=True,
        description="hold records until the co-partitions of the other topics caught up in "
                    "event time (consumers.align); off: apply as read, re-sequence late ones")
    align_max_wait_s: float = Field(
        default=5.0, ge=0,
        description="a co-partition silent this long (not at its end, not paused) holds "
                    "nothing back: the longest a silent producer delays the others")
    align_buffer_records: int = Field(
        default=2000, ge=1,
        description="records held per partition before it is paused until half drained")
    rejoin_after_s: float = Field(
        default=60.0, gt=0,
        description="a consumer without an assignment this long after it gave its partitions "
                    "up (or started) closes its client and joins again with a new one")

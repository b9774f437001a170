"""The benchmark's topics on the broker: names per run, settings to consume them, producing.

Each measurement gets fresh topics (a random suffix), so no run reads another's records.
"""

from __future__ import annotations

import os
import time
import uuid
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from kafka import KafkaProducer

from consumers.settings import ConsumerSettings, KafkaSettings
from laer.local.kafka import create_topics
from laer.publish import encode
from laer.settings import Settings
from laer_domain.events import event_family

FAMILIES = ("billing", "usage", "support")


@dataclass
class Topics:
    """One topic per event family and a dead-letter topic, named `bench.<family>.<suffix>`."""

    suffix: str = field(default_factory=lambda: uuid.uuid4().hex[:6])

    @property
    def by_family(self) -> dict[str, str]:
        return {f: f"bench.{f}.{self.suffix}" for f in FAMILIES}

    @property
    def dlq(self) -> str:
        return f"bench.dlq.{self.suffix}"

    def settings(self, bootstrap: str, db_url: str, group: str) -> Settings:
        """Settings of a consumer in this process (`ConsumerLoop`) reading these topics."""
        t = self.by_family
        return Settings(database_url=db_url, kafka=KafkaSettings(
            bootstrap_servers=bootstrap, billing_topic=t["billing"], usage_topic=t["usage"],
            support_topic=t["support"], dlq_topic=self.dlq, group_id=group),
            consumer=ConsumerSettings(poll_timeout_ms=100))

    def env(self, bootstrap: str, db_url: str, group: str, home: Path) -> dict[str, str]:
        """The environment of a `laer consume` process reading these topics."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("LAER_")}
        t = self.by_family
        env.update({
            "LAER_DATABASE_URL": db_url, "LAER_STATE_DIR": str(home / "state"),
            "LAER_KAFKA__BOOTSTRAP_SERVERS": bootstrap, "LAER_KAFKA__BILLING_TOPIC": t["billing"],
            "LAER_KAFKA__USAGE_TOPIC": t["usage"], "LAER_KAFKA__SUPPORT_TOPIC": t["support"],
            "LAER_KAFKA__DLQ_TOPIC": self.dlq, "LAER_KAFKA__GROUP_ID": group,
            "LAER_CONSUMER__POLL_TIMEOUT_MS": "100", "LAER_LOG_LEVEL": "WARNING",
            "PYTHONPATH": os.getcwd(),
        })
        return env


def fresh_topics(bootstrap: str, partitions: int) -> Topics:
    """New topics, created on the broker with `partitions` partitions each."""
    topics = Topics()
    create_topics(bootstrap, [*topics.by_family.values(), topics.dlq], partitions)
    return topics


Record = tuple[str, bytes, bytes, list[tuple[str, bytes]]]


def encoded(topics: Topics, evs: Iterable[dict[str, Any]]) -> Iterator[Record]:
    """(topic, key, value, headers) of each event: binary mode for one in five."""
    fam = topics.by_family
    for n, ev in enumerate(evs, 1):
        key, value, headers = encode(ev, "binary" if n % 5 == 0 else "structured")
        yield fam[event_family(ev["type"])], key, value, headers


def produce(bootstrap: str, records: Iterable[Record], rate: float | None = None,
            sent_at: dict[tuple[str, int, int], float] | None = None,
            warm_topics: Iterable[str] = ()) -> int:
    """Send `encoded` records; at `rate` per second if given.

    Paced sends wait for every replica (acks=all) and linger 2 ms, as a live source would.
    Bulk loads (no rate) take the fast path: acks=1 and large, lingering batches.
    `warm_topics` are looked up before the first send (metadata and the broker connection),
    so a paced run does not stamp the producer's own start-up onto its first records.
    """
    if rate:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks="all", linger_ms=2,
                                 batch_size=256 * 1024)
    else:
        producer = KafkaProducer(bootstrap_servers=bootstrap, acks=1, linger_ms=50,
                                 batch_size=512 * 1024)
    for topic in warm_topics:
        producer.partitions_for(topic)
    n = 0
    started = time.perf_counter()
    try:
        for n, (topic, key, value, headers) in enumerate(records, 1):
            if rate:
                ahead = started + n / rate - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            at = time.monotonic()
            fut = producer.send(topic, key=key, value=value, headers=headers)
            if sent_at is not None:
                fut.add_callback(lambda md, at=at: sent_at.__setitem__(
                    (md.topic, md.partition, md.offset), at))
        producer.flush()
    finally:
        producer.close()
    return n

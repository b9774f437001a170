"""`--from-topics`: the event topics replayed, in event-time order, committing nothing."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from backtest.engine import Backtest
from backtest.output import actions
from backtest.topics import read_topics
from consumers.settings import ConsumerSettings, KafkaSettings
from laer.local.kafka import LocalKafka, create_topics
from laer.publish import encode
from laer_domain.events import event_family


def _replay(events: list[Any], db: Path) -> list[dict[str, Any]]:
    bt = Backtest(f"sqlite:///{db}", progress=None)
    try:
        bt.run(events)
        return [{k: v for k, v in r.items() if k != "id"} for r in actions(bt.engine)]
    finally:
        bt.close()


def test_the_topics_replay_as_the_same_events_from_a_file_do(
        kafka_broker: LocalKafka, cohort: list[dict[str, Any]], no_network: None,
        tmp_path: Path) -> None:
    suffix = uuid.uuid4().hex[:6]
    kafka = KafkaSettings(bootstrap_servers=kafka_broker.bootstrap,
                          billing_topic=f"bt.billing.{suffix}", usage_topic=f"bt.usage.{suffix}",
                          support_topic=f"bt.support.{suffix}", dlq_topic=f"bt.dlq.{suffix}")
    create_topics(kafka_broker.bootstrap, list(kafka.source_topics), 2)
    by_family = {family: topic for topic, family in kafka.source_topics.items()}
    events = [e for e in cohort if e["subject"] in ("acct-0000", "acct-0001")]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    # topic by topic, each in its own order: the records come out of event-time order
    for family in ("support", "usage", "billing"):
        for n, event in enumerate(e for e in events if event_family(e["type"]) == family):
            key, value, headers = encode(event, "binary" if n % 3 else "structured")
            producer.send(by_family[family], key=key, value=value, headers=headers)
    producer.flush()
    producer.close()
    group = f"laer-backtest-{suffix}"
    read = list(read_topics(kafka, ConsumerSettings(), group=group, timeout_s=5))
    assert len(read) == len(events)
    assert _replay(read, tmp_path / "topics.db") == _replay(events, tmp_path / "file.db")
    probe = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=group,
                          enable_auto_commit=False)
    try:  # the reader's group committed no offsets
        for topic in kafka.source_topics:
            for p in sorted(probe.partitions_for_topic(topic) or ()):
                assert probe.committed(TopicPartition(topic, p)) is None, (topic, p)
    finally:
        probe.close()

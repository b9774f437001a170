"""`laer simulate`: a reproducible cohort, published for real to a broker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter

from kafka import KafkaConsumer, TopicPartition

from laer.local.kafka import LocalKafka
from laer_domain.events import parse_event


def simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "laer.cli", "simulate", *args],
                          env=env or dict(os.environ), capture_output=True, text=True,
                          timeout=300)


def test_same_seed_same_cohort_and_every_story_is_valid_but_the_planted_bad_ones() -> None:
    first = simulate("--accounts", "6", "--seed", "5", "--dry-run")
    again = simulate("--accounts", "6", "--seed", "5", "--dry-run")
    other = simulate("--accounts", "6", "--seed", "6", "--dry-run")
    assert first.returncode == 0, first.stderr
    assert first.stdout == again.stdout and first.stdout != other.stdout
    events = [json.loads(line) for line in first.stdout.splitlines()]
    assert len({e["subject"] for e in events}) == 6
    invalid = 0
    for e in events:
        try:
            parse_event(e)
        except ValueError:
            invalid += 1
            assert "-bad-" in e["id"]  # only the deliberately malformed ones
    assert Counter(e["type"] for e in events)["laer.billing.subscription_started"] >= 6
    assert invalid < len(events) * 0.05


def test_publishes_every_event_to_its_topic(kafka_broker: LocalKafka, unique: str) -> None:
    topics = {f: f"sim.{f}.{unique}" for f in ("billing", "usage", "support")}
    kafka_broker.create_topics(list(topics.values()), partitions=2)
    env = dict(os.environ, LAER_KAFKA__BOOTSTRAP_SERVERS=kafka_broker.bootstrap,
               LAER_KAFKA__BILLING_TOPIC=topics["billing"],
               LAER_KAFKA__USAGE_TOPIC=topics["usage"],
               LAER_KAFKA__SUPPORT_TOPIC=topics["support"])
    expected = simulate("--accounts", "3", "--seed", "9", "--dry-run", env=env)
    want = Counter(json.loads(line)["type"].split(".")[1] for line in expected.stdout.splitlines())
    done = simulate("--accounts", "3", "--seed", "9", "--mode", "binary", env=env)
    assert done.returncode == 0, done.stderr
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap)
    try:
        for family, topic in topics.items():
            parts = [TopicPartition(topic, p) for p in range(2)]
            assert sum(consumer.end_offsets(parts).values()) == want[family], family
    finally:
        consumer.close()

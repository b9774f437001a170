"""`laer consume` serves Prometheus metrics: events by type and outcome, dead letters, batch
latency and per-partition lag, scraped over HTTP from the running process."""

from __future__ import annotations

import urllib.request
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer, TopicPartition
from prometheus_client import REGISTRY
from prometheus_client.parser import text_string_to_metric_families

from consumers import metrics
from laer.local.kafka import LocalKafka
from tests.conftest import free_port
from tests.consumers.conftest import Harness
from tests.consumers.test_bad_input import STRUCTURED, start, usage

pytestmark = [pytest.mark.kafka]


def scrape(port: int) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as resp:
        text = resp.read().decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def test_metrics_count_outcomes_dead_letters_batches_and_lag(
        kafka_broker: LocalKafka, harness_factory: Any, tmp_path: Any) -> None:
    h: Harness = harness_factory(kafka_broker, f"sqlite:///{tmp_path / 'metrics.db'}")
    port = free_port()
    h.extra_env["LAER_CONSUMER__METRICS_PORT"] = str(port)
    proc = h.start()
    h.wait_assigned(proc)
    h.produce([(start("m-1"), "structured"), (start("m-2"), "binary")]
              + [(usage("m-1", count=c, n=c), "structured") for c in range(5)])
    h.produce_raw(h.topics["usage"], b"m-1", b'{"id": ', STRUCTURED)  # bad JSON
    h.wait_consumed()

    def settled() -> Any:
        # the counters move just after the commit `wait_consumed` saw, and the lag gauges are
        # refreshed every 5 s: wait for all 8 records and a gauge per assigned partition
        m = scrape(port)
        counted = sum(v for (name, _), v in m.items() if name == "laer_events_total")
        lags = sum(1 for (name, _) in m if name == "laer_consumer_lag")
        return m if counted >= 8 and lags >= 12 else None

    scraped = h.wait_for(settled, 30, "all 8 records counted and 12 lag gauges in /metrics")
    applied = {dict(labels)["type"]: v for (name, labels), v in scraped.items()
               if name == "laer_events_total" and dict(labels)["outcome"] == "applied"}
    assert applied == {"laer.billing.subscription_started": 2, "laer.usage.active_users": 5}
    assert scraped[("laer_dead_letters_total", (("reason", "invalid_json"),))] == 1
    assert scraped[("laer_events_total", (("outcome", "invalid_json"), ("type", "invalid")))] == 1
    assert scraped[("laer_batch_seconds_count", ())] >= 1
    assert scraped[("laer_signals_total", ())] >= 2  # an AccountLanded per account
    # a gauge per assigned partition (its values are checked in the test below)
    partitions = {dict(labels)["topic"] for (name, labels) in scraped
                  if name == "laer_consumer_lag"}
    assert partitions == set(h.topics.values())


def test_lag_is_the_distance_from_the_position_to_the_log_end(kafka_broker: LocalKafka,
                                                              unique: str) -> None:
    topic = f"laer.lag.{unique}"
    kafka_broker.create_topics([topic], partitions=1)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for i in range(10):
        producer.send(topic, key=b"k", value=str(i).encode(), partition=0)
    producer.flush()
    producer.close()
    consumer = KafkaConsumer(bootstrap_servers=kafka_broker.bootstrap, group_id=None,
                             enable_auto_commit=False)
    def lag() -> float | None:
        return REGISTRY.get_sample_value("laer_consumer_lag",
                                         {"topic": topic, "partition": "0"})

    try:
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        consumer.seek(tp, 3)
        metrics.observe_lag(consumer)
        assert lag() == 7
        consumer.seek(tp, 10)
        metrics.observe_lag(consumer)
        assert lag() == 0
    finally:
        consumer.close()

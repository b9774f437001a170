"""Every rebalance ends with every member owning partitions again, while a backlog is read.

Seen once in CI (kafka-python 3.0.12): a member revoked for a rebalance never got its
assignment; its join was answered and the group completed with it, but it polled on idle
while the group evicted it, went on without it, and left it so for 2 min. The consumer now
closes a client left without an assignment for `LAER_CONSUMER__REJOIN_AFTER_S` and joins
with a new one. The first test forces that stall (the join's answer never reaches the
client) and counts the recovery; the others join and leave members round after round and
check every member owns partitions after each rebalance, by `laer_consumer_assigned_partitions`.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest
from kafka import KafkaConsumer, KafkaProducer

from consumers import metrics
from consumers.dlq import kafka_dead_letter_sink
from consumers.runner import ConsumerLoop
from consumers.settings import ConsumerSettings
from laer.local.kafka import LocalKafka
from laer_domain.policy import Policy
from tests.conftest import free_port
from tests.consumers.conftest import Harness
from tests.consumers.event_time import backlog, reference
from tests.consumers.test_event_time_order import assert_event_time_state, metric

pytestmark = [pytest.mark.kafka]

ACCOUNTS = 100
SEED = 11
ROUNDS = 4
PARTITIONS = 12  # 3 source topics of 4 partitions (tests/consumers/conftest.py)


def owned(port: int) -> float:
    """The partitions a consumer says it owns now."""
    return metric(port, "laer_consumer_assigned_partitions")


def both_own(first: int, second: int) -> bool:
    """Both consumers own partitions, and together all of them (no rebalance under way)."""
    a, b = owned(first), owned(second)
    return a > 0 and b > 0 and a + b == PARTITIONS


class FirstClientStallsOnRejoin(ConsumerLoop):
    """A consumer whose first client, once `armed`, sends its next JoinGroup and SyncGroup and
    never hears back (as the stalled member seemed to): only a new client gets it going."""

    clients = 0
    armed = False

    def _consumer(self) -> KafkaConsumer:
        consumer = super()._consumer()
        self.clients += 1
        if self.clients == 1:
            coordinator = consumer._coordinator
            join = coordinator._do_join_and_sync_async

            async def stalling_join() -> Any:
                answer = await join()
                if self.armed:  # the group is complete with this member; it never knows
                    while True:
                        await coordinator._manager._net.sleep(3600)
                return answer

            coordinator._do_join_and_sync_async = stalling_join
        return consumer


def counter(value: Any) -> float:
    """A prometheus-client metric's current value in this process."""
    return float(value._value.get())


@pytest.mark.parametrize("db_url", ["sqlite", "postgresql"], indirect=True)
def test_a_member_stalled_in_a_rebalance_joins_again(kafka_broker: LocalKafka, db_url: str,
                                                      harness_factory: Any) -> None:
    families = backlog(40, SEED)
    records = [r for rs in families.values() for r in rs]
    expected = reference([e for e, _ in records])
    h: Harness = harness_factory(kafka_broker, db_url)
    h.produce(records[:len(records) // 2])
    kafka = h.settings().kafka
    # as the harness's `laer consume` children are set, with a short rejoin bound
    consumer_settings = ConsumerSettings(rejoin_after_s=15.0, session_timeout_ms=6000,
                                         heartbeat_interval_ms=1000, poll_timeout_ms=200,
                                         max_poll_records=250)
    producer = KafkaProducer(**kafka.client_options(), acks="all")
    loop = FirstClientStallsOnRejoin(
        kafka, consumer_settings, h.sessions, Policy(),
        kafka_dead_letter_sink(producer, kafka.dlq_topic), gc_tuning=False)
    thread = threading.Thread(target=loop.run, name="consume-b", daemon=True)
    thread.start()
    try:
        h.wait_for(lambda: counter(metrics.ASSIGNED) == PARTITIONS, 120, "consume-b owning all")
        rejoins = counter(metrics.REJOINS)
        loop.armed = True
        port = free_port()
        h.extra_env["LAER_CONSUMER__METRICS_PORT"] = str(port)
        h.start("consume-a")  # the rebalance whose answer consume-b never hears
        h.wait_for(lambda: counter(metrics.REJOINS) > rejoins, 120,
                   "consume-b giving up the stalled rebalance")
        h.wait_for(lambda: counter(metrics.ASSIGNED) > 0 and owned(port) > 0
                   and counter(metrics.ASSIGNED) + owned(port) == PARTITIONS, 120,
                   "both members owning partitions after consume-b joined again")
        h.produce(records[len(records) // 2:])
        h.wait_consumed(timeout=300)
        assert_event_time_state(h, expected)
        assert loop.clients == 2
    finally:
        loop.stop()
        thread.join(timeout=60)
        producer.close()
    assert not thread.is_alive()
    assert h.close()["consume-a"] == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_members_rejoin_after_every_rebalance(kafka_broker: LocalKafka, db_url: str,
                                               harness_factory: Any) -> None:
    families = backlog(ACCOUNTS, SEED)
    records = sorted((r for rs in families.values() for r in rs),
                     key=lambda r: (r[0]["time"], r[0]["id"]))
    expected = reference([e for e, _ in records])
    h: Harness = harness_factory(kafka_broker, db_url)
    h.produce(records[:len(records) // 3])
    # the rest arrives while the rounds run, so the first consumer is mid-batch at each
    rest = threading.Thread(target=h.produce, args=(records[len(records) // 3:], 150.0),
                            daemon=True)
    ports = {"consume-b": free_port()}
    h.extra_env["LAER_CONSUMER__METRICS_PORT"] = str(ports["consume-b"])
    h.start("consume-b")
    h.wait_for(lambda: owned(ports["consume-b"]) == PARTITIONS, 120, "consume-b owning all")
    rest.start()
    for n in range(ROUNDS):
        name = f"consume-a{n}"
        ports[name] = free_port()
        h.extra_env["LAER_CONSUMER__METRICS_PORT"] = str(ports[name])
        h.start(name)
        h.wait_for(lambda: both_own(ports["consume-b"], ports[name]), 90,  # noqa: B023
                   f"round {n}: both members owning partitions after {name} joined")
        assert h.processes[name].stop(timeout=60) == 0
        h.wait_for(lambda: owned(ports["consume-b"]) == PARTITIONS, 90,
                   f"round {n}: consume-b owning all after {name} left")
    assert metric(ports["consume-b"], "laer_consumer_rebalances_total") >= 4 * ROUNDS
    rest.join(timeout=300)
    h.wait_consumed(timeout=300)
    assert_event_time_state(h, expected)
    assert h.close()["consume-b"] == 0


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
def test_members_starting_together(kafka_broker: LocalKafka, db_url: str,
                                   harness_factory: Any) -> None:
    # Two members joining a new group at once: the first assignment is often followed at
    # once by another rebalance, while neither has read a record yet.
    families = backlog(20, SEED)
    records = [r for rs in families.values() for r in rs]
    for n in range(ROUNDS):
        h: Harness = harness_factory(kafka_broker, db_url)
        h.produce(records)
        ports = {}
        for name in ("consume-a", "consume-b"):
            ports[name] = free_port()
            h.extra_env["LAER_CONSUMER__METRICS_PORT"] = str(ports[name])
            h.start(name)
        h.wait_for(lambda: both_own(ports["consume-a"], ports["consume-b"]), 90,  # noqa: B023
                   f"round {n}: both members owning partitions")
        h.wait_consumed(timeout=120)
        assert h.close() == {"consume-a": 0, "consume-b": 0}

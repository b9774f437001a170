"""Hostile records mixed with good events (`poison_grammar`), produced to the real broker and
consumed by a real `laer consume`: the consumer stays up, every partition reaches its end,
every bad record is in the dead-letter topic once with its reason, and every good event is
applied (issue 12). A few examples per database (each is a round trip through the broker)."""

from __future__ import annotations

from collections import Counter
from typing import Any

import pytest
from hypothesis import HealthCheck, Phase, example, given, settings
from kafka import KafkaConsumer, TopicPartition
from sqlalchemy import select

from consumers import dlq_tools
from laer.local.kafka import LocalKafka
from persistence.tables import AppliedEventRow, ConsumerOffsetRow
from tests.consumers.conftest import Harness
from tests.consumers.poison_grammar import (
    T0,
    RawName,
    Sample,
    describe,
    landing_event,
    mixed_batch,
    sample_of,
)

pytestmark = [pytest.mark.kafka]

GOOD = sample_of(landing_event("bf-0", T0), "binary")
# cases that once stopped the consumer, kept (issue 12)
KEPT = [GOOD,
        Sample("billing", b"bf-0", GOOD.value, (*GOOD.headers, (RawName(b"bad-\xff"), b"x")),
               "corrupt_record", "header_name"),
        Sample("billing", b"bf-0", b"x" * 1_048_000, (("content-type", b"json"),),
               "oversized", "near the broker's limit")]


def partition_ends(h: Harness) -> dict[tuple[str, int], int]:
    consumer = KafkaConsumer(bootstrap_servers=h.broker.bootstrap)
    try:
        tps = [TopicPartition(t, p) for t in h.topics.values() for p in range(4)]
        return {(tp.topic, tp.partition): n for tp, n in consumer.end_offsets(tps).items()}
    finally:
        consumer.close()


def stored(h: Harness) -> dict[tuple[str, int], int]:
    with h.sessions() as s:
        return {(r.topic, r.partition): r.next_offset for r in s.scalars(
            select(ConsumerOffsetRow).where(ConsumerOffsetRow.group_id == h.group))}


def test_hostile_records_on_the_broker_leave_the_consumer_up_and_lose_nothing(
        kafka_broker: LocalKafka, db_url: str, harness_factory: Any) -> None:
    h: Harness = harness_factory(kafka_broker, db_url)
    proc = h.start()
    h.wait_assigned(proc)

    @settings(max_examples=4, deadline=None, database=None,
              phases=(Phase.explicit, Phase.generate),  # no shrinking against a live consumer
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(mixed_batch("bf", broker=True, max_bad=15))
    @example(KEPT)
    def check(samples: list[Sample]) -> None:
        sent = [(s, h.produce_raw(h.topics[s.family], s.key, s.value, list(s.headers)))
                for s in samples]
        ends = partition_ends(h)
        h.wait_for(lambda: all(stored(h).get(tp, 0) >= n for tp, n in ends.items() if n),
                   120, f"every partition at its end\n{describe(samples)}")
        letters = [e for e in dlq_tools.read_dead_letters(h.settings().kafka)]
        copies = Counter((e.source_topic, e.source_partition, e.source_offset) for e in letters)
        reasons = {(e.source_topic, e.source_partition, e.source_offset): e.reason
                   for e in letters}
        for sample, (partition, offset) in sent:
            where = (h.topics[sample.family], partition, offset)
            if sample.bad:
                assert copies[where] == 1, (copies[where], describe([sample]))
                assert reasons[where] == sample.reason, (reasons[where], describe([sample]))
            else:
                assert copies[where] == 0, f"good, yet dead-lettered: {describe([sample])}"
        good = {s.event_id for s in samples if not s.bad}

        def applied() -> bool:
            with h.sessions() as s:
                ids = set(s.scalars(select(AppliedEventRow.event_id).where(
                    AppliedEventRow.event_id.in_(good))))
            return ids == good

        h.wait_for(applied, 60, "every good event applied")
        assert proc.alive(), proc.tail()

    check()
    assert h.close()["consume"] == 0

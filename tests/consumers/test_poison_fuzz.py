"""Fuzz of the consumer's decode and apply with hostile records mixed with good events
(`poison_grammar`): every bad record is rejected with its reason, every good event applies.

The first test is pure (decoding, the rules and the parked-event rehearsal in memory) and runs
many examples; the second goes through `Ingestor` over SQLite and PostgreSQL in random batch
cuts, and checks the dead letters, the applied events and the stored offsets.
"""

from __future__ import annotations

import itertools
from datetime import UTC, datetime

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import Engine

from consumers.records import RawRecord, RecordDecoder
from consumers.rehearsal import rehearse_parked
from consumers.settings import ConsumerSettings
from laer_domain.events import InvalidEvent
from laer_domain.policy import Policy
from laer_domain.service import InMemoryRepository, LifecycleService
from tests.consumers.offline import (
    FAMILIES,
    TOPICS,
    Feed,
    Letters,
    applied_ids,
    ingestor,
    stored_offsets,
)
from tests.consumers.poison_grammar import Sample, describe, mixed_batch

POLICY = Policy()
NOW = datetime(2026, 3, 10, tzinfo=UTC)
DECODE = RecordDecoder(FAMILIES, ConsumerSettings())
# cases that once failed, kept (issue 12's examples)
KEPT = [
    [Sample("usage", b"pf-0", b'{"date":"2026-03-02","count":3}', (
        ("ce_specversion", b"1.0"), ("ce_id", b"e"), ("ce_source", b"s"),
        ("ce_type", b"laer.usage.active_users"), ("ce_subject", b"pf-0"),
        ("ce_time", b"0001-01-01T00:30:00+01:00"), ("content-type", b"application/json")),
        "schema_violation", "edge_time")],
]


@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(mixed_batch("pf"))
@example(KEPT[0])
def test_decoding_and_the_rules_reject_each_bad_record_and_apply_each_good_one(
        samples: list[Sample]) -> None:
    repo = InMemoryRepository()
    service = LifecycleService(repo, POLICY)
    for n, sample in enumerate(samples):
        record = RawRecord(TOPICS[sample.family], 0, n, sample.key, sample.value,
                           sample.headers)
        try:
            event = DECODE(record, NOW)
        except InvalidEvent as exc:
            assert exc.reason == sample.reason, (sample.kind, exc, describe([sample]))
            continue
        assert not sample.bad, f"accepted: {describe([sample])}"
        if service.handle(event).status == "parked":
            rehearse_parked(event, POLICY)
    applied = {event.id for _, event in repo.events}
    assert {s.event_id for s in samples if not s.bad} <= applied, describe(samples)


def test_batches_of_mixed_records_commit_good_events_and_dead_letter_bad_ones(
        engine: Engine) -> None:
    prefixes = (f"sf{n}" for n in itertools.count())
    feed, letters = Feed(), Letters()
    ing = ingestor(engine, letters, clock=lambda: NOW)

    @settings(max_examples=25, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.function_scoped_fixture])
    @given(st.data())
    def check(data: st.DataObject) -> None:
        samples = data.draw(mixed_batch(next(prefixes)))
        records = [feed.raw(TOPICS[s.family], s.key, s.value, s.headers) for s in samples]
        cut = data.draw(st.integers(1, len(records)))
        before = len(letters.sent)
        for i in range(0, len(records), cut):
            ing.process(records[i:i + cut])
        sent = letters.sent[before:]
        by_record = {(dl.record.topic, dl.record.partition, dl.record.offset): dl for dl in sent}
        assert len(by_record) == len(sent), "a record was dead-lettered twice"
        for sample, record in zip(samples, records, strict=True):
            letter = by_record.get((record.topic, record.partition, record.offset))
            if sample.bad:
                assert letter is not None, f"not dead-lettered: {describe([sample])}"
                assert letter.reason == sample.reason, (sample.kind, letter)
            else:
                assert letter is None, f"good, yet dead-lettered: {letter}"
        assert {s.event_id for s in samples if not s.bad} <= applied_ids(engine)
        assert stored_offsets(engine) == feed.offsets  # every partition at its end

    check()

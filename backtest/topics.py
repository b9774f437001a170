"""A backtest's events read from the project's Kafka topics: a consumer group of its own that
commits nothing, over a range of record times, decoded as `laer consume` decodes them."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import UTC, datetime

from consumers.records import RawRecord, RecordDecoder
from consumers.settings import ConsumerSettings, KafkaSettings
from laer_domain.events import CloudEvent, InvalidEvent


def read_topics(kafka: KafkaSettings, limits: ConsumerSettings, *,
                since: datetime | None = None, until: datetime | None = None,
                group: str | None = None, timeout_s: float = 10.0
                ) -> Iterator[CloudEvent | InvalidEvent]:
    """Every record of the event topics written from `since` (record time) up to the end
    they had when reading began (or `until`): its event, or why it is invalid."""
    from kafka import KafkaConsumer, TopicPartition

    consumer = KafkaConsumer(
        group_id=group or f"laer-backtest-{uuid.uuid4().hex[:8]}", enable_auto_commit=False,
        client_id="laer-backtest", consumer_timeout_ms=int(timeout_s * 1000),
        **kafka.client_options())
    decode = RecordDecoder(kafka.source_topics, limits)
    try:
        tps = [TopicPartition(t, p) for t in sorted(kafka.source_topics)
               for p in sorted(consumer.partitions_for_topic(t) or ())]
        if not tps:
            return
        consumer.assign(tps)  # assigned, not subscribed: no rebalance, and nothing committed
        consumer.seek_to_beginning(*tps)
        if since is not None:
            starts = consumer.offsets_for_times({tp: int(since.timestamp() * 1000)
                                                 for tp in tps})
            for tp, found in starts.items():
                if found is None:  # nothing written since then
                    consumer.seek_to_end(tp)
                else:
                    consumer.seek(tp, found.offset)
        ends = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > consumer.position(tp)}
        until_ms = int(until.timestamp() * 1000) if until is not None else None
        now = datetime.now(UTC)
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                break  # the broker went quiet: replay what was read
            for tp, batch in polled.items():
                for rec in batch:
                    if rec.offset + 1 >= ends[tp] or (until_ms is not None
                                                       and rec.timestamp > until_ms):
                        remaining.discard(tp)
                    if rec.offset >= ends[tp] or (until_ms is not None
                                                  and rec.timestamp > until_ms):
                        continue
                    try:
                        yield decode(RawRecord.from_consumer_record(rec), now)
                    except InvalidEvent as exc:
                        yield exc
            if until_ms is not None:  # a partition past `until` is read no further
                consumer.pause(*[tp for tp in tps if tp not in remaining])
    finally:
        consumer.close()

"""`laer dlq list` and `laer dlq replay`: read the dead-letter topic, send fixed records back.

Reading never joins a consumer group and never commits: the DLQ is an audit log that stays
intact. Replaying sends a record (as it was, or as fixed in a JSON Lines file written by
`laer dlq list --json`) to the topic it originally came from, without the `laer.errors.*`
headers; the consumer then validates it again like any other record.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from consumers.dlq import (
    ERROR_HEADERS,
    EXCEPTION,
    MESSAGE,
    OFFSET,
    PARTITION,
    REASON,
    TOPIC,
    TRUNCATED,
)
from consumers.records import RawRecord, RecordDecoder, headers_as_text, text_or_none
from consumers.settings import ConsumerSettings, KafkaSettings
from laer_domain.events import InvalidEvent


@dataclass(frozen=True)
class DeadLetterEntry:
    """One record of the dead-letter topic, with its error headers split out."""

    dlq_partition: int
    dlq_offset: int
    timestamp_ms: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...]

    def _error(self, name: str) -> str | None:
        for k, v in reversed(self.headers):
            if k == name:
                return v.decode("utf-8", "replace")
        return None

    @property
    def reason(self) -> str:
        return self._error(REASON) or ""

    @property
    def message(self) -> str:
        return self._error(MESSAGE) or ""

    @property
    def source_topic(self) -> str:
        return self._error(TOPIC) or ""

    @property
    def source_partition(self) -> int:
        return int(self._error(PARTITION) or -1)

    @property
    def source_offset(self) -> int:
        return int(self._error(OFFSET) or -1)

    @property
    def original_headers(self) -> list[tuple[str, bytes]]:
        return [(k, v) for k, v in self.headers if k not in ERROR_HEADERS]

    def to_json(self) -> dict[str, Any]:
        """A JSON-safe form; `value` is text when it is UTF-8, else `value_hex`."""
        doc: dict[str, Any] = {
            "dlq_partition": self.dlq_partition, "dlq_offset": self.dlq_offset,
            "at": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(),
            "reason": self.reason, "message": self.message, "topic": self.source_topic,
            "partition": self.source_partition, "offset": self.source_offset,
            "key": text_or_none(self.key), "headers": headers_as_text(self.original_headers),
        }
        for name, header in (("exception", EXCEPTION), ("truncated", TRUNCATED)):
            found = self._error(header)
            if found is not None:  # a processing error's class; what a cut copy lost
                doc[name] = found
        if self.value is None:
            doc["value"] = None
        else:
            try:
                doc["value"] = self.value.decode("utf-8")
            except UnicodeDecodeError:
                doc["value_hex"] = self.value.hex()
        return doc


def read_dead_letters(kafka: KafkaSettings, *, reason: str | None = None,
                      limit: int | None = None, timeout_s: float = 10.0
                      ) -> Iterator[DeadLetterEntry]:
    """Every record of the DLQ (oldest first per partition), optionally of one reason."""
    from kafka import KafkaConsumer, TopicPartition

    topic = kafka.dlq_topic
    consumer = KafkaConsumer(enable_auto_commit=False, group_id=None,
                             client_id="laer-dlq-tools", consumer_timeout_ms=int(timeout_s * 1000),
                             **kafka.client_options())
    try:
        partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        consumer.seek_to_beginning(*tps)
        ends = consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > consumer.position(tp)}
        produced = 0
        while remaining:
            polled = consumer.poll(timeout_ms=int(timeout_s * 1000))
            if not polled:
                break  # the broker went quiet: show what was read
            for tp, batch in polled.items():
                for rec in batch:
                    if rec.offset >= ends[tp]:
                        remaining.discard(tp)
                        continue
                    raw = RawRecord.from_consumer_record(rec)
                    entry = DeadLetterEntry(
                        dlq_partition=raw.partition, dlq_offset=raw.offset,
                        timestamp_ms=rec.timestamp, key=raw.key, value=raw.value,
                        headers=raw.headers)
                    if rec.offset + 1 >= ends[tp]:
                        remaining.discard(tp)
                    if reason is not None and entry.reason != reason:
                        continue
                    yield entry
                    produced += 1
                    if limit is not None and produced >= limit:
                        return
    finally:
        consumer.close()


def list_dead_letters(kafka: KafkaSettings, *, reason: str | None = None,
                      limit: int | None = None) -> list[dict[str, Any]]:
    """The DLQ as JSON-safe dicts (what `laer dlq list --json` prints, one per line)."""
    return [e.to_json() for e in read_dead_letters(kafka, reason=reason, limit=limit)]


@dataclass(frozen=True)
class Replay:
    """One record to send back: where it goes and what it holds."""

    topic: str
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]
    origin: str  # "dlq p/o" for messages

    def check(self, decoder: RecordDecoder) -> str | None:
        """None if the record would now be accepted, else the reason it would be rejected."""
        rec = RawRecord(self.topic, -1, -1, self.key, self.value, tuple(self.headers))
        try:
            decoder(rec, datetime.now(UTC))
        except InvalidEvent as exc:
            return f"{exc.reason}: {exc.message}"
        return None


def replays_from_file(path: Path) -> list[Replay]:
    """Records from a JSON Lines file in the `laer dlq list --json` shape (edited to fix them)."""
    result = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        doc = json.loads(line)
        if not isinstance(doc, dict) or not doc.get("topic"):
            raise ValueError(f"{path}:{n}: expected an object with at least 'topic' and 'value'")
        value = doc.get("value")
        if isinstance(value, dict):  # a fixed event may be written as a JSON object
            value = json.dumps(value, separators=(",", ":"))
        raw_value = (bytes.fromhex(doc["value_hex"]) if "value_hex" in doc
                     else None if value is None else str(value).encode())
        key = doc.get("key")
        result.append(Replay(
            topic=str(doc["topic"]), key=None if key is None else str(key).encode(),
            value=raw_value,
            headers=[(str(k), str(v).encode()) for k, v in doc.get("headers") or []
                     if str(k) not in ERROR_HEADERS],
            origin=f"{path.name}:{n}"))
    return result


def replays_from_dlq(kafka: KafkaSettings, selected: Iterable[tuple[int, int]] | None = None,
                     reason: str | None = None) -> list[Replay]:
    """DLQ records as they are (chosen by `partition:offset`, by reason, or all)."""
    wanted = set(selected) if selected is not None else None
    return [Replay(topic=e.source_topic, key=e.key, value=e.value, headers=e.original_headers,
                   origin=f"dlq {e.dlq_partition}/{e.dlq_offset}")
            for e in read_dead_letters(kafka, reason=reason)
            if wanted is None or (e.dlq_partition, e.dlq_offset) in wanted]


@dataclass
class ReplayReport:
    sent: list[str]
    refused: list[tuple[str, str]]


def replay(kafka: KafkaSettings, limits: ConsumerSettings, replays: list[Replay], *,
           force: bool = False, dry_run: bool = False, producer: Any = None) -> ReplayReport:
    """Send records back to their topics; ones that would fail again (as the consumer with
    these `limits` would see them) are refused unless `force`. Waits until the broker
    acknowledged each one."""
    report = ReplayReport([], [])
    ready = []
    decoder = RecordDecoder(kafka.source_topics, limits)
    for r in replays:
        problem = r.check(decoder)
        if problem is not None and not force:
            report.refused.append((r.origin, problem))
        else:
            ready.append(r)
    if dry_run or not ready:
        report.sent = [r.origin for r in ready]
        return report
    own = producer is None
    if producer is None:
        from kafka import KafkaProducer

        producer = KafkaProducer(acks="all", client_id="laer-dlq-replay",
                                 **kafka.client_options())
    try:
        futures = [(r, producer.send(r.topic, key=r.key, value=r.value, headers=r.headers))
                   for r in ready]
        producer.flush()
        for r, fut in futures:
            fut.get(timeout=30)
            report.sent.append(r.origin)
    finally:
        if own:
            producer.close()
    return report


def parse_selection(values: Iterable[str]) -> list[tuple[int, int]]:
    """`["0:12", "3:7"]` -> [(0, 12), (3, 7)] (DLQ partition:offset)."""
    result = []
    for v in values:
        part, sep, off = v.partition(":")
        if not sep or not part.isdigit() or not off.isdigit():
            raise ValueError(f"expected PARTITION:OFFSET, got {v!r}")
        result.append((int(part), int(off)))
    return result

"""Dead letters: the original record plus headers saying why and where it came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from consumers.records import RawRecord

REASON = "laer.errors.reason"
MESSAGE = "laer.errors.message"
TOPIC = "laer.errors.topic"
PARTITION = "laer.errors.partition"
OFFSET = "laer.errors.offset"
ERROR_HEADERS = (REASON, MESSAGE, TOPIC, PARTITION, OFFSET)


def dead_letter_headers(rec: RawRecord, reason: str, message: str) -> list[tuple[str, bytes]]:
    """Original headers (minus stale error headers) followed by the error headers."""
    kept = [(k, v) for k, v in rec.headers if k not in ERROR_HEADERS]
    return kept + [
        (REASON, reason.encode()),
        (MESSAGE, message[:2000].encode("utf-8", "replace")),
        (TOPIC, rec.topic.encode()),
        (PARTITION, str(rec.partition).encode()),
        (OFFSET, str(rec.offset).encode()),
    ]


@dataclass(frozen=True)
class DeadLetter:
    """One record bound for the dead-letter topic."""

    record: RawRecord
    reason: str
    message: str


DeadLetterSink = Callable[[list[DeadLetter]], None]


def kafka_dead_letter_sink(producer: Any, topic: str, timeout_s: float = 30.0) -> DeadLetterSink:
    """A sink that sends dead letters and waits until the broker acknowledged every one."""

    def send(letters: list[DeadLetter]) -> None:
        futures = [
            producer.send(topic, key=dl.record.key, value=dl.record.value,
                          headers=dead_letter_headers(dl.record, dl.reason, dl.message))
            for dl in letters
        ]
        producer.flush(timeout=timeout_s)
        for fut in futures:
            fut.get(timeout=timeout_s)  # raises if the broker refused it: nothing is committed

    return send

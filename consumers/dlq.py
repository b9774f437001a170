"""Dead letters: the original record plus headers saying why and where it came from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from kafka.errors import MessageSizeTooLargeError

from consumers.records import RawRecord

REASON = "laer.errors.reason"
MESSAGE = "laer.errors.message"
EXCEPTION = "laer.errors.exception"
TOPIC = "laer.errors.topic"
PARTITION = "laer.errors.partition"
OFFSET = "laer.errors.offset"
TRUNCATED = "laer.errors.truncated"
ERROR_HEADERS = (REASON, MESSAGE, EXCEPTION, TOPIC, PARTITION, OFFSET, TRUNCATED)
# Framing of a record batch holding one record, with room to spare: a copy sized to
# `max_request_size - RECORD_OVERHEAD` is accepted by the producer.
RECORD_OVERHEAD = 1024


@dataclass(frozen=True)
class DeadLetter:
    """One record bound for the dead-letter topic (`exception`: the class that raised)."""

    record: RawRecord
    reason: str
    message: str
    exception: str | None = None


Headers = list[tuple[str, bytes]]
DeadLetterSink = Callable[[list[DeadLetter]], None]


def error_headers(dl: DeadLetter) -> Headers:
    """The `laer.errors.*` headers of a dead letter."""
    rec = dl.record
    headers = [(REASON, dl.reason.encode()),
               (MESSAGE, dl.message[:2000].encode("utf-8", "replace"))]
    if dl.exception:
        headers.append((EXCEPTION, dl.exception[:300].encode("utf-8", "replace")))
    return headers + [(TOPIC, rec.topic.encode("utf-8", "replace")),
                      (PARTITION, str(rec.partition).encode()),
                      (OFFSET, str(rec.offset).encode())]


def dead_letter_headers(rec: RawRecord, reason: str, message: str,
                        exception: str | None = None) -> Headers:
    """Original headers (minus stale error headers) followed by the error headers."""
    kept = [(k, v) for k, v in rec.headers if k not in ERROR_HEADERS]
    return kept + error_headers(DeadLetter(rec, reason, message, exception))


def _size(headers: Headers) -> int:
    return sum(len(k.encode("utf-8", "replace")) + len(v) for k, v in headers)


def fitted(dl: DeadLetter, limit: int) -> tuple[bytes | None, bytes | None, Headers]:
    """Key, value and headers of the dead-letter copy, cut to fit a `limit`-byte request.

    The original's topic, partition and offset always go along, so a cut copy still finds
    the record; what was cut is said in a `laer.errors.truncated` header.
    """
    rec = dl.record
    key, value = rec.key, rec.value
    kept = [(k, v) for k, v in rec.headers if k not in ERROR_HEADERS]
    errors = error_headers(dl)
    if key is None and value is None:
        value = b""  # a producer refuses a record with neither (a keyless tombstone)
    budget = limit - RECORD_OVERHEAD - _size(errors)
    if len(key or b"") + len(value or b"") + _size(kept) <= budget:
        return key, value, kept + errors
    budget = max(0, budget - 200)  # room for the truncated header itself
    notes = []
    if len(key or b"") + _size(kept) > budget // 2:
        notes.append(f"{len(kept)} original headers ({_size(kept)} bytes) dropped")
        kept = []
    if key is not None and len(key) > budget // 2:
        notes.append(f"key cut from {len(key)} to {budget // 2} bytes")
        key = key[:budget // 2]
    if value is not None:
        room = max(0, budget - len(key or b"") - _size(kept))
        if len(value) > room:
            notes.append(f"value cut from {len(value)} to {room} bytes")
            value = value[:room]
    return key, value, kept + errors + [(TRUNCATED, "; ".join(notes).encode())]


def kafka_dead_letter_sink(producer: Any, topic: str, timeout_s: float = 30.0) -> DeadLetterSink:
    """A sink that sends dead letters and waits until the broker acknowledged every one.

    A copy that would not fit the producer's `max_request_size` is cut to fit (`fitted`); one
    the broker still finds too large (its own limit may be lower) is cut further and resent.
    """
    max_request = int(getattr(producer, "config", {}).get("max_request_size", 1_048_576))

    def send_one(dl: DeadLetter, limit: int) -> Any:
        key, value, headers = fitted(dl, limit)
        return producer.send(topic, key=key, value=value, headers=headers)

    def send(letters: list[DeadLetter]) -> None:
        pending = []
        for dl in letters:
            try:
                pending.append((dl, max_request, send_one(dl, max_request)))
            except MessageSizeTooLargeError:  # the estimate was short: cut harder
                pending.append((dl, max_request // 2, send_one(dl, max_request // 2)))
        producer.flush(timeout=timeout_s)
        for dl, limit, fut in pending:
            for _ in range(4):
                try:
                    fut.get(timeout=timeout_s)  # raises if refused: nothing is committed
                    break
                except MessageSizeTooLargeError:  # the broker's or topic's limit is lower
                    limit //= 4
                    fut = send_one(dl, limit)
                    producer.flush(timeout=timeout_s)
            else:
                fut.get(timeout=timeout_s)

    return send

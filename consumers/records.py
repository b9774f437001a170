"""Kafka records as plain data, decoded from either CloudEvents Kafka binding mode.

The CloudEvents SDK fills a missing `time` with the current time when it parses, which would
hide bad input, so the binding is decoded here and validated strictly by `parse_event`.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from consumers.settings import ConsumerSettings
from laer_domain.events import CloudEvent, InvalidEvent, parse_event

STRUCTURED_CONTENT_TYPE = "application/cloudevents+json"


@dataclass(frozen=True)
class RawRecord:
    """What the consumer read: enough to decode it, dead-letter it or park it."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: tuple[tuple[str, bytes], ...] = ()

    @classmethod
    def from_consumer_record(cls, rec: Any) -> RawRecord:
        """Copy a kafka-python ConsumerRecord."""
        return cls(topic=rec.topic, partition=rec.partition, offset=rec.offset, key=rec.key,
                   value=rec.value, headers=tuple((k, v or b"") for k, v in rec.headers or ()))

    def header(self, name: str) -> bytes | None:
        """The last value of a header, matched case-insensitively."""
        found = None
        for k, v in self.headers:
            if k.lower() == name:
                found = v
        return found

    @property
    def size(self) -> int:
        """Bytes of key, value and headers."""
        return (len(self.key or b"") + len(self.value or b"")
                + sum(len(k) + len(v) for k, v in self.headers))

    def origin(self) -> dict[str, Any]:
        """A JSON-safe copy of the record, kept with a parked event for a later dead letter."""
        return {
            "topic": self.topic, "partition": self.partition, "offset": self.offset,
            "key": text_or_none(self.key), "value": (self.value or b"").decode("utf-8", "replace"),
            "headers": headers_as_text(self.headers),
        }


def text_or_none(value: bytes | None) -> str | None:
    """Bytes shown as text (undecodable bytes replaced), None kept."""
    return None if value is None else value.decode("utf-8", "replace")


def headers_as_text(headers: Iterable[tuple[str, bytes]]) -> list[list[str]]:
    """Headers as JSON-safe [name, text] pairs."""
    return [[k, v.decode("utf-8", "replace")] for k, v in headers]


class LazyOrigin(Mapping[str, Any]):
    """`RawRecord.origin()`, built only if something reads it (only parked events keep it)."""

    __slots__ = ("_record", "_origin")

    def __init__(self, record: RawRecord) -> None:
        self._record = record
        self._origin: dict[str, Any] | None = None

    def _value(self) -> dict[str, Any]:
        if self._origin is None:
            self._origin = self._record.origin()
        return self._origin

    def __getitem__(self, key: str) -> Any:
        return self._value()[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._value())

    def __len__(self) -> int:
        return len(self._value())


def _text(value: bytes, name: str) -> str:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidEvent("invalid_encoding", f"{name}: not UTF-8") from None


MAX_JSON_DEPTH = 64  # events nest 5 deep; the parser's own limit moves with the stack
_JSON_STRING = re.compile(rb'"(?:[^"\\]|\\.)*"', re.DOTALL)
_JSON_BRACKET = re.compile(rb"[\[\]{}]")


def _too_deep(value: bytes) -> bool:
    """Whether JSON text nests arrays and objects more than MAX_JSON_DEPTH levels."""
    if value.count(b"[") + value.count(b"{") <= MAX_JSON_DEPTH:
        return False  # the usual case, decided in C
    depth = 0
    for bracket in _JSON_BRACKET.findall(_JSON_STRING.sub(b'""', value)):
        depth += 1 if bracket in (b"[", b"{") else -1
        if depth > MAX_JSON_DEPTH:
            return True
    return False


def _json(value: bytes, name: str) -> Any:
    text = _text(value, name)
    if _too_deep(value):
        raise InvalidEvent("invalid_json", f"{name}: nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text)
    except RecursionError:  # deeper than the parser's stack (a guard: checked above)
        raise InvalidEvent("invalid_json", f"{name}: nested too deeply") from None
    except ValueError as exc:  # JSONDecodeError, or an integer literal over 4,300 digits
        raise InvalidEvent("invalid_json", f"{name}: {exc}") from None


def cloudevent_attributes(rec: RawRecord) -> dict[str, Any]:
    """Attributes plus decoded `data` from a structured or binary mode record."""
    if rec.value is None:
        raise InvalidEvent("empty_record", "record has no value (tombstone)")
    if rec.header("ce_specversion") is not None:
        attrs: dict[str, Any] = {}
        for k, v in rec.headers:
            if k.lower().startswith("ce_"):
                attrs[k[3:].lower()] = _text(v, k)
        content_type = rec.header("content-type")
        if content_type is not None:
            attrs["datacontenttype"] = _text(content_type, "content-type")
            if "json" not in attrs["datacontenttype"]:
                raise InvalidEvent("unsupported_content_type",
                                   f"content-type: {attrs['datacontenttype']!r} is not JSON")
        attrs["data"] = _json(rec.value, "value") if rec.value else None
        return attrs
    content_type = rec.header("content-type")
    if content_type is not None and not _text(content_type, "content-type").startswith(
            STRUCTURED_CONTENT_TYPE):
        raise InvalidEvent("unsupported_content_type",
                           "content-type: neither structured CloudEvents JSON nor ce_* headers")
    body = _json(rec.value, "value")
    if not isinstance(body, dict):
        raise InvalidEvent("schema_violation", "value: a structured CloudEvent is a JSON object")
    return body


def decode(rec: RawRecord, *, family: str, now: datetime, max_bytes: int,
           max_future: timedelta) -> CloudEvent:
    """Validate one record into a CloudEvent or raise InvalidEvent with a reason code."""
    if rec.size > max_bytes:
        raise InvalidEvent("oversized", f"record is {rec.size} bytes, the limit is {max_bytes}")
    attrs = cloudevent_attributes(rec)
    key = _text(rec.key, "key") if rec.key is not None else None
    if key is None:
        raise InvalidEvent("key_mismatch", "record key: missing (it must be the account id)")
    return parse_event(attrs, now=now, max_future=max_future, topic_family=family,
                       record_key=key)


@dataclass(frozen=True)
class RecordDecoder:
    """What the consumer accepts: records of the event topics, within the limits.

    One place for the consumer (a rejected record is dead-lettered) and for `laer dlq
    replay` (a record that would be rejected again is refused).
    """

    families: Mapping[str, str]  # event topic -> the event family it carries
    limits: ConsumerSettings

    def __call__(self, rec: RawRecord, now: datetime) -> CloudEvent:
        """The record's event, or InvalidEvent with a reason code."""
        family = self.families.get(rec.topic)
        if family is None:
            raise InvalidEvent("wrong_topic", f"topic {rec.topic!r} is not an event topic")
        return decode(rec, family=family, now=now, max_bytes=self.limits.max_record_bytes,
                      max_future=self.limits.max_future)

"""Encoding events for Kafka in either CloudEvents binding mode, and publishing them."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal

from laer_domain.events import event_family

Mode = Literal["structured", "binary"]
KafkaRecord = tuple[bytes, bytes, list[tuple[str, bytes]]]


def encode(event: Mapping[str, Any], mode: Mode = "structured") -> KafkaRecord:
    """Key, value and headers of one wire-shaped event (attributes plus `data`)."""
    key = str(event["subject"]).encode()
    if mode == "structured":
        value = json.dumps(event, separators=(",", ":"), default=str).encode()
        return key, value, [("content-type", b"application/cloudevents+json")]
    headers = [(f"ce_{name}", str(val).encode()) for name, val in event.items()
               if name not in ("data", "datacontenttype") and val is not None]
    headers.append(("content-type", b"application/json"))
    value = json.dumps(event.get("data") or {}, separators=(",", ":"), default=str).encode()
    return key, value, headers


def topic_for(event: Mapping[str, Any], topics: Mapping[str, str]) -> str:
    """The topic of an event's family (`topics` maps family -> topic name)."""
    return topics[event_family(str(event["type"]))]


def publish(producer: Any, events: Iterable[Mapping[str, Any]], topics: Mapping[str, str],
            mode: Mode = "structured") -> int:
    """Send events, wait for every acknowledgement, return how many were sent."""
    futures = []
    for event in events:
        key, value, headers = encode(event, mode)
        futures.append(producer.send(topic_for(event, topics), key=key, value=value,
                                     headers=headers))
    producer.flush()
    for fut in futures:
        fut.get(timeout=30)
    return len(futures)


def publish_paced(producer: Any, events: Sequence[Mapping[str, Any]], topics: Mapping[str, str],
                  *, mode: Mode = "structured", rate: float = 0.0, chunk: int = 500,
                  on_chunk: Callable[[int], None] | None = None,
                  stopped: Callable[[], bool] = lambda: False) -> int:
    """Send events in chunks, at most `rate` per second (0 = flat out); returns how many."""
    sent = 0
    started = time.monotonic()
    for i in range(0, len(events), chunk):
        if stopped():
            break
        part = events[i:i + chunk]
        for event in part:
            key, value, headers = encode(event, mode)
            producer.send(topic_for(event, topics), key=key, value=value, headers=headers)
        producer.flush()
        sent += len(part)
        if on_chunk:
            on_chunk(len(part))
        if rate > 0 and (ahead := sent / rate - (time.monotonic() - started)) > 0:
            time.sleep(ahead)
    return sent

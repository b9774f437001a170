"""Records whose JSON breaks the parser itself are bad input (`invalid_json`), in both
CloudEvents binding modes, wherever the trouble sits (issue 12). No broker needed."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest

from consumers.records import RawRecord, RecordDecoder
from consumers.settings import ConsumerSettings
from laer.publish import encode
from laer_domain.events import CloudEvent, InvalidEvent, make_event

NOW = datetime(2026, 3, 2, 12, tzinfo=UTC)
DECODE = RecordDecoder({"t.usage": "usage"}, ConsumerSettings())
EVENT = make_event("laer.usage.active_users", "acme", NOW, {"date": "2026-03-02", "count": 3})
STRUCTURED = (("content-type", b"application/cloudevents+json"),)


def reason(value: bytes, binary: bool) -> str:
    headers = STRUCTURED
    if binary:
        _, _, encoded = encode(EVENT, "binary")
        headers = tuple(encoded)
    with pytest.raises(InvalidEvent) as info:
        DECODE(RawRecord("t.usage", 0, 0, b"acme", value, headers), NOW)
    return info.value.reason


def structured_with(extra: str) -> bytes:
    body = json.dumps(EVENT)
    return (body[:-1] + f', "extension": {extra}}}').encode()


@pytest.mark.parametrize("depth", [64, 1_000, 5_000, 100_000])
def test_json_nested_deeper_than_the_parser_goes_is_invalid_json(depth: int) -> None:
    deep = "[" * depth + "]" * depth
    assert reason(structured_with(deep), binary=False) == "invalid_json"
    data = json.dumps(EVENT["data"])
    assert reason((data[:-1] + f', "deep": {deep}}}').encode(), binary=True) == "invalid_json"


def test_the_nesting_limit_does_not_move_with_the_stack_and_ignores_strings() -> None:
    """64 levels in all are accepted wherever the parser runs; brackets in strings are text."""
    def decode(value: bytes) -> CloudEvent:
        return DECODE(RawRecord("t.usage", 0, 0, b"acme", value, STRUCTURED), NOW)

    assert decode(structured_with("[" * 63 + "]" * 63)).id == EVENT["id"]
    assert decode(structured_with(json.dumps("[" * 5000))).id == EVENT["id"]
    with pytest.raises(InvalidEvent):
        decode(structured_with("[" * 64 + "]" * 64))


def test_an_integer_literal_over_4300_digits_is_invalid_json_even_where_it_is_ignored() -> None:
    huge = "9" * 4301
    assert reason(structured_with(huge), binary=False) == "invalid_json"
    data = json.dumps(EVENT["data"])
    assert reason((data[:-1] + f', "ignored": {huge}}}').encode(), binary=True) == "invalid_json"
    assert reason(json.dumps(EVENT).replace('"count": 3', f'"count": {huge}').encode(),
                  binary=False) == "invalid_json"

"""The CloudEvents envelope: validating incoming events, and writing wire-shaped ones."""

from __future__ import annotations

import builtins
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cache
from typing import Any, Literal, TypeVar

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializeAsAny,
    ValidationError,
    ValidationInfo,
    create_model,
    field_validator,
)

from laer_domain.event_types import EVENT_DATA_MODELS, EventType, event_family
from laer_domain.wire import EventInstant, iso, jsonable, parse_event_instant, storable_text

__all__ = [
    "EVENT_DATA_MODELS",
    "SUBJECT_PATTERN",
    "CloudEvent",
    "EventType",
    "InvalidEvent",
    "event_family",
    "event_json_schemas",
    "make_event",
    "parse_event",
]

SUBJECT_PATTERN = r"^[A-Za-z0-9._:@-]{1,128}$"
_SUBJECT = re.compile(SUBJECT_PATTERN)
MAX_ID_LENGTH = 256  # `id` and `source` are stored in columns of this width
REQUIRED_ATTRIBUTES = ("specversion", "id", "source", "type", "subject", "time")
_M = TypeVar("_M", bound=BaseModel)


class InvalidEvent(ValueError):
    """An event that is bad input; `reason` is a machine code, `message` human text."""

    def __init__(self, reason: str, message: str) -> None:
        """Keep the machine reason and the human message apart."""
        super().__init__(f"{reason}: {message}")
        self.reason = reason
        self.message = message


class CloudEvent(BaseModel):
    """A validated CloudEvents 1.0 event whose `data` is the model for its type."""

    model_config = ConfigDict(frozen=True, extra="ignore")

    specversion: Literal["1.0"] = "1.0"
    id: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    source: str = Field(min_length=1, max_length=MAX_ID_LENGTH)
    type: str
    subject: str = Field(pattern=SUBJECT_PATTERN)
    time: EventInstant
    datacontenttype: str | None = None
    data: SerializeAsAny[BaseModel]

    @field_validator("type")
    @classmethod
    def _known_type(cls, value: str) -> str:
        if value not in EVENT_DATA_MODELS:
            raise ValueError(f"unknown event type {value!r}")
        return value

    @field_validator("data", mode="before")
    @classmethod
    def _typed_data(cls, value: Any, info: ValidationInfo) -> BaseModel:
        model = EVENT_DATA_MODELS.get(str(info.data.get("type", "")))
        if model is None:
            raise ValueError("data cannot be validated without a known type")
        if isinstance(value, model):
            return value
        if isinstance(value, BaseModel):
            value = value.model_dump()
        return model.model_validate({} if value is None else value)

    def payload(self, model: builtins.type[_M]) -> _M:
        """Return `data` as the given payload model (raises TypeError if it is not)."""
        if not isinstance(self.data, model):
            raise TypeError(f"{self.type} data is not {model.__name__}")
        return self.data

    @property
    def key(self) -> tuple[str, str]:
        """Return the dedup identity (source, id)."""
        return (self.source, self.id)

    @property
    def account_id(self) -> str:
        """Return the account id (the subject)."""
        return self.subject


def _describe(exc: ValidationError, prefix: str) -> str:
    err = exc.errors()[0]
    loc = ".".join(str(p) for p in (prefix, *err["loc"]) if p != "")
    return f"{loc}: {err['msg']}" if loc else str(err["msg"])


def _check_envelope(attributes: Mapping[str, Any]) -> None:
    for name in REQUIRED_ATTRIBUTES:
        value = attributes.get(name)
        blank = isinstance(value, str) and not value.strip() and name != "subject"
        if value is None or blank:  # an empty subject is judged by the subject rule
            raise InvalidEvent("missing_attribute", f"required attribute {name!r} is missing")
    for name in ("id", "source", "type", "subject", "specversion"):
        if not isinstance(attributes[name], str):
            raise InvalidEvent("schema_violation", f"{name}: must be a string")
    for name in ("id", "source"):  # any text, but it must fit the ledger and be storable
        value = attributes[name]
        if len(value) > MAX_ID_LENGTH or not storable_text(value):
            raise InvalidEvent(
                f"invalid_{name}",
                f"{name}: must be 1..{MAX_ID_LENGTH} characters of text without NUL or lone "
                "surrogates",
            )
    if attributes["specversion"] != "1.0":
        raise InvalidEvent("schema_violation", "specversion: only CloudEvents 1.0 is accepted")
    if attributes["type"] not in EVENT_DATA_MODELS:
        raise InvalidEvent("unknown_type", f"type: unknown event type {attributes['type']!r}")
    if not _SUBJECT.fullmatch(attributes["subject"]):  # `$` alone lets a final newline by
        raise InvalidEvent(
            "invalid_subject",
            "subject: must be 1..128 characters of letters, digits and ._:@-",
        )


def parse_event(
    attributes: Mapping[str, Any],
    *,
    now: datetime | None = None,
    max_future: timedelta = timedelta(days=1),
    topic_family: str | None = None,
    record_key: str | None = None,
) -> CloudEvent:
    """Validate CloudEvents attributes (with decoded `data`) into a CloudEvent."""
    _check_envelope(attributes)
    event_type: str = attributes["type"]
    try:
        time = parse_event_instant(attributes["time"])
    except ValueError as exc:
        raise InvalidEvent("schema_violation", f"time: {exc}") from None
    raw_data = attributes.get("data")
    if raw_data is not None and not isinstance(raw_data, Mapping):
        raise InvalidEvent("schema_violation", "data: must be a JSON object")
    try:
        data = EVENT_DATA_MODELS[event_type].model_validate(dict(raw_data or {}))
    except ValidationError as exc:
        raise InvalidEvent("schema_violation", _describe(exc, "data")) from None
    content_type = attributes.get("datacontenttype")
    if content_type is not None and not isinstance(content_type, str):
        raise InvalidEvent("schema_violation", "datacontenttype: must be a string")
    if topic_family is not None and event_family(event_type) != topic_family:
        raise InvalidEvent(
            "wrong_topic", f"type: {event_type!r} does not belong on the {topic_family} topic"
        )
    if record_key is not None and record_key != attributes["subject"]:
        raise InvalidEvent("key_mismatch", "subject: differs from the record key")
    if now is not None and time > now + max_future:
        raise InvalidEvent("future_time", f"time: {time.isoformat()} is too far in the future")
    return _checked_event(
        {
            "specversion": "1.0",
            "id": attributes["id"],
            "source": attributes["source"],
            "type": event_type,
            "subject": attributes["subject"],
            "time": time,
            "datacontenttype": content_type,
            "data": data,
        }
    )


_EVENT_FIELDS = frozenset(CloudEvent.model_fields)


def _checked_event(values: dict[str, Any]) -> CloudEvent:
    """A CloudEvent from values `parse_event` already validated, one per field, unvalidated.

    What `CloudEvent(**values)` returns (as after validation, every field is set), without
    running each field's validator a second time; pydantic's `model_construct` is slower.
    """
    event = object.__new__(CloudEvent)
    object.__setattr__(event, "__dict__", values)
    object.__setattr__(event, "__pydantic_fields_set__", set(_EVENT_FIELDS))
    object.__setattr__(event, "__pydantic_extra__", None)
    object.__setattr__(event, "__pydantic_private__", None)
    return event


@cache
def _schemas() -> dict[str, dict[str, Any]]:
    result: dict[str, dict[str, Any]] = {}
    for event_type, model in EVENT_DATA_MODELS.items():
        name = "".join(p.title() for p in event_type.split(".")[-1].split("_")) + "Event"
        fields: dict[str, Any] = {
            "specversion": (Literal["1.0"], ...),
            "id": (str, Field(min_length=1, max_length=MAX_ID_LENGTH)),
            "source": (str, Field(min_length=1, max_length=MAX_ID_LENGTH)),
            "type": (Literal[event_type], ...),
            "subject": (str, Field(pattern=SUBJECT_PATTERN)),
            "time": (EventInstant, ...),
            "datacontenttype": (str | None, None),
            "data": (model, ...),
        }
        envelope = create_model(name, __config__=ConfigDict(extra="allow"), **fields)
        result[event_type] = envelope.model_json_schema()
    return result


def event_json_schemas() -> dict[str, dict[str, Any]]:
    """Return a JSON Schema per event type for the whole CloudEvent."""
    return json.loads(json.dumps(_schemas()))  # type: ignore[no-any-return]


def make_event(
    type: str,
    subject: str,
    time: datetime,
    data: Mapping[str, Any],
    *,
    id: str | None = None,
    source: str = "test",
) -> dict[str, Any]:
    """Build wire-shaped CloudEvents attributes; the id defaults to a content hash."""
    body = {
        "specversion": "1.0",
        "source": source,
        "type": type,
        "subject": subject,
        "time": iso(time),
        "datacontenttype": "application/json",
        "data": jsonable(dict(data)),
    }
    if id is None:
        digest = hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()
        id = f"ev-{digest[:24]}"
    return {"id": id, **body}

"""The wire format of the domain's values: the types events and account state are parsed
into, and `iso`/`jsonable`, which write them back out as JSON."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, BeforeValidator, Field, Strict, WithJsonSchema

_RFC3339 = re.compile(
    r"^\d{4}-\d{2}-\d{2}"
    r"(?:[Tt ]\d{2}:\d{2}:\d{2}(?:\.\d+)?(?:[Zz]|[+-]\d{2}:\d{2}))?$"
)
_DECIMAL = re.compile(r"^[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?$")
_CURRENCY = re.compile(r"^[A-Z]{3}$")


def to_utc(value: datetime) -> datetime:
    """Return an aware datetime normalised to UTC; naive values are rejected."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("datetime must carry a UTC offset")
    return value.astimezone(UTC)


def parse_instant(value: Any) -> datetime:
    """Parse an RFC 3339 timestamp or plain date (midnight UTC) into aware UTC."""
    if isinstance(value, datetime):
        return to_utc(value)
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    if not isinstance(value, str) or not _RFC3339.match(value.strip()):
        raise ValueError("expected an RFC 3339 timestamp or a YYYY-MM-DD date")
    text = value.strip().upper().replace(" ", "T")
    try:
        if "T" not in text:
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        return to_utc(datetime.fromisoformat(text))
    except ValueError as exc:
        raise ValueError(f"invalid RFC 3339 value: {exc}") from None


def iso(value: datetime) -> str:
    """RFC 3339 text of an instant, UTC written as Z (other offsets, or none, as they are)."""
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


def jsonable(value: Any) -> Any:
    """A JSON-native copy: instants as `iso`, dates as YYYY-MM-DD, Decimal as str, models
    as their JSON dump, mappings and sequences item by item."""
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, BaseModel):
        return value.model_dump(mode="json")
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def parse_money(value: Any) -> Decimal:
    """Parse a JSON number or decimal string into a finite Decimal."""
    if isinstance(value, bool):
        raise ValueError("expected a number or decimal string")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, float):
        result = Decimal(repr(value))  # repr keeps the shortest decimal form, not binary noise
    elif isinstance(value, str) and _DECIMAL.match(value.strip()):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError("expected a decimal string") from None
    else:
        raise ValueError("expected a number or decimal string")
    if not result.is_finite():
        raise ValueError("expected a finite number")
    return result


def _currency(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().upper()
        if not _CURRENCY.match(value):
            raise ValueError("expected an ISO 4217 currency code such as EUR")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


UtcDateTime = Annotated[
    datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An aware UTC instant; accepts RFC 3339 or a plain date (midnight UTC)."""

Money = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    Field(ge=0),
    WithJsonSchema(
        {
            "anyOf": [
                {"type": "number", "minimum": 0},
                {"type": "string", "pattern": r"^\+?(\d+(\.\d*)?|\.\d+)$"},
            ]
        }
    ),
]
"""A non-negative amount in major units."""

Number = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]}),
]
"""Any finite number, given as JSON number or decimal string."""

Count = Annotated[int, Strict(), Field(ge=0)]
"""A non-negative integer; strings and floats are rejected."""

Currency = Annotated[
    str,
    BeforeValidator(_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{3}$"}),
]
"""An ISO 4217 currency code, upper-cased."""

NonEmptyStr = Annotated[str, Strict(), Field(min_length=1)]
"""A non-empty string."""

TimeZoneName = Annotated[str, Strict(), AfterValidator(_timezone)]
"""An IANA time zone name."""

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

# An event's instants stay a year inside the calendar, so the rules' arithmetic (term_end +
# grace, a date - the activation window, ...) can never leave it (OverflowError).
EARLIEST_INSTANT = datetime(2, 1, 1, tzinfo=UTC)
LATEST_INSTANT = datetime(9998, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
MAX_AMOUNT = Decimal(10) ** 18  # numbers at or beyond this are no amount, count or score
MAX_COUNT = 2**53 - 1  # the largest integer every JSON reader holds exactly (RFC 8259 6)
MAX_ZONE_NAME = 255
_EMAIL = re.compile(  # one bare addr-spec: dot-atom local part @ domain labels, nothing else
    r"[\w!#$%&'*+/=?^`{|}~-]+(?:\.[\w!#$%&'*+/=?^`{|}~-]+)*"
    r"@[^\W_](?:[\w-]*[^\W_])?(?:\.[^\W_](?:[\w-]*[^\W_])?)*"
)


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
    except (ValueError, OverflowError) as exc:  # overflow: the offset moves it off the calendar
        raise ValueError(f"invalid RFC 3339 value: {exc}") from None


def parse_event_instant(value: Any) -> datetime:
    """`parse_instant`, kept within EARLIEST_INSTANT..LATEST_INSTANT (what events may carry)."""
    instant = parse_instant(value)
    if not EARLIEST_INSTANT <= instant <= LATEST_INSTANT:
        raise ValueError(f"{iso(instant)} is outside years 2..9998")
    return instant


def storable_text(value: str) -> bool:
    """Whether text can be stored as PostgreSQL text (and UTF-8): no NUL, no lone surrogate."""
    if "\x00" in value:
        return False
    if value.isascii():
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


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
    if abs(result) >= MAX_AMOUNT:  # huge exponents overflow the arithmetic of the rules
        raise ValueError("expected a number below 10^18 in magnitude")
    return result


def _currency(value: Any) -> Any:
    if isinstance(value, str):
        value = value.strip().upper()
        if not _CURRENCY.match(value):
            raise ValueError("expected an ISO 4217 currency code such as EUR")
    return value


def _timezone(value: str) -> str:
    if len(value) > MAX_ZONE_NAME:
        raise ValueError(f"a time zone name has at most {MAX_ZONE_NAME} characters")
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError, OSError):  # OSError: a folder ("America")
        raise ValueError(f"unknown IANA time zone {value!r}") from None
    return value


def _text(value: str) -> str:
    if "\x00" in value:  # PostgreSQL text cannot hold it (lone surrogates pydantic refuses)
        raise ValueError("text must not contain NUL characters")
    return value


def _email(value: str) -> str:
    if len(value) > 254 or not _EMAIL.fullmatch(value) or len(value.partition("@")[0]) > 64:
        raise ValueError("expected exactly one e-mail address such as ada@example.com")
    return value


UtcDateTime = Annotated[
    datetime,
    BeforeValidator(parse_instant),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]
"""An aware UTC instant; accepts RFC 3339 or a plain date (midnight UTC)."""

EventInstant = Annotated[
    datetime,
    BeforeValidator(parse_event_instant),
    WithJsonSchema({"type": "string", "format": "date-time",
                    "description": "RFC 3339 or YYYY-MM-DD, within years 2..9998"}),
]
"""An instant an event carries: a `UtcDateTime` within EARLIEST_INSTANT..LATEST_INSTANT."""

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
"""A non-negative amount in major units, below 10^18."""

Number = Annotated[
    Decimal,
    BeforeValidator(parse_money),
    WithJsonSchema({"anyOf": [{"type": "number"}, {"type": "string"}]}),
]
"""Any finite number below 10^18 in magnitude, given as JSON number or decimal string."""

Count = Annotated[int, Strict(), Field(ge=0, le=MAX_COUNT)]
"""A non-negative integer up to 2^53 - 1; strings and floats are rejected."""

Currency = Annotated[
    str,
    BeforeValidator(_currency),
    WithJsonSchema({"type": "string", "pattern": "^[A-Za-z]{3}$"}),
]
"""An ISO 4217 currency code, upper-cased."""

Text = Annotated[str, Strict(), AfterValidator(_text)]
"""A string storable as text (no NUL)."""

NonEmptyStr = Annotated[str, Strict(), Field(min_length=1), AfterValidator(_text)]
"""A non-empty string storable as text."""

EmailAddress = Annotated[str, Strict(), AfterValidator(_email),
                         WithJsonSchema({"type": "string", "format": "email"})]
"""Exactly one bare e-mail address (`local@domain`; no name, list or comment)."""

TimeZoneName = Annotated[str, Strict(), AfterValidator(_timezone)]
"""An IANA time zone name."""

"""The one mapping between domain objects and stored rows, used by both repositories.

Each function gives the columns of one row as a dict: `SqlLifecycleRepository` builds ORM
rows from them (`orm_values`), `BatchRepository` hands them to the bulk writers as they are.
An account's state, an applied event's data and a parked event are serialized by pydantic
once, as `JsonText`, because the batch path writes that text as it is (the ORM path parses it
back: its JSON columns take Python values).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from laer_domain.events import CloudEvent
from laer_domain.model import Account
from laer_domain.signals import HealthChange, Signal, StageChange

Row = dict[str, Any]


class JsonText(str):
    """A value already serialized to JSON text, written as it is into a JSON column."""

    __slots__ = ()


def orm_values(row: Row) -> Row:
    """The row with its `JsonText` values parsed, as the ORM's JSON columns take them."""
    return {name: json.loads(value) if isinstance(value, JsonText) else value
            for name, value in row.items()}


def account_row(account: Account, updated_at: datetime) -> Row:
    """An account row but its version: the state and the columns the read side filters on."""
    health = account.health
    return {
        "id": account.id, "stage": account.stage.value, "stage_since": account.stage_since,
        "owner": account.owner.value,
        "health_score": health.score if health else None,
        "health_band": health.band if health else None,
        "state": JsonText(account.model_dump_json()), "updated_at": updated_at,
    }


def account_from_state(state: Mapping[str, Any]) -> Account:
    """The account a row's `state` holds."""
    return Account.model_validate(state)


def stage_change_row(change: StageChange) -> Row:
    return {"account_id": change.account_id,
            "from_stage": change.from_stage.value if change.from_stage else None,
            "to_stage": change.to_stage.value, "at": change.at, "reason": change.reason,
            "event_id": change.event_id}


def health_change_row(change: HealthChange) -> Row:
    return {"account_id": change.account_id, "at": change.at, "score": change.score,
            "band": change.band, "components": dict(change.components)}


def signal_row(signal: Signal, seq: int) -> Row:
    """A signal as stored; `seq` numbers signals in the order they were stored."""
    return {"id": signal.id, "seq": seq, "account_id": signal.account_id,
            "kind": signal.kind.value, "at": signal.at, "stage": signal.stage.value,
            "evidence": signal.evidence.model_dump(mode="json")}


def outbox_row(signal: Signal, created_at: datetime) -> Row:
    """The signal's entry in the dispatcher's outbox, pending."""
    return {"signal_id": signal.id, "account_id": signal.account_id,
            "kind": signal.kind.value, "status": "pending", "attempts": 0,
            "created_at": created_at}


def applied_event_row(event: CloudEvent, account_id: str) -> Row:
    """An event on its account's timeline."""
    return {"account_id": account_id, "event_id": event.id, "source": event.source,
            "type": event.type, "time": event.time,
            "data": JsonText(event.data.model_dump_json())}


def applied_event_from_row(account_id: str, event_id: str, source: str, type: str,
                           time: datetime, data: Mapping[str, Any]) -> CloudEvent:
    """The event a timeline row holds (what a rebuild of its account replays)."""
    return CloudEvent.model_validate({"id": event_id, "source": source, "type": type,
                                      "subject": account_id, "time": time, "data": data})


def processed_event_row(key: tuple[str, str], account_id: str, processed_at: datetime) -> Row:
    """A dedup ledger entry: the event's (source, id)."""
    source, event_id = key
    return {"source": source, "event_id": event_id, "account_id": account_id,
            "processed_at": processed_at}


def parked_event_row(event: CloudEvent, origin: Mapping[str, Any] | None,
                     parked_at: datetime) -> Row:
    """An event kept until its account lands, with the record it came in (for a dead letter)."""
    return {"account_id": event.account_id, "event_time": event.time,
            "event": JsonText(event.model_dump_json()),
            "origin": dict(origin) if origin else None, "parked_at": parked_at}


def parked_event_from_row(event: Mapping[str, Any]) -> CloudEvent:
    """The event a parked row's `event` holds."""
    return CloudEvent.model_validate(event)

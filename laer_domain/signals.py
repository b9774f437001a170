"""Signals, stage changes and health changes produced by the rules."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
)

from laer_domain.model import Stage
from laer_domain.wire import UtcDateTime


class SignalKind(StrEnum):
    """Kinds of lifecycle signals; each may start a playbook."""

    AccountLanded = "AccountLanded"
    StageChanged = "StageChanged"
    WentLive = "WentLive"
    OutcomeAchieved = "OutcomeAchieved"
    AdoptionStalled = "AdoptionStalled"
    FeatureUnderused = "FeatureUnderused"
    ExpansionOpportunity = "ExpansionOpportunity"
    ChurnRiskRaised = "ChurnRiskRaised"
    RenewalWindowOpened = "RenewalWindowOpened"
    RenewalAtRisk = "RenewalAtRisk"
    Renewed = "Renewed"
    Churned = "Churned"


class RaisedBy(BaseModel):
    """What moved an account's clock past a time rule's instant: an event, or the sweep."""

    model_config = ConfigDict(frozen=True)

    by: Literal["event", "sweep"]
    at: UtcDateTime  # the event's time, or the instant the sweep ran at
    event_id: str | None = None  # the event, when one did

    @classmethod
    def event(cls, event_id: str, at: datetime) -> RaisedBy:
        """The event applied at `at` whose time crossed the instant."""
        return cls(by="event", at=at, event_id=event_id)

    @classmethod
    def sweep(cls, at: datetime) -> RaisedBy:
        """The sweep (daily, or `laer sweep`) run at `at`."""
        return cls(by="sweep", at=at)


class Evidence(BaseModel):
    """Why a signal was raised: the rule, the events and the observed values."""

    model_config = ConfigDict(frozen=True)

    rule: str
    event_ids: tuple[str, ...] = ()
    details: dict[str, Any] = Field(default_factory=dict)
    # a signal no event raised (a time rule): what moved the clock past its instant
    raised_by: RaisedBy | None = None

    @model_serializer(mode="wrap")
    def _without_empty_raised_by(self, handler: SerializerFunctionWrapHandler) -> Any:
        # stored evidence stays as it was for every signal an event raised
        out = handler(self)
        if isinstance(out, dict) and out.get("raised_by") is None:
            out.pop("raised_by", None)
        return out


def signal_id(account_id: str, kind: SignalKind, at: datetime, discriminator: str = "") -> str:
    """Return the deterministic id of a signal."""
    raw = f"{account_id}|{kind.value}|{at.isoformat()}|{discriminator}"
    return "sig-" + hashlib.sha256(raw.encode()).hexdigest()[:32]


class Signal(BaseModel):
    """A lifecycle signal raised for an account at an event-time instant."""

    model_config = ConfigDict(frozen=True)

    id: str
    kind: SignalKind
    account_id: str
    at: UtcDateTime
    stage: Stage
    evidence: Evidence


class StageChange(BaseModel):
    """One stage transition of an account."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    from_stage: Stage | None
    to_stage: Stage
    at: UtcDateTime
    reason: str
    event_id: str | None = None


class HealthChange(BaseModel):
    """A change of an account's health score or band."""

    model_config = ConfigDict(frozen=True)

    account_id: str
    at: UtcDateTime
    score: int
    band: Literal["green", "yellow", "red"]
    components: dict[str, int]

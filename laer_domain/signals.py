"""Signals, stage changes and health changes produced by the rules."""

from __future__ import annotations

import hashlib
from datetime import datetime
from enum import StrEnum
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

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


class Evidence(BaseModel):
    """Why a signal was raised: the rule, the events and the observed values."""

    model_config = ConfigDict(frozen=True)

    rule: str
    event_ids: tuple[str, ...] = ()
    details: dict[str, Any] = Field(default_factory=dict)


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

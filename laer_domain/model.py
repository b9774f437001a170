"""The account aggregate: lifecycle stage, term, goals and bounded rule inputs."""

from __future__ import annotations

from decimal import Decimal
from enum import StrEnum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from laer_domain.payloads import ContactSpec
from laer_domain.wire import UtcDateTime

Contact = ContactSpec


class Stage(StrEnum):
    """Lifecycle stages."""

    LAND = "land"
    ADOPT = "adopt"
    EXPAND = "expand"
    RENEW = "renew"
    CHURNED = "churned"


LIVE_STAGES = frozenset({Stage.LAND, Stage.ADOPT, Stage.EXPAND, Stage.RENEW})

ALLOWED_TRANSITIONS: frozenset[tuple[Stage | None, Stage]] = frozenset(
    {
        (None, Stage.LAND),
        (Stage.CHURNED, Stage.LAND),
        (Stage.LAND, Stage.ADOPT),
        (Stage.ADOPT, Stage.EXPAND),
        (Stage.ADOPT, Stage.RENEW),
        (Stage.EXPAND, Stage.RENEW),
        (Stage.RENEW, Stage.ADOPT),
        *((s, Stage.CHURNED) for s in LIVE_STAGES),
    }
)


class Role(StrEnum):
    """Teams that own or support a stage."""

    SALES = "sales"
    CUSTOMER_SUCCESS = "customer_success"
    SUPPORT = "support"
    MARKETING = "marketing"
    RENEWAL_MANAGER = "renewal_manager"


_ROLES: dict[Stage, tuple[Role, ...]] = {
    Stage.LAND: (Role.SALES,),
    Stage.ADOPT: (Role.CUSTOMER_SUCCESS, Role.SUPPORT),
    Stage.EXPAND: (Role.SALES, Role.MARKETING),
    Stage.RENEW: (Role.RENEWAL_MANAGER, Role.CUSTOMER_SUCCESS),
    Stage.CHURNED: (Role.SALES,),
}


def roles_for(stage: Stage) -> tuple[Role, ...]:
    """Return the teams working a stage, owner first."""
    return _ROLES[stage]


def owner_for(stage: Stage) -> Role:
    """Return the team that owns a stage."""
    return _ROLES[stage][0]


class _State(BaseModel):
    """A value inside an account: frozen, so copies of the account can share it.

    A rule that changes one replaces it (`model_copy(update=...)`); its lists and dicts are
    never changed in place either.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)


class Term(_State):
    """The commercial term currently in force."""

    plan: str
    seats: int
    mrr: Decimal
    currency: str
    start: UtcDateTime
    end: UtcDateTime
    number: int = 1


class Goal(_State):
    """A goal of the current term and whether an outcome reached it."""

    key: str
    target: Decimal
    achieved: bool = False
    achieved_at: UtcDateTime | None = None
    value: Decimal | None = None
    evidence_event_id: str | None = None


class Health(_State):
    """A 0..100 health score with its band and components."""

    score: int = Field(ge=0, le=100)
    band: Literal["green", "yellow", "red"]
    components: dict[str, int]
    at: UtcDateTime


class ChurnRisk(_State):
    """An open churn risk; closes when health is green again or triggers go quiet."""

    since: UtcDateTime
    last_trigger_at: UtcDateTime
    last_rule: str
    rules: list[str] = Field(default_factory=list)


class Cancellation(_State):
    """A cancellation waiting for its effective instant."""

    effective_at: UtcDateTime
    reason: str
    event_id: str


class FeatureStat(_State):
    """Usage of one feature."""

    count: int = 0
    first_used: UtcDateTime
    last_used: UtcDateTime


class Survey(_State):
    """The latest survey answer of a kind."""

    score: int
    at: UtcDateTime
    event_id: str


class Escalation(_State):
    """One ticket escalation, kept while inside the escalation window."""

    at: UtcDateTime
    ticket_id: str
    event_id: str


class HeldOpportunity(_State):
    """An expansion opportunity seen in land/adopt, raised on entering expand."""

    key: str
    rule: str
    seen_at: UtcDateTime
    event_ids: list[str]
    details: dict[str, str | int]


class Account(BaseModel):
    """The lifecycle state of one customer account (bounded in size)."""

    model_config = ConfigDict(extra="forbid")

    id: str
    stage: Stage
    stage_since: UtcDateTime
    owner: Role
    landed_at: UtcDateTime
    clock: UtcDateTime
    wins_back: int = 0
    transitions: int = 0  # stage changes so far; keeps signal ids unique
    risks_opened: int = 0
    term: Term
    goals: list[Goal] = Field(default_factory=list)
    activation_achieved_at: UtcDateTime | None = None
    activation_event_id: str | None = None
    outcome_achieved_at: UtcDateTime | None = None
    contacts: list[Contact] = Field(default_factory=list)
    health: Health | None = None
    churn_risk: ChurnRisk | None = None
    committed_at: UtcDateTime | None = None
    functional_at: UtcDateTime | None = None
    went_live_at: UtcDateTime | None = None
    # last count per ISO date, only the days the activation/drop rules look at
    daily_active_users: dict[str, int] = Field(default_factory=dict)
    escalations: list[Escalation] = Field(default_factory=list)
    open_tickets: dict[str, str] = Field(default_factory=dict)
    failed_payments: int = 0
    surveys: dict[str, Survey] = Field(default_factory=dict)
    feature_usage: dict[str, FeatureStat] = Field(default_factory=dict)
    held_opportunities: list[HeldOpportunity] = Field(default_factory=list)
    # once-per-term (or per-stint) markers so time rules and signals fire once
    fired: list[str] = Field(default_factory=list)
    cancellation: Cancellation | None = None
    churned_at: UtcDateTime | None = None
    churn_reason: str | None = None
    last_event_at: UtcDateTime | None = None
    # (time, id, source) of the latest event on the account's timeline in event-time order;
    # an event that sorts before it, or before `clock`, is late (`laer_domain.resequence`)
    latest: tuple[UtcDateTime, str, str] | None = None

    @property
    def is_live(self) -> bool:
        """Return True unless the account has churned."""
        return self.stage in LIVE_STAGES

    def has_fired(self, marker: str) -> bool:
        """Return True if a once-only marker was already set."""
        return marker in self.fired

    def clone(self) -> Account:
        """A copy the rules may change without touching this account.

        The account's own lists and dicts are copied; what they hold (frozen state values,
        frozen contacts, strings, numbers, instants) is immutable and shared. A new field that
        holds a list or dict must be copied here too (`test_domain_model` checks this).
        """
        return self.model_copy(
            update={
                "goals": list(self.goals),
                "contacts": list(self.contacts),
                "daily_active_users": dict(self.daily_active_users),
                "escalations": list(self.escalations),
                "open_tickets": dict(self.open_tickets),
                "surveys": dict(self.surveys),
                "feature_usage": dict(self.feature_usage),
                "held_opportunities": list(self.held_opportunities),
                "fired": list(self.fired),
            }
        )


def copy_account(account: Account) -> Account:
    """A copy of `account` for the rules to change (`Account.clone`)."""
    return account.clone()

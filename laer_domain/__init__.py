"""Pure LAER lifecycle domain: events, account state, rules, signals and the service."""

from laer_domain.events import (
    EVENT_DATA_MODELS,
    CloudEvent,
    EventType,
    InvalidEvent,
    event_family,
    event_json_schemas,
    make_event,
    parse_event,
)
from laer_domain.model import (
    ALLOWED_TRANSITIONS,
    LIVE_STAGES,
    Account,
    Goal,
    Health,
    Role,
    Stage,
    Term,
    owner_for,
    roles_for,
)
from laer_domain.policy import Policy
from laer_domain.rules import AccountNotLanded, Outcome, apply_event, sweep
from laer_domain.service import (
    HandleResult,
    InMemoryRepository,
    LifecycleRepository,
    LifecycleService,
    in_memory_service,
)
from laer_domain.signals import Evidence, HealthChange, Signal, SignalKind, StageChange

__all__ = [
    "ALLOWED_TRANSITIONS",
    "EVENT_DATA_MODELS",
    "LIVE_STAGES",
    "Account",
    "AccountNotLanded",
    "CloudEvent",
    "EventType",
    "Evidence",
    "Goal",
    "HandleResult",
    "Health",
    "HealthChange",
    "InMemoryRepository",
    "InvalidEvent",
    "LifecycleRepository",
    "LifecycleService",
    "Outcome",
    "Policy",
    "Role",
    "Signal",
    "SignalKind",
    "Stage",
    "StageChange",
    "Term",
    "apply_event",
    "event_family",
    "event_json_schemas",
    "in_memory_service",
    "make_event",
    "owner_for",
    "parse_event",
    "roles_for",
    "sweep",
]

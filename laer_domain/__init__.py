"""Pure LAER lifecycle domain: events, account state, rules, signals and the service.

Names are loaded on first use (PEP 562), so a command that needs one module of the domain,
such as the read side's ISO writer, does not import all of it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
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
        copy_account,
        owner_for,
        roles_for,
    )
    from laer_domain.policy import Policy
    from laer_domain.rules import (
        AccountNotLanded,
        Outcome,
        apply_event,
        apply_event_in_place,
        sweep,
    )
    from laer_domain.service import (
        EventBatch,
        HandleResult,
        InMemoryRepository,
        LifecycleRepository,
        LifecycleService,
        in_memory_service,
    )
    from laer_domain.signals import Evidence, HealthChange, Signal, SignalKind, StageChange

_HOME = {
    "EVENT_DATA_MODELS": "laer_domain.events",
    "CloudEvent": "laer_domain.events",
    "EventType": "laer_domain.events",
    "InvalidEvent": "laer_domain.events",
    "event_family": "laer_domain.events",
    "event_json_schemas": "laer_domain.events",
    "make_event": "laer_domain.events",
    "parse_event": "laer_domain.events",
    "ALLOWED_TRANSITIONS": "laer_domain.model",
    "LIVE_STAGES": "laer_domain.model",
    "Account": "laer_domain.model",
    "Goal": "laer_domain.model",
    "Health": "laer_domain.model",
    "Role": "laer_domain.model",
    "Stage": "laer_domain.model",
    "Term": "laer_domain.model",
    "copy_account": "laer_domain.model",
    "owner_for": "laer_domain.model",
    "roles_for": "laer_domain.model",
    "Policy": "laer_domain.policy",
    "AccountNotLanded": "laer_domain.rules",
    "Outcome": "laer_domain.rules",
    "apply_event": "laer_domain.rules",
    "apply_event_in_place": "laer_domain.rules",
    "sweep": "laer_domain.rules",
    "EventBatch": "laer_domain.service",
    "HandleResult": "laer_domain.service",
    "InMemoryRepository": "laer_domain.service",
    "LifecycleRepository": "laer_domain.service",
    "LifecycleService": "laer_domain.service",
    "in_memory_service": "laer_domain.service",
    "Evidence": "laer_domain.signals",
    "HealthChange": "laer_domain.signals",
    "Signal": "laer_domain.signals",
    "SignalKind": "laer_domain.signals",
    "StageChange": "laer_domain.signals",
}


def __getattr__(name: str) -> Any:
    """Import the module that holds `name` the first time someone asks for it."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'laer_domain' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value


__all__ = [
    "ALLOWED_TRANSITIONS",
    "EVENT_DATA_MODELS",
    "LIVE_STAGES",
    "Account",
    "AccountNotLanded",
    "CloudEvent",
    "EventBatch",
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
    "apply_event_in_place",
    "copy_account",
    "event_family",
    "event_json_schemas",
    "in_memory_service",
    "make_event",
    "owner_for",
    "parse_event",
    "roles_for",
    "sweep",
]

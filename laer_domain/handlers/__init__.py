"""Per-event-type rules for a live account, one module per event family."""

from __future__ import annotations

from laer_domain.handlers.billing import BILLING, goals_from
from laer_domain.handlers.support import SUPPORT
from laer_domain.handlers.usage import USAGE
from laer_domain.lifecycle import Handler

HANDLERS: dict[str, Handler] = {**BILLING, **USAGE, **SUPPORT}

__all__ = ["HANDLERS", "Handler", "goals_from"]

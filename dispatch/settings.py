"""The dispatcher's own settings: how often it looks and how much it takes at once."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PrefectSettings(BaseModel):
    """How the dispatcher paces itself."""

    dispatch_batch: int = Field(default=500, gt=0, description="signals per transaction")
    dispatch_interval_s: float = Field(default=0.5, gt=0)
    dispatch_attempts: int = Field(default=5, ge=1,
                                   description="tries before a signal is dispatch_failed")

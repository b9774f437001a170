"""The dispatcher's own settings: how it reaches Prefect and how hard it pushes."""

from __future__ import annotations

from pydantic import BaseModel, Field


class PrefectSettings(BaseModel):
    """How the dispatcher reaches Prefect."""

    api_url: str | None = None
    dispatch_batch: int = Field(default=20, gt=0)
    dispatch_interval_s: float = Field(default=1.0, gt=0)
    dispatch_concurrency: int = Field(default=1, ge=1, le=32,
                                      description="most run creations in flight")

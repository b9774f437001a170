"""The database URLs laer runs on, as a pydantic type that settings classes share."""

from __future__ import annotations

from typing import Annotated

from pydantic import AfterValidator


def known_database(url: str) -> str:
    """`url` itself if it names a database laer supports (SQLite or PostgreSQL)."""
    if not url.startswith(("sqlite", "postgresql")):
        raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
    return url


DatabaseUrl = Annotated[str, AfterValidator(known_database)]

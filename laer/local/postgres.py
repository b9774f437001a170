"""The local PostgreSQL of tests and benchmarks: emptied between runs."""

from __future__ import annotations

from sqlalchemy import create_engine, text


def reset_postgres(url: str) -> None:
    """Drop every table so a run starts from an empty schema."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("drop schema public cascade"))
        conn.execute(text("create schema public"))
    engine.dispose()

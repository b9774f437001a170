"""Typed settings for every process, from the environment (`LAER_` prefix, `__` nesting)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import SecretStr, ValidationError, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.settings import ConsumerSettings, KafkaSettings
from dispatch.settings import PrefectSettings
from flows.kit.settings import SmtpSettings

__all__ = ["ConsumerSettings", "KafkaSettings", "PrefectSettings", "Settings", "SettingsError",
           "SmtpSettings", "load_settings"]


class Settings(BaseSettings):
    """All settings; environment variables such as `LAER_DATABASE_URL`, `LAER_KAFKA__GROUP_ID`."""

    model_config = SettingsConfigDict(env_prefix="LAER_", env_nested_delimiter="__",
                                      extra="ignore")

    database_url: str = "sqlite:///.laer/laer.db"
    state_dir: Path = Path(".laer")
    kafka: KafkaSettings = KafkaSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    prefect: PrefectSettings = PrefectSettings()
    smtp: SmtpSettings = SmtpSettings()
    webhook_secret: SecretStr = SecretStr("change-me")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one object per line (time, level, logger, message, exception) for log shippers
    log_format: Literal["text", "json"] = "text"

    @field_validator("database_url")
    @classmethod
    def _known_database(cls, value: str) -> str:
        if not value.startswith(("sqlite", "postgresql")):
            raise ValueError("must be a sqlite:/// or postgresql+psycopg:// URL")
        return value


class SettingsError(SystemExit):
    """Start-up stops here, naming each bad setting and why."""


def load_settings() -> Settings:
    """Read settings once at start-up, turning validation errors into a readable exit."""
    try:
        return Settings()
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            name = "LAER_" + "__".join(str(p) for p in err["loc"]).upper()
            lines.append(f"  {name}: {err['msg']} (got {err.get('input')!r})")
        raise SettingsError("invalid setting(s):\n" + "\n".join(lines)) from None

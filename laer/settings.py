"""Typed settings for every process, from the environment (`LAER_` prefix, `__` nesting)."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from consumers.settings import ConsumerSettings, KafkaSettings
from dispatch.settings import PrefectSettings
from flows.kit.settings import SmtpSettings
from laer_domain.policy import Policy
from persistence.database_url import DatabaseUrl, DbTimeouts

__all__ = ["ConsumerSettings", "KafkaSettings", "PrefectSettings", "Settings", "SettingsError",
           "PolicySettings", "SmtpSettings", "load_policy", "load_settings"]


class Settings(BaseSettings):
    """All settings; environment variables such as `LAER_DATABASE_URL`, `LAER_KAFKA__GROUP_ID`."""

    model_config = SettingsConfigDict(env_prefix="LAER_", env_nested_delimiter="__",
                                      extra="ignore")

    database_url: DatabaseUrl = "sqlite:///.laer/laer.db"
    # PostgreSQL only (SQLite keeps its 30 s busy timeout): a lock wait or statement past its
    # limit fails, and the consumer retries its batch; keep the lock wait well under the
    # consumer's 300 s max_poll_interval
    db_connect_timeout_s: int = Field(default=10, ge=1)
    db_lock_timeout_s: float = Field(default=30.0, gt=0)
    db_statement_timeout_s: float = Field(default=120.0, gt=0)
    # accounts per sweep transaction (each locked while its chunk is swept)
    sweep_chunk_size: int = Field(default=200, ge=1)
    state_dir: Path = Path(".laer")
    kafka: KafkaSettings = KafkaSettings()
    consumer: ConsumerSettings = ConsumerSettings()
    prefect: PrefectSettings = PrefectSettings()
    smtp: SmtpSettings = SmtpSettings()
    webhook_secret: SecretStr = SecretStr("change-me")
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json: one object per line (time, level, logger, message, exception) for log shippers
    log_format: Literal["text", "json"] = "text"

    def db_timeouts(self) -> DbTimeouts:
        """The PostgreSQL session limits these settings describe."""
        return DbTimeouts(self.db_connect_timeout_s, self.db_lock_timeout_s,
                          self.db_statement_timeout_s)


class PolicySettings(BaseSettings, Policy):
    """The domain's thresholds, each overridable as `LAER_POLICY_<NAME>` (e.g. GRACE_DAYS)."""

    model_config = SettingsConfigDict(env_prefix="LAER_POLICY_", frozen=True, extra="forbid")


class SettingsError(SystemExit):
    """Start-up stops here, naming each bad setting and why."""


def _shown(name: str, value: object) -> str:
    """A rejected value as start-up may print it: secrets and URL passwords masked."""
    if any(word in name for word in ("PASSWORD", "SECRET")):
        return "'***'"
    return repr(re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1***@", str(value)))


def _invalid(exc: ValidationError, prefix: str) -> SettingsError:
    lines = []
    for err in exc.errors():
        name = prefix + "__".join(str(p) for p in err["loc"]).upper()
        lines.append(f"  {name}: {err['msg']} (got {_shown(name, err.get('input'))})")
    return SettingsError("invalid setting(s):\n" + "\n".join(lines))


def load_settings() -> Settings:
    """Read settings once at start-up, turning validation errors into a readable exit."""
    try:
        return Settings()
    except ValidationError as exc:
        raise _invalid(exc, "LAER_") from None


def load_policy() -> Policy:
    """Read the domain's thresholds at start-up; a bad override stops it, naming the variable."""
    try:
        return PolicySettings()
    except ValidationError as exc:
        raise _invalid(exc, "LAER_POLICY_") from None

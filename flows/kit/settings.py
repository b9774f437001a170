"""The flows' settings from the environment: the database, SMTP and webhook secret (`LAER_`),
the playbooks' timing and gate (`LAER_PLAYBOOK_`)."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

from pydantic import BaseModel, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict

from laer_domain.outreach import OutreachPolicy
from persistence.database_url import DatabaseUrl


class SmtpSettings(BaseModel):
    """Outbound email."""

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    sender: str = "success@laer.local"
    username: str | None = None
    password: SecretStr | None = None


class FlowSettings(BaseSettings):
    """What a flow run connects to, from the variables `laer` itself reads (`LAER_DATABASE_URL`,
    `LAER_SMTP__HOST`, `LAER_WEBHOOK_SECRET`, ...), so a worker needs no settings of its own."""

    model_config = SettingsConfigDict(env_prefix="LAER_", env_nested_delimiter="__",
                                      extra="ignore")

    database_url: DatabaseUrl = "sqlite:///.laer/laer.db"
    smtp: SmtpSettings = SmtpSettings()
    webhook_secret: SecretStr = SecretStr("change-me")


class PlaybookSettings(BaseSettings):
    """Timing and gate settings of the playbooks, e.g. `LAER_PLAYBOOK_DAY_SECONDS=5`."""

    model_config = SettingsConfigDict(env_prefix="LAER_PLAYBOOK_", extra="ignore")

    # Length of one playbook "day" in seconds; lower it to compress time in demos and tests.
    day_seconds: float = Field(default=86400.0, gt=0)
    quiet_start: time = time(20, 0)
    quiet_end: time = time(8, 0)
    frequency_cap: int = Field(default=2, ge=1)
    frequency_window_days: float = Field(default=7.0, gt=0)
    # Where messages for contacts that prefer the "webhook" channel are POSTed (signed).
    webhook_url: str | None = None
    # A fixed "now" for the gate and recorded times (tests); unset means the wall clock.
    clock: datetime | None = None
    win_back_cooldown_days: float = Field(default=60.0, ge=0)

    def days(self, n: float) -> timedelta:
        """`n` playbook days as a real duration."""
        return timedelta(seconds=n * self.day_seconds)

    def now(self) -> datetime:
        """The gate's clock."""
        if self.clock is None:
            return datetime.now(UTC)
        return self.clock if self.clock.tzinfo else self.clock.replace(tzinfo=UTC)

    def outreach_policy(self) -> OutreachPolicy:
        """The outreach gate policy these settings describe."""
        channels = {"email", "webhook"} if self.webhook_url else {"email"}
        return OutreachPolicy(quiet_start=self.quiet_start, quiet_end=self.quiet_end,
                              frequency_cap=self.frequency_cap,
                              frequency_window=self.days(self.frequency_window_days),
                              available_channels=frozenset(channels))


def playbook_settings() -> PlaybookSettings:
    """Read the playbook settings (cheap; re-read per run so tests can change them)."""
    return PlaybookSettings()

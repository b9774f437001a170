"""The flows' settings from the environment: the database, SMTP and webhook secret (`LAER_`),
the playbooks' timing, gate and delivery retries (`LAER_PLAYBOOK_`)."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, SecretStr, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from flows.kit import clock
from laer_domain.outreach import OutreachPolicy
from persistence.database_url import DatabaseUrl, DbTimeouts

DEFAULT_WEBHOOK_SECRET = "change-me"


class UnsafeSettings(RuntimeError):
    """A setting that must not be used outside the local demo (start-up stops on it)."""


class SmtpSettings(BaseModel):
    """Outbound email: the relay, its TLS mode and the login."""

    host: str = "127.0.0.1"
    port: int = Field(default=8025, ge=1, le=65535)
    sender: str = "success@laer.local"
    username: str | None = None
    password: SecretStr | None = None
    # none: plain SMTP; starttls: upgrade the connection before anything else; ssl: SMTPS.
    security: Literal["none", "starttls", "ssl"] = "none"
    # A password over a connection without TLS has to be asked for by name.
    allow_plain_login: bool = False
    cafile: Path | None = None  # CA bundle to trust for the relay; unset: the system's
    timeout_s: float = Field(default=30.0, gt=0)

    @model_validator(mode="after")
    def _login_only_over_tls(self) -> SmtpSettings:
        if self.username and self.security == "none" and not self.allow_plain_login:
            raise ValueError("a login (USERNAME) needs SECURITY starttls or ssl; set "
                             "ALLOW_PLAIN_LOGIN=true to send the password in clear anyway")
        return self


class FlowSettings(BaseSettings):
    """What a flow run connects to, from the variables `laer` itself reads (`LAER_DATABASE_URL`,
    `LAER_SMTP__HOST`, `LAER_WEBHOOK_SECRET`, ...), so a worker needs no settings of its own."""

    model_config = SettingsConfigDict(env_prefix="LAER_", env_nested_delimiter="__",
                                      extra="ignore")

    database_url: DatabaseUrl = "sqlite:///.laer/laer.db"
    # The same LAER_DB_* limits as laer's own engines (see laer/settings.py).
    db_connect_timeout_s: int = Field(default=10, ge=1)
    db_lock_timeout_s: float = Field(default=30.0, gt=0)
    db_statement_timeout_s: float = Field(default=120.0, gt=0)
    smtp: SmtpSettings = SmtpSettings()
    # `whsec_<base64>` as Standard Webhooks gives them out, or any other text (its UTF-8).
    webhook_secret: SecretStr = SecretStr(DEFAULT_WEBHOOK_SECRET)
    # Set by `laer up` (LAER_DEMO=1): the local demo may sign with the default secret.
    demo: bool = False

    def db_timeouts(self) -> DbTimeouts:
        """The PostgreSQL session limits of the flows' engine."""
        return DbTimeouts(self.db_connect_timeout_s, self.db_lock_timeout_s,
                          self.db_statement_timeout_s)

    def webhook_key(self) -> str:
        """The webhook secret; refuses the default one outside the local demo."""
        secret = self.webhook_secret.get_secret_value()
        if secret == DEFAULT_WEBHOOK_SECRET and not self.demo:
            raise UnsafeSettings(
                "refusing to sign webhooks with the default LAER_WEBHOOK_SECRET "
                f"({DEFAULT_WEBHOOK_SECRET!r}): set a secret of your own (e.g. whsec_ and 32 "
                "random bytes in base64), or LAER_DEMO=1 for the local demo")
        return secret


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
    # Reports (Prefect artifacts) show recipients as j***@example.com unless this is set.
    show_recipients: bool = False
    # A delivery that fails for a transient reason is tried again after `delivery_backoff_s`,
    # doubling up to `delivery_backoff_max_s` (playbook seconds, so LAER_PLAYBOOK_DAY_SECONDS
    # compresses them too), and is `failed` after `delivery_attempts` tries in all.
    delivery_attempts: int = Field(default=12, ge=1)
    delivery_backoff_s: float = Field(default=60.0, gt=0)
    delivery_backoff_max_s: float = Field(default=6 * 3600.0, gt=0)

    def days(self, n: float) -> timedelta:
        """`n` playbook days as a real duration."""
        return timedelta(seconds=n * self.day_seconds)

    def playbook_seconds(self, n: float) -> timedelta:
        """`n` seconds of playbook time as a real duration."""
        return timedelta(seconds=n * self.day_seconds / 86400)

    def retry_delay(self, attempts: int) -> timedelta:
        """How long to wait after the `attempts`-th failed try of a delivery."""
        backoff = self.delivery_backoff_s * 2 ** min(max(attempts - 1, 0), 32)
        return self.playbook_seconds(min(backoff, self.delivery_backoff_max_s))

    def now(self) -> datetime:
        """The gate's clock: the fixed `clock` if set, else the machinery's (see clock.py)."""
        if self.clock is None:
            return clock.now()
        return self.clock if self.clock.tzinfo else self.clock.replace(tzinfo=UTC)

    def outreach_policy(self) -> OutreachPolicy:
        """The outreach gate policy these settings describe."""
        channels = {"email", "webhook"} if self.webhook_url else {"email"}
        return OutreachPolicy(quiet_start=self.quiet_start, quiet_end=self.quiet_end,
                              frequency_cap=self.frequency_cap,
                              frequency_window=self.days(self.frequency_window_days),
                              available_channels=frozenset(channels))


def event_time_settings(overrides: Mapping[str, Any] | None = None) -> PlaybookSettings:
    """Playbook settings for a simulated clock: the environment's with `overrides`, a
    playbook day a day of event time, and no fixed gate clock (the simulated one rules)."""
    return PlaybookSettings(**{**(overrides or {}), "day_seconds": 86400.0, "clock": None})


_given: ContextVar[PlaybookSettings | None] = ContextVar("laer_playbook_settings", default=None)


@contextmanager
def using_playbook_settings(settings: PlaybookSettings) -> Iterator[PlaybookSettings]:
    """Give every step run in this block `settings` instead of the environment's (a backtest's
    overrides)."""
    token = _given.set(settings)
    try:
        yield settings
    finally:
        _given.reset(token)


_PREFIX = "LAER_PLAYBOOK_"
_cached: tuple[tuple[tuple[str, str], ...], PlaybookSettings] | None = None
_cache_lock = threading.Lock()


def _from_environment() -> PlaybookSettings:
    # Building them costs ~2 ms; scanning the environment a few µs. Same `LAER_PLAYBOOK_*`
    # variables, same settings (they are only read, never changed in place).
    global _cached
    env = tuple(sorted((k, v) for k, v in os.environ.items()
                       if k[:len(_PREFIX)].upper() == _PREFIX))
    with _cache_lock:
        if _cached is None or _cached[0] != env:
            _cached = (env, PlaybookSettings())
        return _cached[1]


def playbook_settings() -> PlaybookSettings:
    """The playbook settings, read once per step (so tests can change them between steps)."""
    from flows.kit.current import current_step

    given = _given.get()
    if given is not None:
        return given
    here = current_step()
    if here is None:
        return _from_environment()
    if here.settings is None:  # one step sees one set of settings throughout
        here.settings = _from_environment()
    assert isinstance(here.settings, PlaybookSettings)
    return here.settings

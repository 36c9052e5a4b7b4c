"""Configuration, read once from the environment (pydantic-settings) and passed in."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, Literal

import platformdirs
from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from app.domain.delivery_schedule import DEFAULT_SCHEDULE, parse_schedule

DEFAULT_MAX_EVENT_BYTES = 64 * 1024


def _default_data_dir() -> Path:
    return Path(platformdirs.user_data_dir("dealledger"))


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="DEALLEDGER_", extra="ignore")

    # The standard `postgresql://user:password@host:port/dbname` form; unset means embedded.
    database_url: str | None = Field(default=None, validation_alias="DATABASE_URL")
    database_read_url: str | None = Field(default=None, validation_alias="DATABASE_READ_URL")
    """A read replica for the read-only routes (lists, analytics, reports, pages)."""
    # Optional: a role that owns the schema, for migrations; DATABASE_URL's role then gets
    # only what the service needs (no UPDATE/DELETE/TRUNCATE on events).
    owner_database_url: str | None = None
    data_dir: Path = Field(default_factory=_default_data_dir)
    # Connections a process keeps (opened as needed, up to this), plus half again (at least
    # 2) for bursts. Past what it keeps, each request opens and closes a connection of its
    # own: 16 concurrent commands on a pool of 10 spent a third of their time connecting.
    pool_size: int = Field(default=20, ge=1)
    # Anonymous requests act as admin: for local experiments only (serve --dev warns loudly).
    dev_mode: bool = False
    key_cache_seconds: float = Field(default=5.0, ge=0)
    """How long a process trusts an API key it looked up: a revocation made in another
    process takes effect here within this (0: look every key up on every request)."""
    # Request bodies over these are 413, checked before parsing (POST /v1/events has its own).
    max_body_bytes: int = Field(default=1024 * 1024, ge=1024)
    max_batch_body_bytes: int = Field(default=10 * 1024 * 1024, ge=1024)
    # The encoded size of one event (a command's, or one CloudEvent's): over it is 413.
    max_event_bytes: int = Field(default=DEFAULT_MAX_EVENT_BYTES, ge=1024)
    # serve runs the projections in-process unless told otherwise (--no-projector).
    run_projector: bool = True
    # How long a read with min_position waits for projections before answering 503.
    read_wait_seconds: float = 2.0
    # Events per projection transaction while following, and while rebuilding.
    projection_batch_size: int = Field(default=1000, ge=1)
    rebuild_batch_size: int = Field(default=5000, ge=1)
    rebuild_workers: int = Field(default=0, ge=0)
    """Processes folding deals in `dealledger rebuild` (0: one per core)."""
    # Deals whose state and last hash a process keeps between commands (0: read every time).
    head_cache_size: int = Field(default=10_000, ge=0)
    # Flags: how often the projector re-checks open deals for flags time alone raises.
    flag_sweep_seconds: float = Field(default=60.0, gt=0)
    slow_warning_ratio: float = Field(default=1.5, gt=0)
    slow_critical_ratio: float = Field(default=2.0, gt=0)
    inactive_days: float = Field(default=7, gt=0)
    inactive_days_by_stage: dict[str, float] = Field(default_factory=dict)
    stuck_blocker_days: float = Field(default=14, gt=0)
    ghosting_multiplier: float = Field(default=3.0, gt=0)
    ghosting_floor_days: float = Field(default=2.0, ge=0)
    # How far in the future (database clock) an `occurred_at` or CloudEvent `time` may lie.
    max_clock_skew_seconds: float = Field(default=300, ge=0)
    # The verifiable log: the sequencer signs a checkpoint of its Merkle tree every so many
    # events or seconds, whichever comes first, with an Ed25519 key kept out of the database:
    # DEALLEDGER_SIGNING_KEY (PRIVATE+KEY+name+id+key), else a key file under data_dir.
    checkpoint_every_events: int = Field(default=1000, ge=1)
    checkpoint_every_seconds: float = Field(default=60.0, gt=0)
    signing_key: SecretStr | None = None
    log_origin: str = Field(default="dealledger.local/log", pattern=r"^[^\s+]+$")
    # Deal-size bands for analytics: upper bounds of each band but the last (amounts).
    # Pipeline health (GET /v1/pipeline/health): when the pipeline as a whole is unhealthy.
    health_concentration_share: float = Field(default=0.40, gt=0, le=1)
    health_stale_days: float = Field(default=30, gt=0)
    health_stale_share: float = Field(default=0.30, gt=0, le=1)
    health_dead_days: float = Field(default=60, gt=0)
    size_bands: list[int] = Field(default_factory=lambda: [10_000, 50_000, 250_000])
    # Outbound webhooks: plain http and non-public addresses are refused unless allowed here.
    webhooks_allow_http: bool = False
    webhooks_allowed_hosts: Annotated[tuple[str, ...], NoDecode] = ()
    webhooks_retry_schedule: Annotated[tuple[float, ...], NoDecode] = DEFAULT_SCHEDULE
    webhooks_timeout_seconds: float = Field(default=15.0, gt=0)
    # How long a worker holds a delivery it sends: longer than the timeout, so a live worker
    # never loses one mid-send; a dead worker's delivery comes due again after it.
    webhooks_lease_seconds: float = Field(default=35.0, gt=0)
    # Deliver from this process (several processes may: they never send one delivery twice).
    webhooks_deliver: bool = True
    webhooks_concurrency: int = Field(default=16, ge=1)
    webhooks_disable_after_days: float = Field(default=5.0, gt=0)
    webhooks_max_response_bytes: int = Field(default=4096, ge=0)
    # The base of the `link` to a deal in webhook payloads.
    public_url: str = "http://127.0.0.1:8000"
    log_format: Literal["json", "text"] = "json"

    @field_validator("webhooks_allowed_hosts", mode="before")
    @classmethod
    def _comma_separated(cls, value: Any) -> Any:
        if isinstance(value, str):
            return tuple(part.strip().lower() for part in value.split(",") if part.strip())
        return value

    @field_validator("webhooks_retry_schedule", mode="before")
    @classmethod
    def _schedule(cls, value: Any) -> Any:
        return parse_schedule(value) if isinstance(value, str) else value

    @model_validator(mode="after")
    def _lease_outlasts_a_send(self) -> Settings:
        if self.webhooks_lease_seconds <= self.webhooks_timeout_seconds:
            raise ValueError("DEALLEDGER_WEBHOOKS_LEASE_SECONDS must exceed the timeout")
        return self


def load_settings() -> Settings:
    """Settings from the environment (DATABASE_URL, DEALLEDGER_*)."""
    return Settings()

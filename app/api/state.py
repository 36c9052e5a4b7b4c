"""What the lifespan builds once per process and every request uses, typed."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from app.domain.flags import FlagRules
from app.events.notes import Verifier
from app.events.pipelines import PipelineVersions
from app.events.store import EventStore
from app.keys import KeyCache
from app.service.heads import HeadCache
from app.settings import Settings

STATE_KEY = "services"


@dataclass(frozen=True)
class AppState:
    settings: Settings
    engine: AsyncEngine
    store: EventStore
    heads: HeadCache
    """Deal heads shared by the requests of this process (see HeadCache)."""
    flag_rules: FlagRules
    verifier: Verifier
    """The public half of the key the sequencer signs checkpoints with."""
    pipelines: PipelineVersions
    """Pipeline versions read from the log so far (versions never change: safe to share)."""
    key_cache: KeyCache = field(default_factory=KeyCache)
    """API keys found recently (see KeyCache: a revocation elsewhere within its ttl)."""
    read_engine: AsyncEngine | None = None
    """DATABASE_READ_URL's (a read replica) for read-only routes; None: `engine`."""

    @property
    def reads(self) -> AsyncEngine:
        return self.read_engine or self.engine


def app_state(state: Mapping[str, Any]) -> AppState:
    """The AppState in an ASGI scope's lifespan state (what the lifespan yielded)."""
    services = state.get(STATE_KEY)
    if not isinstance(services, AppState):
        raise RuntimeError("the app's lifespan has not run: serve it with an ASGI server")
    return services

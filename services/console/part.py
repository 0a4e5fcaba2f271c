"""The console wired onto a runtime: its session store; the pages use the other parts'
services, so it is started after them (services/embedded.py)."""

from __future__ import annotations

from typing import Any

from services.console.api import router
from services.console.sessions import SessionStore
from shared.app import Runtime
from shared.settings import ConsoleSettings


class ConsolePart:
    name = "console"
    router = router

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = ConsoleSettings(**(overrides or {}))

    async def start(self, runtime: Runtime) -> None:
        runtime.app_state.console_sessions = SessionStore(
            runtime.redis, runtime.keys, self.settings.console_session_ttl_s)

    async def stop(self) -> None:
        """Sessions live in valkey with their expiry: nothing to close here."""

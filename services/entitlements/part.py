"""Entitlements wired onto a runtime (its routes and jobs arrive with its issue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.app import Runtime
from shared.settings import EntitlementsSettings


class EntitlementsPart:
    name = "entitlements"
    router = APIRouter(tags=["entitlements"])

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = EntitlementsSettings(**(overrides or {}))

    async def start(self, runtime: Runtime) -> None:
        return None

    async def stop(self) -> None:
        return None

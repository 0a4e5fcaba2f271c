"""Invoicing wired onto a runtime (its routes and jobs arrive with its issue)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from shared.app import Runtime
from shared.settings import InvoicingSettings


class InvoicingPart:
    name = "invoicing"
    router = APIRouter(tags=["invoicing"])

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        self.settings = InvoicingSettings(**(overrides or {}))

    async def start(self, runtime: Runtime) -> None:
        return None

    async def stop(self) -> None:
        return None

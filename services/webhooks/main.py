"""The webhooks service as its own process, configured by the environment alone (docs/api.md
"Running it"):

    uvicorn --factory services.webhooks.main:app --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

from fastapi import FastAPI

from services.webhooks.part import WebhooksPart
from shared.app import standalone_app


def app() -> FastAPI:
    return standalone_app(WebhooksPart())

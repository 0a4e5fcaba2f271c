"""The invoicing service as its own process, configured by the environment alone (docs/api.md
"Running it"):

    uvicorn --factory services.invoicing.main:app --host 0.0.0.0 --port 8000
"""

from __future__ import annotations

from fastapi import FastAPI

from services.invoicing.part import InvoicingPart
from shared.app import standalone_app


def app() -> FastAPI:
    return standalone_app(InvoicingPart())

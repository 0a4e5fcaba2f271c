"""Invoicing routes (docs/api.md, Invoicing): thin — parse, authorize, delegate to the service.

Roles (docs/api.md): admin runs billing and issues credit notes; finance reads, exports and sees
upcoming invoices; dashboard reads invoices. A tenant-limited key sees only its tenant (404).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Header, Request, Response
from fastapi.responses import JSONResponse

from services.invoicing.announce import api_actor
from services.invoicing.answers import BillingRun, Invoice, InvoicePage, UpcomingInvoice
from services.invoicing.documents import to_csv
from services.invoicing.models import BillingRunRequest, CreditNoteRequest
from services.invoicing.service import InvoicingService
from shared.app import state_of
from shared.audit import audit
from shared.auth import AdminKey, Principal, Role, require
from shared.errors import NotAcceptable
from shared.negotiation import preferred
from shared.observability import BILLING_RUNS
from shared.openapi import answers, errors
from shared.times import parse_day

router = APIRouter(tags=["invoicing"])

FinanceKey = Annotated[Principal, Depends(require(Role.FINANCE))]
ReaderKey = Annotated[Principal, Depends(require(Role.FINANCE, Role.DASHBOARD))]


Invoicing = Annotated[InvoicingService, Depends(state_of("invoicing"))]

# Routes answering a dict take `response_model=Any`: FastAPI renders the dict exactly as it
# did with the `dict[str, Any]` it inferred, and the empty schema leaves room for the typed
# one `answers` documents (a response model would filter and reorder the stored documents).
CSV = {"text/csv": {"schema": {"type": "string"}}}


@router.post("/v1/billing-runs", response_model=Any,
             responses=answers(BillingRun, 400, 404, 422))
async def billing_run(body: BillingRunRequest, principal: AdminKey,
                      service: Invoicing) -> dict[str, Any]:
    day = None if body.date is None else parse_day(body.date, "date")
    if body.tenant is not None:
        principal.ensure_tenant(body.tenant)
    # A tenant's admin key bills its own tenant, never the platform.
    run = await service.billing_run(day, body.tenant or principal.tenant)
    BILLING_RUNS.labels("api").inc()
    audit("billing_run", principal, tenant=body.tenant or principal.tenant, date=run["date"],
          issued=run["issued"], skipped=run["skipped"])
    return run


@router.get("/v1/invoices", response_model=Any, responses=answers(InvoicePage, 404, 422))
async def list_invoices(principal: ReaderKey, service: Invoicing, month: str | None = None,
                        tenant: str | None = None, status: str | None = None,
                        kind: str | None = None, cursor: str | None = None) -> dict[str, Any]:
    """Invoices and credit notes (R9.7), filtered by accounting month, tenant, status, kind."""
    if tenant is not None:
        principal.ensure_tenant(tenant)
    return await service.reads.list_invoices(month, tenant or principal.tenant, status, cursor,
                                             kind)


@router.get("/v1/invoices/export", response_class=Response, responses={
    200: {"content": CSV, "description": "every line of the month's invoices and credit "
          "notes (credit notes' negative), columns as docs/api.md lists them"},
    **errors(422)})
async def export(principal: FinanceKey, service: Invoicing, month: str) -> Response:
    body = await service.reads.export(month, principal.tenant)
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="invoice-lines-{month}.csv"'})


# What `GET /v1/invoices/{number}` answers in, JSON first (no `Accept`, or `*/*`).
JSON, CSV_TYPE, PDF = "application/json", "text/csv", "application/pdf"
INVOICE_MEDIA_TYPES = (JSON, CSV_TYPE, PDF)


@router.get("/v1/invoices/{number}", response_model=Invoice, responses={
    200: {"content": {**CSV, PDF: {"schema": {"type": "string", "format": "binary"}}},
          "description": "the invoice or credit note; its lines as CSV (the export's "
          "columns) with `Accept: text/csv`; the printable document with `Accept: "
          "application/pdf` (R9.8)"},
    **errors(404, 406)})
async def get_invoice(number: str, request: Request, principal: ReaderKey,
                      service: Invoicing) -> Response:
    media_type = preferred(request.headers.get("accept"), INVOICE_MEDIA_TYPES)
    if media_type is None:
        raise NotAcceptable(f"Accept: this route answers {', '.join(INVOICE_MEDIA_TYPES)}",
                            field="Accept")
    vary = {"Vary": "Accept"}
    if media_type == PDF:
        pdf = await service.pdf(number, principal.tenant)
        return Response(pdf, media_type=PDF, headers=vary | {
            "Content-Disposition": f'inline; filename="{number}.pdf"'})
    doc = await service.reads.invoice(number, principal.tenant)
    if media_type == CSV_TYPE:
        return Response(to_csv([doc]), media_type="text/csv; charset=utf-8", headers=vary)
    return JSONResponse(doc, headers=vary)


@router.post("/v1/invoices/{number}/credit-notes", status_code=201, response_model=Any,
             responses=answers(Invoice, 400, 404, 409, 422, status=201,
                               description="the credit note issued (R9.7)"))
async def credit_note(number: str, body: CreditNoteRequest, principal: AdminKey,
                      service: Invoicing,
                      idempotency_key: Annotated[str | None, Header()] = None
                      ) -> dict[str, Any]:
    """R9.3. `Idempotency-Key` makes a retry safe: the same note, not a second one."""
    note = await service.credits.credit_note(number, body.amount, body.reason,
                                             principal.tenant, idempotency_key,
                                             api_actor(principal.key_id))
    # A retry with the same Idempotency-Key answers the same note: logged again, same number.
    audit("credit_note", principal, invoice=number, credit_note=note.get("number"),
          tenant=note.get("tenant"), amount=body.amount, reason=body.reason)
    return note


@router.get("/v1/tenants/{tenant}/upcoming-invoice", response_model=Any,
            responses=answers(UpcomingInvoice, 404))
async def upcoming(tenant: str, principal: FinanceKey, service: Invoicing) -> dict[str, Any]:
    principal.ensure_tenant(tenant)
    return await service.upcoming(tenant)

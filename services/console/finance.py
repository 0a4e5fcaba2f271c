"""The finance pages: invoices and credit notes by month with filters, one document with its
lines and where each came from, PDF and CSV downloads, the month export, and credit notes
(admin).

Reads and the credit note go through the invoicing service's `reads` and `credits`, with the
key's tenant scope, exactly as `GET /v1/invoices…` and `POST …/credit-notes` do (R9.3, R9.7)."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import RedirectResponse

from services.console.sessions import new_token
from services.console.web import (
    CREDIT,
    EXPORT,
    READ_INVOICES,
    page,
    posted_form,
    render,
    services_of,
    signed_in,
)
from services.invoicing.documents import to_csv
from services.invoicing.models import CreditNoteRequest
from services.invoicing.reads import KINDS, STATUSES
from shared.audit import audit
from shared.errors import ValidationFailed

router = APIRouter()

FILTERS = ("month", "tenant", "status", "kind", "cursor")


def _csv(body: str, filename: str) -> Response:
    return Response(body, media_type="text/csv; charset=utf-8", headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Cache-Control": "no-store"})


@router.get("/finance")
@page
async def invoices(request: Request) -> Response:
    viewer = await signed_in(request, READ_INVOICES)
    chosen = {name: request.query_params.get(name) or None for name in FILTERS}
    if chosen["tenant"] is not None:
        viewer.see_tenant(chosen["tenant"])
    services = services_of(request)
    listed = await services.invoicing.reads.list_invoices(
        chosen["month"], chosen["tenant"] or viewer.principal.tenant, chosen["status"],
        chosen["cursor"], chosen["kind"])
    now = await services.invoicing.clock.now()
    this_month = now.astimezone(services.invoicing.settings.accounting_zone).strftime("%Y-%m")
    return render(request, "finance.html", viewer, tenant=None, listed=listed,
                  chosen=chosen, statuses=STATUSES, kinds=KINDS, this_month=this_month,
                  may_export=viewer.may(EXPORT))


@router.get("/finance/export")
@page
async def export(request: Request) -> Response:
    """The month's invoice lines as CSV, credit notes' negative (R9.7)."""
    viewer = await signed_in(request, EXPORT)
    month = request.query_params.get("month", "")
    body = await services_of(request).invoicing.reads.export(month, viewer.principal.tenant)
    return _csv(body, f"invoice-lines-{month}.csv")


@router.get("/invoices/{number}")
@page
async def invoice(request: Request, number: str) -> Response:
    viewer = await signed_in(request, READ_INVOICES)
    doc = await services_of(request).invoicing.reads.invoice(number, viewer.principal.tenant)
    return render(request, "invoice.html", viewer, tenant=doc["tenant"], doc=doc,
                  may_credit=viewer.may(CREDIT) and doc["kind"] != "credit_note",
                  idempotency_key=new_token(), problem=None)


@router.get("/invoices/{number}/csv")
@page
async def invoice_csv(request: Request, number: str) -> Response:
    viewer = await signed_in(request, READ_INVOICES)
    doc = await services_of(request).invoicing.reads.invoice(number, viewer.principal.tenant)
    return _csv(to_csv([doc]), f"{doc['number']}.csv")


@router.get("/invoices/{number}/pdf")
@page
async def invoice_pdf(request: Request, number: str) -> Response:
    """R9.8: the document printed, as `GET /v1/invoices/{number}` answers it as PDF."""
    viewer = await signed_in(request, READ_INVOICES)
    body = await services_of(request).invoicing.pdf(number, viewer.principal.tenant)
    return Response(body, media_type="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="{number}.pdf"',
        "Cache-Control": "no-store"})


@router.post("/invoices/{number}/credit-notes")
@page
async def credit_note(request: Request, number: str) -> Response:
    """R9.3, R9.7: a credit note of its own against the invoice; the form's
    Idempotency-Key makes a resent form answer the same note."""
    viewer = await signed_in(request, CREDIT)
    fields = await posted_form(request, viewer)
    body = CreditNoteRequest(amount=fields.get("amount", "").strip() or None,
                             reason=fields.get("reason", "").strip())
    key = fields.get("idempotency_key") or None
    if key is not None and len(key) > 255:
        raise ValidationFailed("idempotency_key: at most 255 characters",
                               field="idempotency_key")
    note = await services_of(request).invoicing.credits.credit_note(
        number, body.amount, body.reason, viewer.principal.tenant, key)
    audit("credit_note", viewer.principal, invoice=number, credit_note=note.get("number"),
          tenant=note.get("tenant"), amount=body.amount, reason=body.reason)
    return RedirectResponse(f"/console/invoices/{note['number']}", status_code=303)

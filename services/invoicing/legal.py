"""The legal mentions of invoices and credit notes (R9.8), as pure functions: who sells (the
platform settings), who buys (the tenant's billing profile when the document is issued), the
payment terms, and the due date derived from them.

Seller, buyer and payment terms are copied into a document as it is issued, so a later
change of the settings or of the tenant's profile leaves issued documents as they are.

The due date is not stored. A document's issue instant is final only once the numbering
call has run (numbers are chronological, so that call may issue it later than asked, and in
another year: state.py), so the document keeps its `payment_terms_days` and the due date is
derived from the final `issued_at` each time it is served: the issue date in the accounting
zone plus the terms. A credit note's terms are 0: it is due on its issue date.
"""

from __future__ import annotations

from datetime import date, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from shared.settings import InvoicingSettings
from shared.subscription import TenantState
from shared.times import from_utc_text, local_date

CREDIT_NOTE_TERMS_DAYS = 0


def seller(settings: InvoicingSettings) -> dict[str, str]:
    return {"legal_name": settings.invoicing_seller_legal_name,
            "address": settings.invoicing_seller_address,
            "vat_id": settings.invoicing_seller_vat_id}


def buyer(tenant: str, view: TenantState | None) -> dict[str, str | None]:
    """The tenant's billing profile; a tenant that gave none is named by its id."""
    profile = None if view is None else view.billing
    if profile is None:
        return {"legal_name": tenant, "address": None, "vat_id": None, "email": None}
    return {"legal_name": profile.legal_name, "address": profile.address,
            "vat_id": profile.vat_id, "email": profile.email}


def mentions(settings: InvoicingSettings, tenant: str, view: TenantState | None,
             terms_days: int) -> dict[str, Any]:
    """What a document issued now carries besides its lines and amounts."""
    return {"seller": seller(settings), "buyer": buyer(tenant, view),
            "payment_terms_days": terms_days}


def issue_date(doc: dict[str, Any], accounting_zone: ZoneInfo) -> date | None:
    """The date a document was issued on in the accounting zone (the date it prints); None
    for a document not issued yet."""
    issued_at = doc.get("issued_at")
    if not isinstance(issued_at, str):
        return None
    return local_date(from_utc_text(issued_at), accounting_zone)


def due_date(doc: dict[str, Any], accounting_zone: ZoneInfo) -> str | None:
    """The issue date in the accounting zone plus the document's payment terms; None for a
    document not issued yet, or issued before documents carried their terms."""
    terms = doc.get("payment_terms_days")
    issued_on = issue_date(doc, accounting_zone)
    if not isinstance(terms, int) or issued_on is None:
        return None
    return (issued_on + timedelta(days=terms)).isoformat()


def served(doc: dict[str, Any], accounting_zone: ZoneInfo) -> dict[str, Any]:
    """A stored document as served: its due date added; one issued before legal mentions
    existed shows them as null rather than today's settings."""
    for name in ("seller", "buyer", "payment_terms_days"):
        doc.setdefault(name, None)
    doc["due_date"] = due_date(doc, accounting_zone)
    return doc

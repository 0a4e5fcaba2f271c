"""Legal invoices (R9.8): every invoice and credit note names the seller (platform settings),
the buyer (the tenant's billing profile as it is when the document is issued) and its due
date (the issue date in the accounting zone plus the payment terms; a credit note is due on
its issue date). Each example is worked by hand in its docstring.

Demo catalog: essentials 49.00/month, seats-crm 10.00/month; VAT 20 %. Seller: the demo
defaults of the settings; payment terms 30 days. Tenants are in Europe/Paris (summer time
from 2026-03-29, so the billing date 04-01 falls due at 2026-03-31T22:00Z).
"""

from __future__ import annotations

import csv
import io
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import orjson
import pytest
from pydantic import ValidationError

from services.entitlements.models import BillingProfileIn
from services.invoicing import legal
from shared.settings import InvoicingSettings
from shared.stack import Endpoints
from shared.subscription import BillingProfile, TenantState
from tests.conftest import (
    ADMIN,
    OWNER,
    RunningApp,
    create_tenant,
    produce,
    set_clock,
)
from tests.invoicing.inv_support import (
    buy,
    documents_once_there,
    invoice_document,
    late_purchase_event,
    private_platform,
)

LEGAL_DB = 15
PARIS = ZoneInfo("Europe/Paris")  # read at import: a unit test opens no file
UTC_ZONE = ZoneInfo("UTC")
SELLER = {"legal_name": "Meterbill Demo SAS",
          "address": "1 rue de la Démo, 75001 Paris, France", "vat_id": "FR00123456789"}
ACME = {"legal_name": "Acme SAS", "address": "12 avenue des Champs\n75008 Paris, France",
        "vat_id": "FR12345678901", "email": "billing@acme.example"}
# Given without the optional fields: they are null in the profile and on invoices.
ACME_GROUP = {"legal_name": "Acme Group SAS", "address": "5 quai de Saône, 69002 Lyon"}
ACME_GROUP_STORED = ACME_GROUP | {"vat_id": None, "email": None}
Document = dict[str, Any]


def _nameless(tenant: str) -> dict[str, str | None]:
    """The buyer of a tenant that gave no billing profile: named by its id."""
    return {"legal_name": tenant, "address": None, "vat_id": None, "email": None}


async def _patch(client: httpx.AsyncClient, tenant: str, body: dict[str, Any]
                 ) -> httpx.Response:
    return await client.patch(f"/v1/tenants/{tenant}", json=body, headers=ADMIN)


async def _tenant(client: httpx.AsyncClient, tenant: str) -> dict[str, Any]:
    response = await client.get(f"/v1/tenants/{tenant}", headers=ADMIN)
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def _history(client: httpx.AsyncClient, tenant: str) -> list[dict[str, Any]]:
    response = await client.get(f"/v1/tenants/{tenant}/history", headers=ADMIN)
    assert response.status_code == 200, response.text
    entries: list[dict[str, Any]] = response.json()["data"]
    return entries


def _legal(doc: Document) -> tuple[str, str, str | None, Any, int | None]:
    return (doc["kind"], doc["issued_at"], doc["due_date"], doc["buyer"],
            doc["payment_terms_days"])


# --- the rules, pure ---------------------------------------------------------------------------


@pytest.mark.unit
@pytest.mark.parametrize(("issued_at", "terms", "zone", "due"), [
    ("2026-03-01T10:00:00Z", 30, UTC_ZONE, "2026-03-31"),  # 1 March + 30 days
    ("2026-03-31T22:00:00Z", 30, UTC_ZONE, "2026-04-30"),  # 31 March in UTC
    ("2026-03-31T22:00:00Z", 30, PARIS, "2026-05-01"),  # already 1 April in Paris
    ("2026-12-31T23:30:00Z", 30, PARIS, "2027-01-31"),  # 1 January 2027 in Paris
    ("2028-01-30T12:00:00Z", 30, UTC_ZONE, "2028-02-29"),  # a leap year
    ("2026-03-31T22:30:00Z", 0, PARIS, "2026-04-01"),  # a credit note: its issue date
    ("2026-03-31T22:30:00Z", 365, UTC_ZONE, "2027-03-31"),
])
def test_the_due_date_is_the_issue_date_in_the_accounting_zone_plus_the_terms(
        issued_at: str, terms: int, zone: ZoneInfo, due: str) -> None:
    doc = {"issued_at": issued_at, "payment_terms_days": terms}
    assert legal.due_date(doc, zone) == due


@pytest.mark.unit
def test_a_document_issued_before_legal_mentions_shows_them_null() -> None:
    """An old document has no terms: no due date is made up from today's settings."""
    old = legal.served({"number": "INV-2025-000001", "issued_at": "2025-06-01T00:00:00Z"},
                       UTC_ZONE)
    assert (old["seller"], old["buyer"], old["payment_terms_days"], old["due_date"]) == (
        None, None, None, None)
    assert legal.due_date({"issued_at": None, "payment_terms_days": 30}, UTC_ZONE) is None


@pytest.mark.unit
def test_the_buyer_is_the_profile_or_the_tenant_id() -> None:
    view = TenantState.model_validate({
        "id": "acme", "plan": "essentials", "cycle": "P1M", "anchor": "2026-03-01",
        "time_zone": "Europe/Paris", "currency": "EUR", "vat_rate": "0.20",
        "admin_user": "u-admin", "created_at": "2026-03-01T00:00:00Z"})
    assert view.billing is None  # a document written before profiles still reads
    assert legal.buyer("acme", view) == _nameless("acme")
    assert legal.buyer("acme", None) == _nameless("acme")
    view.billing = BillingProfile.model_validate(ACME)
    assert legal.buyer("acme", view) == ACME


@pytest.mark.unit
@pytest.mark.parametrize(("field", "value"), [
    ("legal_name", ""), ("legal_name", "   "), ("legal_name", "A" * 201),
    ("legal_name", "Acme\nSAS"), ("legal_name", "Acme @@NUMBER@@"),
    ("address", ""), ("address", "x" * 501), ("address", "1 rue\x00X"),
    ("vat_id", "hello"), ("vat_id", "F"), ("vat_id", "FR" + "1" * 31), ("vat_id", "-FR1"),
    ("vat_id", "FR1;2"),
    ("email", "billing"), ("email", "billing@acme"), ("email", "a b@acme.example"),
    ("email", "a@@acme.example"), ("email", "a@" + "b" * 250 + ".example"),
])
def test_a_profile_field_out_of_shape_is_refused_by_name(field: str, value: str) -> None:
    with pytest.raises(ValidationError) as refused:
        BillingProfileIn.model_validate(ACME | {field: value})
    assert [e["loc"] for e in refused.value.errors()] == [(field,)]


@pytest.mark.unit
def test_a_profile_in_shape_is_kept_trimmed() -> None:
    """Surrounding spaces go; an address keeps its lines; loose VAT id shapes pass."""
    given = BillingProfileIn.model_validate(ACME | {"legal_name": "  Acme SAS "})
    assert given.stored().model_dump() == ACME
    for vat_id in ("CHE-123.456.789 MWST", "GB123456789", "DE 123/456/78901"):
        assert BillingProfileIn.model_validate(ACME | {"vat_id": vat_id}).vat_id == vat_id
    assert BillingProfileIn.model_validate(ACME_GROUP).stored().model_dump() == \
        ACME_GROUP_STORED


def test_payment_terms_and_seller_settings_are_bounded() -> None:
    assert InvoicingSettings().invoicing_payment_terms_days == 30
    assert InvoicingSettings(invoicing_payment_terms_days=0).invoicing_payment_terms_days == 0
    for bad in ({"invoicing_payment_terms_days": -1},
                {"invoicing_payment_terms_days": 366},
                {"invoicing_seller_vat_id": "none"},
                {"invoicing_seller_legal_name": ""},
                {"invoicing_seller_address": "x" * 501}):
        with pytest.raises(ValidationError, match=next(iter(bad))):
            InvoicingSettings(**bad)


# --- invoices on a platform of their own -----------------------------------------------------


async def test_invoices_name_seller_and_buyer_and_fall_due_thirty_days_after_issue(
        endpoints: Endpoints, unique: str) -> None:
    """Accounting zone UTC. A (profile ACME) and B (no profile), created 2026-03-01T10:00Z.

    - First periods, 49.00 + 9.80 = 58.80 each, issued 03-01T10:00Z: due 03-01 + 30 days =
      2026-03-31. A's buyer is its profile; B's is its id, nulls elsewhere.
    - Clock to 04-01T12:00Z: the 04-01 period invoices (58.80 each) are issued at Paris
      midnight, 2026-03-31T22:00Z, the 31st in UTC: due 2026-04-30.
    - Then a purchase of B dated 03-20T09:00Z is read (3.87 + 0.77 = 4.64): numbers are
      chronological, so it is issued at 2026-03-31T22:00Z, after the run's invoices, and
      its due date follows that final instant, 2026-04-30, not 03-20 + 30 = 04-19.
    """
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=LEGAL_DB) as app:
        c = app.client
        a, b = f"legal-a-{unique}", f"legal-b-{unique}"
        await create_tenant(c, a, billing=ACME)
        await create_tenant(c, b)
        assert (await _tenant(c, a))["billing"] == ACME
        assert (await _tenant(c, b))["billing"] is None
        await documents_once_there(c, a, 1)
        await documents_once_there(c, b, 1)
        await set_clock(c, "2026-04-01T12:00:00Z")
        await produce(endpoints.kafka_bootstrap, f"subscriptions-inv-{unique}",
                      [(b.encode(), orjson.dumps(late_purchase_event(b, f"legal-{unique}")))])
        docs_a = await documents_once_there(c, a, 2)
        docs_b = await documents_once_there(c, b, 3)
        upcoming = (await c.get(f"/v1/tenants/{a}/upcoming-invoice", headers=ADMIN)).json()

    assert [_legal(d) for d in docs_a] == [
        ("immediate", "2026-03-01T10:00:00Z", "2026-03-31", ACME, 30),
        ("period", "2026-03-31T22:00:00Z", "2026-04-30", ACME, 30)]
    assert [(_legal(d), d["total"]) for d in docs_b] == [
        (("immediate", "2026-03-01T10:00:00Z", "2026-03-31", _nameless(b), 30), "58.80"),
        (("period", "2026-03-31T22:00:00Z", "2026-04-30", _nameless(b), 30), "58.80"),
        (("immediate", "2026-03-31T22:00:00Z", "2026-04-30", _nameless(b), 30), "4.64")]
    assert all(d["seller"] == SELLER for d in docs_a + docs_b)
    assert (upcoming["seller"], upcoming["buyer"], upcoming["due_date"]) == (
        SELLER, ACME, None)


async def test_a_credit_note_names_the_parties_and_is_due_on_its_issue_date(
        endpoints: Endpoints, unique: str) -> None:
    """Accounting zone Europe/Paris. P (profile ACME) created 2026-03-01T10:00Z.

    - INV-2026-000001, first period 58.80, issued 03-01T10:00Z (11:00 in Paris): due
      2026-03-31.
    - Clock to 03-31T22:30Z: INV-2026-000002, the 04-01 period, 58.80, issued 03-31T22:00Z,
      already 1 April in Paris: due 04-01 + 30 days = 2026-05-01.
    - A credit of 12.00 on 000001: CN-2026-000001 issued 03-31T22:30Z (00:30 on 1 April in
      Paris), terms 0: due 2026-04-01, naming the same seller and buyer.
    - The April export (a Paris month) holds 000002's plan line and the note's line, each
      with the due date and the parties' names and VAT ids in the last columns.
    """
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=LEGAL_DB,
                                accounting_tz="Europe/Paris") as app:
        c = app.client
        p = f"legal-p-{unique}"
        await create_tenant(c, p, billing=ACME)
        await documents_once_there(c, p, 1)
        await set_clock(c, "2026-03-31T22:30:00Z")
        await documents_once_there(c, p, 2)
        answer = await c.post("/v1/invoices/INV-2026-000001/credit-notes",
                              json={"amount": "12.00", "reason": "goodwill"}, headers=ADMIN)
        assert answer.status_code == 201, answer.text
        note = await invoice_document(c, "CN-2026-000001")
        period = await invoice_document(c, "INV-2026-000002")
        export = await c.get("/v1/invoices/export", params={"month": "2026-04"},
                             headers=ADMIN)
        one = await c.get("/v1/invoices/INV-2026-000001",
                          headers=ADMIN | {"Accept": "text/csv"})

    assert _legal(period) == ("period", "2026-03-31T22:00:00Z", "2026-05-01", ACME, 30)
    for shown in (answer.json(), note):
        assert (shown["number"], shown["issued_at"], shown["due_date"], shown["total"]) == (
            "CN-2026-000001", "2026-03-31T22:30:00Z", "2026-04-01", "12.00")
        assert (shown["seller"], shown["buyer"], shown["payment_terms_days"]) == (
            SELLER, ACME, 0)
    rows = list(csv.DictReader(io.StringIO(export.text)))
    legal_columns = ["due_date", "seller_legal_name", "seller_vat_id", "buyer_legal_name",
                     "buyer_vat_id"]
    assert export.text.splitlines()[0].split(",")[-6:] == ["source", *legal_columns]
    assert [(r["invoice"], r["amount"], *(r[k] for k in legal_columns)) for r in rows] == [
        ("INV-2026-000002", "49.00", "2026-05-01", "Meterbill Demo SAS", "FR00123456789",
         "Acme SAS", "FR12345678901"),
        ("CN-2026-000001", "-10.00", "2026-04-01", "Meterbill Demo SAS", "FR00123456789",
         "Acme SAS", "FR12345678901")]
    first_rows = list(csv.DictReader(io.StringIO(one.text)))
    assert [(r["invoice"], r["due_date"], r["buyer_legal_name"]) for r in first_rows] == [
        ("INV-2026-000001", "2026-03-31", "Acme SAS")]


async def test_a_changed_profile_names_the_buyer_of_later_invoices_only(
        endpoints: Endpoints, unique: str) -> None:
    """Accounting zone UTC. T created 2026-03-01T10:00Z without a profile.

    - First period 58.80, issued 03-01T10:00Z: buyer T (its id).
    - 03-10T10:00Z: PATCH billing ACME; T buys seats-crm × 1: 10.00 × 22/31 = 7.10, + 1.42
      = 8.52, issued 03-10T10:00Z, buyer ACME, due 03-10 + 30 = 2026-04-09.
    - PATCH billing ACME_GROUP (no VAT id, no e-mail); the same again changes nothing.
    - Clock to 04-01T12:00Z: 04-01 period, 49.00 + 10.00 = 59.00 + 11.80 = 70.80, buyer
      ACME_GROUP. The two earlier invoices still name the buyers they were issued to.
    - History: two `tenant.billing_changed`, each with the profile it replaced.
    """
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=LEGAL_DB) as app:
        c = app.client
        t = f"legal-t-{unique}"
        await create_tenant(c, t)
        first, = await documents_once_there(c, t, 1)
        await set_clock(c, "2026-03-10T10:00:00Z")
        changed = await _patch(c, t, {"billing": ACME, "actor": OWNER})
        assert changed.status_code == 200, changed.text
        assert (changed.json()["billing"], changed.json()["renewal"]) == (ACME, True)
        await buy(c, t, "seats-crm", 1)
        _, bought = await documents_once_there(c, t, 2)
        for _ in range(2):
            again = await _patch(c, t, {"billing": ACME_GROUP, "actor": OWNER})
            assert again.json()["billing"] == ACME_GROUP_STORED, again.text
        await set_clock(c, "2026-04-01T12:00:00Z")
        *_, period = await documents_once_there(c, t, 3)
        reread = [await invoice_document(c, d["number"]) for d in (first, bought)]
        history = await _history(c, t)

    assert [(_legal(d), d["total"]) for d in (first, bought, period)] == [
        (("immediate", "2026-03-01T10:00:00Z", "2026-03-31", _nameless(t), 30), "58.80"),
        (("immediate", "2026-03-10T10:00:00Z", "2026-04-09", ACME, 30), "8.52"),
        (("period", "2026-03-31T22:00:00Z", "2026-04-30", ACME_GROUP_STORED, 30), "70.80")]
    assert [d["buyer"] for d in reread] == [_nameless(t), ACME]
    changes = [(e["billing"], e["previous"]) for e in history
               if e["type"] == "tenant.billing_changed"]
    assert changes == [(ACME, None), (ACME_GROUP_STORED, ACME)]


# --- refusals, on the session's platform ------------------------------------------------------

BAD_PROFILES: list[tuple[dict[str, str | None], str]] = [
    ({"legal_name": None}, "billing.legal_name"),
    ({"legal_name": ""}, "billing.legal_name"),
    ({"legal_name": "A" * 201}, "billing.legal_name"),
    ({"address": None}, "billing.address"),
    ({"address": "x" * 501}, "billing.address"),
    ({"address": "1 rue\tX"}, "billing.address"),
    ({"vat_id": "not a vat id"}, "billing.vat_id"),
    ({"vat_id": "FR" + "1" * 31}, "billing.vat_id"),
    ({"email": "billing-at-acme"}, "billing.email"),
    ({"email": "a@" + "b" * 250 + ".example"}, "billing.email"),
    ({"iban": "FR76 3000 6000 0112 3456 7890 189"}, "billing.iban"),
]


async def test_a_refused_profile_names_its_field_and_changes_nothing(
        platform: RunningApp, unique: str) -> None:
    """Each bad field, on creation and on PATCH: 422 naming it (`billing.email`…); the
    tenant is not created, or keeps its profile and its history."""
    c = platform.client
    for patch, field in BAD_PROFILES:
        tenant = f"refused-{unique}-{field.rpartition('.')[2]}"
        creation: dict[str, Any] = {
            "id": tenant, "plan": "essentials", "time_zone": "Europe/Paris", "currency": "EUR",
            "vat_rate": "0.20", "admin_user": "u-admin", "billing": ACME | patch}
        created = await c.post("/v1/tenants", json=creation, headers=ADMIN)
        assert (created.status_code, created.json()["error"]["field"]) == (422, field), \
            created.text
        assert (await c.get(f"/v1/tenants/{tenant}", headers=ADMIN)).status_code == 404
    kept = f"kept-{unique}"
    await create_tenant(c, kept, billing=ACME)
    before = await _history(c, kept)
    for patch, field in BAD_PROFILES:
        refused = await _patch(c, kept, {"billing": ACME | patch, "actor": OWNER})
        assert (refused.status_code, refused.json()["error"]["field"]) == (422, field), \
            refused.text
    incomplete: list[tuple[dict[str, Any], str]] = [
        ({}, "renewal"), ({"actor": OWNER}, "renewal"), ({"billing": "Acme SAS"}, "billing")]
    for sent, field in incomplete:
        refused = await _patch(c, kept, sent)
        assert (refused.status_code, refused.json()["error"]["field"]) == (422, field), \
            refused.text
    # An agent may not change what the owner pays: neither half of the change is made.
    agent = {"user_id": "u-agent", "role": "agent"}
    both = await _patch(c, kept, {"renewal": False, "billing": ACME_GROUP, "actor": agent})
    assert (both.status_code, both.json()["error"]["field"]) == (403, "actor.role")
    shown = await _tenant(c, kept)
    assert (shown["billing"], shown["renewal"]) == (ACME, True)
    assert await _history(c, kept) == before


async def test_renewal_and_billing_change_together_or_apart(
        platform: RunningApp, unique: str) -> None:
    """`renewal` alone answers as it always did; with `billing`, both change in one step and
    the history records each."""
    c = platform.client
    tenant = f"both-{unique}"
    await create_tenant(c, tenant)
    alone = await _patch(c, tenant, {"renewal": False, "actor": OWNER})
    assert alone.status_code == 200, alone.text
    assert (alone.json()["renewal"], alone.json()["billing"]) == (False, None)
    assert alone.json()["ends_at"] is not None
    both = await _patch(c, tenant, {"renewal": True, "billing": ACME, "actor": OWNER})
    assert both.status_code == 200, both.text
    assert (both.json()["renewal"], both.json()["billing"], both.json()["ends_at"]) == (
        True, ACME, None)
    types = [e["type"] for e in await _history(c, tenant)]
    assert types == ["tenant.created", "renewal.changed", "renewal.changed",
                     "tenant.billing_changed"]

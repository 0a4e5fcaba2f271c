"""Invoices and credit notes as PDF (R9.8): `GET /v1/invoices/{number}` with `Accept:
application/pdf`, printed by the packaged Typst template (or a vendor's), on documents a
private platform really issued. Each figure is worked by hand in the fixture's docstring; the
PDF's text (read back with pypdf) must show what the JSON answer says.

Demo catalog: essentials 49.00/month (no module: the "General" group), seats-crm
10.00/month per seat (module crm); VAT 20 %. Accounting zone UTC, payment terms 30 days.
"""

from __future__ import annotations

import io
import os
import statistics
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import pypdf
import pytest
from pydantic import ValidationError

from services.invoicing.part import InvoicingPart
from services.invoicing.pdf import DocumentRenderer
from shared.settings import InvoicingSettings
from shared.stack import Endpoints
from tests.conftest import ADMIN, RunningApp, create_tenant, set_clock
from tests.invoicing.inv_support import (
    buy,
    documents_once_there,
    invoice_document,
    invoicing_part,
    private_platform,
)

PDF_DB = 1  # a valkey database no other test uses
UTC_ZONE = ZoneInfo("UTC")
Document = dict[str, Any]
ACME = {"legal_name": "Acme SAS", "address": "12 avenue des Champs\n75008 Paris, France",
        "vat_id": "FR12345678901", "email": "billing@acme.example"}
# Typst markup and code in every field a tenant writes: each must print as written.
HOSTILE_NAME = ('*Bold* _it_ #eval("6*7") $x^2$ <l> @ref \\ ] [ // /* '
                '#set page(width: 1cm) `raw` #import "@preview/x:0.1.0"')
HOSTILE = {"legal_name": HOSTILE_NAME, "address": '#read("/etc/passwd")\n= Heading',
           "vat_id": "FR99999999999", "email": "ops@hostile.example"}


@dataclass(frozen=True)
class Issued:
    app: RunningApp
    tenant: str
    hostile: str
    first: Document
    proration: Document
    period: Document
    note: Document
    hostile_first: Document


def text_of(pdf: bytes) -> str:
    """The PDF's text, every run of white space made one space (a wrapped cell reads as one)."""
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    return " ".join(" ".join(page.extract_text() for page in reader.pages).split())


async def _pdf(client: httpx.AsyncClient, number: str, accept: str = "application/pdf",
               headers: dict[str, str] | None = None) -> bytes:
    response = await client.get(f"/v1/invoices/{number}",
                                headers=(headers or ADMIN) | {"Accept": accept})
    assert response.status_code == 200, response.text
    assert response.headers["content-type"] == "application/pdf"
    assert response.headers["vary"] == "Accept"
    assert response.content.startswith(b"%PDF-")
    return response.content


@pytest.fixture(scope="module")
async def issued(endpoints: Endpoints) -> AsyncIterator[Issued]:
    """Tenant T (profile ACME) and tenant H (a hostile profile), Europe/Paris, created
    2026-03-01T10:00Z, books in UTC:

    - INV-2026-000001 (T) and INV-2026-000002 (H): first periods, essentials 49.00, VAT
      9.80, total 58.80, issued 2026-03-01, due 03-01 + 30 days = 2026-03-31; period
      2026-03-01 → 04-01, printed "2026-03-01 – 2026-03-31".
    - 03-10T10:00Z, T buys seats-crm × 2: 2 × 10.00 × 22/31 = 14.1935… → 14.19, VAT
      2.838 → 2.84, total 17.03 (INV-2026-000003, issued 2026-03-10, due 2026-04-09).
    - Clock to 04-01T12:00Z: the 04-01 period invoices are issued at Paris midnight,
      2026-03-31T22:00Z, the 31st in UTC, due 2026-04-30. T's: General essentials 49.00 +
      crm seats-crm 2 × 10.00 = 20.00 → 69.00, VAT 13.80, total 82.80.
    - T's period invoice credited 12.00: CN-2026-000001, net 12.00/1.2 = 10.00, VAT 2.00,
      issued 2026-04-01 (the clock's day), due the same day (terms 0).
    """
    unique = os.urandom(4).hex()
    start = datetime(2026, 3, 1, 10, tzinfo=UTC)
    async with private_platform(endpoints, unique, start, db=PDF_DB) as app:
        c = app.client
        tenant, hostile = f"pdf-{unique}", f"pdf-h-{unique}"
        await create_tenant(c, tenant, billing=ACME)
        first, = await documents_once_there(c, tenant, 1)
        await create_tenant(c, hostile, billing=HOSTILE)
        hostile_first, = await documents_once_there(c, hostile, 1)
        await set_clock(c, "2026-03-10T10:00:00Z")
        await buy(c, tenant, "seats-crm", 2)
        _, proration = await documents_once_there(c, tenant, 2)
        await set_clock(c, "2026-04-01T12:00:00Z")
        *_, period = await documents_once_there(c, tenant, 3)
        credited = await c.post(f"/v1/invoices/{period['number']}/credit-notes",
                                json={"amount": "12.00", "reason": "goodwill"}, headers=ADMIN)
        assert credited.status_code == 201, credited.text
        note = await invoice_document(c, credited.json()["number"])
        yield Issued(app, tenant, hostile, await invoice_document(c, first["number"]),
                     await invoice_document(c, proration["number"]),
                     await invoice_document(c, period["number"]),
                     note, await invoice_document(c, hostile_first["number"]))


def _party_text(party: dict[str, Any]) -> list[str]:
    return [party["legal_name"], *party["address"].splitlines(),
            f"VAT id: {party['vat_id']}", *([party["email"]] if party.get("email") else [])]


def _shows_the_document(text: str, doc: Document, rows: list[str]) -> None:
    """The PDF's text holds the JSON's number, dates, parties, each line and the totals."""
    assert doc["number"] in text
    assert f"Due date: {doc['due_date']}" in text
    for shown in _party_text(doc["seller"]) + _party_text(doc["buyer"]):
        assert shown in text, shown
    assert len(rows) == len(doc["lines"])
    for row, line in zip(rows, doc["lines"], strict=True):
        assert row.startswith(line["description"])
        assert row.endswith(f"{line['quantity']} {line['unit_price']} {line['amount']}")
        assert row in text, row
    currency = doc["currency"]
    assert f"Subtotal {doc['subtotal']} {currency}" in text
    assert f"VAT 20 % {doc['tax']} {currency}" in text
    assert f"Total {doc['total']} {currency}" in text


async def test_an_invoice_pdf_shows_what_its_json_says(issued: Issued) -> None:
    """T's 04-01 period invoice (fixture): issued 2026-03-31, due 2026-04-30, seller the
    demo settings, buyer ACME; "General" then "crm", each line with its April period
    (04-01 → 05-01 printed to its last day, 04-30); 69.00 + 13.80 = 82.80 EUR."""
    doc = issued.period
    assert (doc["kind"], doc["due_date"], doc["subtotal"], doc["tax"], doc["total"]) == (
        "period", "2026-04-30", "69.00", "13.80", "82.80")
    assert [(line["module"], line["amount"]) for line in doc["lines"]] == [
        (None, "49.00"), ("crm", "20.00")]
    text = text_of(await _pdf(issued.app.client, doc["number"]))
    assert text.startswith(f"Invoice {doc['number']} Issue date: 2026-03-31")
    assert "Period: 2026-04-01 – 2026-04-30" in text
    plan, seats = (f"{line['description']} 2026-04-01 – 2026-04-30 {line['quantity']} "
                   f"{line['unit_price']} {line['amount']}" for line in doc["lines"])
    assert text.index("General") < text.index(plan) < text.index(" crm ") < text.index(seats)
    _shows_the_document(text, doc, [plan, seats])


async def test_immediate_invoices_print_their_own_lines(issued: Issued) -> None:
    """The first period (58.80, issued 03-01, due 03-31, March printed 03-01 – 03-31) and
    the proration (2 seats for 22 of 31 days, 14.19 + 2.84 = 17.03, issued 03-10, due
    04-09; the line's period 03-10 → 04-01 prints 03-10 – 03-31)."""
    c = issued.app.client
    cases = [(issued.first, "2026-03-01", "2026-03-01 – 2026-03-31", "58.80"),
             (issued.proration, "2026-03-10", "2026-03-10 – 2026-03-31", "17.03")]
    for doc, issue_date, line_period, total in cases:
        assert doc["total"] == total
        text = text_of(await _pdf(c, doc["number"]))
        assert f"Issue date: {issue_date}" in text
        line, = doc["lines"]
        row = (f"{line['description']} {line_period} {line['quantity']} "
               f"{line['unit_price']} {line['amount']}")
        _shows_the_document(text, doc, [row])


async def test_a_credit_note_pdf_names_the_invoice_it_credits(issued: Issued) -> None:
    """CN-2026-000001 (fixture): 12.00 credited on T's period invoice, 10.00 + 2.00, issued
    and due 2026-04-01; its one line is the credit, over the invoice's April period."""
    note = issued.note
    assert (note["number"], note["credits"], note["due_date"]) == (
        "CN-2026-000001", issued.period["number"], "2026-04-01")
    assert (note["subtotal"], note["tax"], note["total"]) == ("10.00", "2.00", "12.00")
    text = text_of(await _pdf(issued.app.client, note["number"]))
    assert text.startswith("Credit note CN-2026-000001 Issue date: 2026-04-01")
    assert f"Credit note for invoice {issued.period['number']}" in text
    line, = note["lines"]
    row = f"{line['description']} 2026-04-01 – 2026-04-30 1 10.00 10.00"
    _shows_the_document(text, note, [row])


async def test_a_hostile_legal_name_prints_as_written(issued: Issued) -> None:
    """H's profile is Typst markup and code (`#eval`, `#read`, `#set page`, a heading, a
    package import): printed literally, none of it evaluated (no "42", one A4 page)."""
    doc = issued.hostile_first
    assert doc["buyer"]["legal_name"] == HOSTILE_NAME
    pdf = await _pdf(issued.app.client, doc["number"])
    text = text_of(pdf)
    assert " ".join(HOSTILE_NAME.split()) in text
    assert '#read("/etc/passwd") = Heading' in text
    assert "42" not in text.replace(doc["number"], "")
    assert "root:" not in text
    page, = pypdf.PdfReader(io.BytesIO(pdf)).pages
    assert (round(float(page.mediabox.width)), round(float(page.mediabox.height))) == (
        595, 842)  # A4 in points: `#set page(width: 1cm)` did not run


async def test_a_two_hundred_line_invoice_prints_in_under_a_second(issued: Issued) -> None:
    """The bound documents are held to. T's period invoice, 200 seat lines of 2 × 10.00 (four
    modules of 50 lines), written to the invoice store as INV-2026-000900: subtotal
    200 × 20.00 = 4000.00, VAT 800.00, total 4800.00. `GET` with `Accept: application/pdf`
    (read, rendered, answered): the median of 3 under 1 s, every line printed."""
    stored = {k: v for k, v in issued.period.items()
              if k not in ("status", "credit_notes", "due_date")}
    seats = stored["lines"][1]
    stored |= {"number": "INV-2026-000900", "subtotal": "4000.00", "tax": "800.00",
               "total": "4800.00",
               "lines": [seats | {"module": f"module-{i // 50}",
                                  "description": f"seat line {i:03d}"} for i in range(200)]}
    service = invoicing_part(issued.app).service
    assert service is not None
    await service.store.insert_documents([stored])
    timings = []
    for _ in range(3):
        started = time.perf_counter()
        pdf = await _pdf(issued.app.client, "INV-2026-000900")
        timings.append(time.perf_counter() - started)
    assert statistics.median(timings) < 1.0, timings
    text = text_of(pdf)
    assert all(f"seat line {i:03d} 2026-04-01 – 2026-04-30 2 10.00 20.00" in text
               for i in range(200))
    assert text.index("module-0") < text.index("module-1") < text.index("module-3")
    assert "Subtotal 4000.00 EUR VAT 20 % 800.00 EUR Total 4800.00 EUR" in text


async def test_the_pdf_keeps_the_tenant_scope(issued: Issued) -> None:
    """A dashboard key limited to H reads H's PDF and gets 404 for T's, as for the JSON."""
    c = issued.app.client
    minted = await c.post("/v1/api-keys", json={"role": "dashboard", "tenant": issued.hostile},
                          headers=ADMIN)
    assert minted.status_code == 201, minted.text
    key = {"Authorization": f"Bearer {minted.json()['key']}"}
    assert text_of(await _pdf(c, issued.hostile_first["number"], headers=key))
    refused = await c.get(f"/v1/invoices/{issued.period['number']}",
                          headers=key | {"Accept": "application/pdf"})
    assert (refused.status_code, refused.json()["error"]["code"]) == (404, "not_found")
    missing = await c.get("/v1/invoices/INV-2026-999999",
                          headers=ADMIN | {"Accept": "application/pdf"})
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "number")


@pytest.mark.parametrize(("accept", "media_type"), [
    (None, "application/json"),
    ("application/json", "application/json"),
    ("*/*", "application/json"),
    ("application/*", "application/json"),
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
    ("application/pdf", "application/pdf"),
    ("application/json;q=0.5, application/pdf", "application/pdf"),
    ("text/csv", "text/csv"),
    ("text/*;q=0.9, application/json;q=0.1", "text/csv"),
])
async def test_the_answer_follows_the_accept_header(issued: Issued, accept: str | None,
                                                    media_type: str) -> None:
    headers = ADMIN | ({} if accept is None else {"Accept": accept})
    response = await issued.app.client.get(f"/v1/invoices/{issued.first['number']}",
                                           headers=headers)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].split(";")[0] == media_type
    assert response.headers["vary"] == "Accept"
    if media_type == "application/json":
        assert response.json() == issued.first


@pytest.mark.parametrize("accept", [
    "text/html", "application/xml", "image/png, text/plain", "application/pdf;q=0",
    "*/*;q=0", "application/json;q=0, text/*;q=0, application/pdf;q=0", "nonsense",
])
async def test_an_accept_that_allows_nothing_offered_gets_406(issued: Issued,
                                                              accept: str) -> None:
    response = await issued.app.client.get(f"/v1/invoices/{issued.first['number']}",
                                           headers=ADMIN | {"Accept": accept})
    assert response.status_code == 406, response.text
    error = response.json()["error"]
    assert (error["code"], error["field"]) == ("not_acceptable", "Accept")
    assert "application/pdf" in error["message"]


@pytest.mark.parametrize(("currency", "amounts"), [
    ("JPY", ("4900", "490", "5390")), ("KWD", ("49.000", "4.900", "53.900"))])
async def test_amounts_print_in_the_minor_units_of_their_currency(
        issued: Issued, currency: str, amounts: tuple[str, str, str]) -> None:
    """T's first invoice as a yen and a dinar tenant's would be (VAT 10 %): JPY has no minor
    unit, 4900 + 490 = 5390; KWD has three, 49.000 + 4.900 = 53.900."""
    subtotal, tax, total = amounts
    line = issued.first["lines"][0] | {"unit_price": subtotal, "amount": subtotal}
    doc = issued.first | {"currency": currency, "vat_rate": "0.10", "lines": [line],
                          "subtotal": subtotal, "tax": tax, "total": total}
    renderer = DocumentRenderer(None, UTC_ZONE)
    try:
        text = text_of(await renderer.pdf(doc))
    finally:
        renderer.close()
    assert f"2026-03-01 – 2026-03-31 1 {subtotal} {subtotal}" in text
    assert (f"Subtotal {subtotal} {currency} VAT 10 % {tax} {currency} "
            f"Total {total} {currency}") in text


async def test_a_document_issued_at_a_fractional_second_prints(issued: Issued) -> None:
    """Under the wall clock documents are issued at instants with microseconds (the demo's
    `2026-11-29T03:19:23.066295Z`); the PDF's date keeps the second, and two prints of the
    same document are the same bytes."""
    doc = issued.first | {"issued_at": "2026-11-29T03:19:23.066295Z"}
    renderer = DocumentRenderer(None, UTC_ZONE)
    try:
        first, again = await renderer.pdf(doc), await renderer.pdf(doc)
    finally:
        renderer.close()
    assert first == again
    assert "Issue date: 2026-11-29" in text_of(first)
    metadata = pypdf.PdfReader(io.BytesIO(first)).metadata
    assert metadata is not None
    assert metadata.creation_date == datetime(2026, 11, 29, 3, 19, 23, tzinfo=UTC)


async def test_a_word_longer_than_its_column_breaks_inside_the_page(issued: Issued) -> None:
    """A credit's reason may be one 300-character word, a legal name one 200-character
    word: each breaks across lines of its column (no printed line is longer than an A4 line
    at 10 pt holds, about 100 characters) and reads back whole, with nothing inserted."""
    reason = "abcdefghij" * 30
    line = issued.note["lines"][0] | {"description": f"credit on INV-2026-000004: {reason}"}
    buyer = issued.note["buyer"] | {"legal_name": "Y" * 200}
    renderer = DocumentRenderer(None, UTC_ZONE)
    try:
        pdf = await renderer.pdf(issued.note | {"lines": [line], "buyer": buyer})
    finally:
        renderer.close()
    page, = pypdf.PdfReader(io.BytesIO(pdf)).pages
    printed = page.extract_text().splitlines()
    assert max(len(row) for row in printed) < 100, printed
    joined = "".join("".join(printed).split())
    assert reason in joined
    assert "Y" * 200 in joined


# --- a vendor's template ----------------------------------------------------------------------

VENDOR_TEMPLATE = """\
#let doc = json(bytes(sys.inputs.document))
#set text(ligatures: false)
Vendor layout for #doc.number, total #doc.total #doc.currency, buyer #doc.buyer.legal_name.
#read("footer.txt")
"""


async def test_a_vendor_template_named_by_the_setting_prints_the_document(
        issued: Issued, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """INVOICING_DOCUMENT_TEMPLATE names a template in a folder of its own, which it may
    read files from (its footer here); the view's values reach it as they reach ours."""
    (tmp_path / "vendor.typ").write_text(VENDOR_TEMPLATE)
    (tmp_path / "footer.txt").write_text("Vendor GmbH, Berlin")
    monkeypatch.setenv("INVOICING_DOCUMENT_TEMPLATE", str(tmp_path / "vendor.typ"))
    settings = InvoicingSettings()
    assert settings.invoicing_document_template == tmp_path / "vendor.typ"
    InvoicingPart()  # the template is tried at start, and prints the example invoice
    renderer = DocumentRenderer(settings.invoicing_document_template, settings.accounting_zone)
    try:
        text = text_of(await renderer.pdf(issued.period))
    finally:
        renderer.close()
    doc = issued.period
    assert text == (f"Vendor layout for {doc['number']}, total 82.80 EUR, buyer Acme SAS. "
                    "Vendor GmbH, Berlin")


def test_a_missing_or_broken_vendor_template_stops_the_start(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="invoicing_document_template"):
        InvoicingSettings(invoicing_document_template=tmp_path / "absent.typ")
    broken = tmp_path / "broken.typ"
    broken.write_text("#let doc = json(bytes(sys.inputs.document))\n#doc.no_such_field\n")
    with pytest.raises(ValueError, match=r"INVOICING_DOCUMENT_TEMPLATE: .*broken\.typ"):
        InvoicingPart({"invoicing_document_template": broken})

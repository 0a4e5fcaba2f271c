"""The demo `make run` loads through the public HTTP API, as a vendor's backend would: a
webhook to a local receiver, a tenant with a plan and packs, then a stream of its usage
events. Ids and idempotency keys are
fixed, so loading it again changes nothing."""

from __future__ import annotations

import logging
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import httpx

from services import demo_webhooks, demo_year

log = logging.getLogger(__name__)

DEMO_TENANT = "acme"
MODULES = ("sales", "crm", "accounting")


def demo_events(now: datetime, count: int = 500) -> list[dict[str, Any]]:
    """Deterministic ids, so loading the demo twice counts nothing twice."""
    events: list[dict[str, Any]] = []

    def add(index: int, event_type: str, when: datetime, data: dict[str, Any]) -> None:
        events.append({
            "specversion": "1.0", "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo/{index}")),
            "source": "demo-backend", "type": event_type, "subject": DEMO_TENANT,
            "time": when.isoformat().replace("+00:00", "Z"), "data": data})

    start = (now - timedelta(days=20)).replace(minute=0, second=0, microsecond=0)
    for user in range(1, 8):
        module = MODULES[user % len(MODULES)]
        add(user, "user.access.granted", start + timedelta(hours=user),
            {"user_id": f"u-{user}", "module": module})
    add(50, "user.access.revoked", start + timedelta(days=3),
        {"user_id": "u-3", "module": MODULES[0]})
    for company in range(1, 3):
        add(100 + company, "company.created", start + timedelta(hours=company),
            {"company_id": f"c-{company}"})
    for index in range(count):
        when = start + timedelta(hours=index % (20 * 24))
        add(1000 + index, "email.sent", when,
            {"count": 10 + index % 90, "campaign_id": f"newsletter-{index % 3}"})
    add(5000, "support.session.completed", start + timedelta(days=2),
        {"minutes": 50, "level": 2, "user_id": "u-2"})
    for contact in range(1, 6):  # counted resources (R7.4)
        add(6000 + contact, "contact.created", start + timedelta(hours=contact),
            {"contact_id": f"contact-{contact}"})
    add(6100, "subaccount.created", start + timedelta(hours=2), {"account_id": "acme-lyon"})
    return events


def api_call_events(times: list[datetime], calls: int) -> list[dict[str, Any]]:
    """Batches of API calls (the declared meter `api_calls`, priced on acme's plan, R10.1),
    one event per instant; ids fixed by the instant, so loading twice counts nothing twice."""
    return [{"specversion": "1.0",
             "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"demo/api/{when.isoformat()}")),
             "source": "demo-gateway", "type": "api.calls", "subject": DEMO_TENANT,
             "time": when.isoformat().replace("+00:00", "Z"),
             "data": {"count": calls, "endpoint": "/v2/contacts"}} for when in times]


OWNER = {"user_id": "u-1", "role": "owner"}
PURCHASES = [("seats-crm", 2), ("emails-1000", 5), ("analytics", 1)]


BILLING = {"legal_name": "Acme SAS", "address": "12 rue des Lilas, 69002 Lyon, France",
           "vat_id": "FR12345678901", "email": "billing@acme.example"}


async def create_tenant(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/tenants", json={
        "id": DEMO_TENANT, "plan": "professional", "cycle": "P1M", "time_zone": "Europe/Paris",
        "currency": "EUR", "vat_rate": "0.20", "admin_user": "u-1", "billing": BILLING,
        "catalog_version": demo_year.SIGNED_VERSION})
    if response.status_code != 409:  # already there from an earlier run
        response.raise_for_status()
    for item, quantity in PURCHASES:
        bought = await client.post(
            f"/v1/tenants/{DEMO_TENANT}/purchases",
            json={"actor": OWNER, "item": item, "quantity": quantity, "confirm": True},
            headers={"Idempotency-Key": f"demo-{item}"})
        bought.raise_for_status()


async def finance_tour(client: httpx.AsyncClient) -> None:
    """Several items bought at once on one invoice (R4.11), a per-licence add-on (R4.12), a
    contact limit checked (R7.4) and a credit note, a document of its own (R9.7)."""
    basket = await client.post(
        f"/v1/tenants/{DEMO_TENANT}/purchases",
        json={"actor": OWNER, "items": [{"item": "contacts-1000", "quantity": 1},
                                        {"item": "ai-reports"}], "confirm": True},
        headers={"Idempotency-Key": "demo-basket"})
    basket.raise_for_status()
    invoice = basket.json().get("invoice")
    contacts = (await client.get(f"/v1/tenants/{DEMO_TENANT}/check",
                                 params={"feature": "contacts", "quantity": 10})).json()
    print(f"demo: one purchase of two items, invoice {invoice}; contacts "
          f"{contacts.get('used')} used of {contacts.get('limit')}", flush=True)
    if invoice is not None:
        await print_legal_mentions(client, invoice)
    refused = await client.post(
        f"/v1/tenants/{DEMO_TENANT}/purchases",
        json={"actor": {"user_id": "u-lyon", "role": "sub_account"}, "item": "seats-crm",
              "quantity": 1, "confirm": False})
    print(f"demo: a secondary account's user may not buy: {refused.status_code} "
          f"{refused.json()['error']['message']}", flush=True)
    if invoice is None:
        return
    note = await client.post(f"/v1/invoices/{invoice}/credit-notes",
                             json={"amount": "1.00", "reason": "demo goodwill"},
                             headers={"Idempotency-Key": "demo-credit"})
    if note.status_code < 400:
        print(f"demo: credit note {note.json()['number']} on {invoice} "
              f"(GET /v1/invoices/{note.json()['number']})", flush=True)


async def print_legal_mentions(client: httpx.AsyncClient, number: str) -> None:
    """What makes the basket's invoice a legal one (R9.8), and its per-licence line (R4.12)."""
    document = (await client.get(f"/v1/invoices/{number}")).json()
    licences = ", ".join(f"{line['description']}: {line['amount']}"
                         for line in document["lines"] if line["source"]["item"] == "ai-reports")
    print(f"demo: {number} from {document['seller']['legal_name']} to "
          f"{document['buyer']['legal_name']}, due {document['due_date']}; {licences}",
          flush=True)


async def usage_limit_tour(client: httpx.AsyncClient, ahead: bool) -> None:
    """acme's API calls against its plan's soft limit of 50,000 a period (R10.4): its 25,000
    reach the 0.5 threshold, announced once on `subscription-events`. `ahead`: the year's
    calls were sent before the clock reached their days, so one more call now, with the
    clock there, has the period's thresholds looked at."""
    if ahead:
        now = datetime.fromisoformat((await client.get("/v1/clock")).json()["now"])
        await _send(client, api_call_events([now.astimezone(UTC)], 1))
    check = (await client.get(f"/v1/tenants/{DEMO_TENANT}/check",
                              params={"feature": "api_calls", "quantity": 30_000})).json()
    print(f"demo: {DEMO_TENANT} used {check.get('used')} API calls of a soft limit of "
          f"{check.get('limit')} this period; 30,000 more would be {check.get('decision')} "
          "(R10.4); usage.threshold_reached (0.5) is published on subscription-events",
          flush=True)


async def migration_tour(client: httpx.AsyncClient) -> None:
    """The catalog versions served, and what acme would pay on the current one (R10.5):
    the next period's fees under both, its last closed period re-priced line by line."""
    versions = (await client.get("/v1/catalog/versions")).json()
    listed = ", ".join(v["version"] for v in versions["data"])
    print(f"demo: catalog versions {listed} (current {versions['current']}; "
          f"GET /v1/catalog?version=...)", flush=True)
    if versions["current"] == demo_year.SIGNED_VERSION:
        return
    preview = await client.post(f"/v1/tenants/{DEMO_TENANT}/migrations",
                                json={"version": versions["current"], "confirm": False})
    if preview.status_code != 200:
        print(f"demo: no migration preview: {preview.json()['error']['message']}", flush=True)
        return
    body = preview.json()
    fees = body["next_period"]
    print(f"demo: {DEMO_TENANT} moving {body['from']} -> {body['to']} from "
          f"{body['takes_effect']}: next period's fees {fees['current']['subtotal']} -> "
          f"{fees['new']['subtotal']} EUR", flush=True)
    closed = body["last_closed_period"]
    for row in closed["lines"] if closed is not None else []:
        before, after = row["invoiced"], row["repriced"]
        print(f"  {row['kind']:<20} {row['description'][:44]:<44} "
              f"{before['amount'] if before else '-':>9} -> "
              f"{after['amount'] if after else '-':>9}", flush=True)
    if closed is not None:
        print(f"  {closed['period']['from']}..{closed['period']['to']} re-priced: "
              f"{closed['invoiced']} -> {closed['repriced']} EUR (POST /v1/tenants/"
              f"{DEMO_TENANT}/migrations with confirm: true moves it)", flush=True)


async def print_invoices(client: httpx.AsyncClient, tenants: list[str]) -> None:
    for tenant in tenants:
        listed = (await client.get("/v1/invoices", params={"tenant": tenant})).json()["data"]
        total = sum(Decimal(i["total"]) for i in listed)
        print(f"  {tenant}: {len(listed)} invoice(s), {total} EUR in all", flush=True)


async def print_usage_lines(client: httpx.AsyncClient) -> None:
    """acme's latest invoice's usage lines: its API calls priced by its plan (R10.1)."""
    listed = (await client.get("/v1/invoices", params={"tenant": DEMO_TENANT})).json()["data"]
    for invoice in listed[:1]:
        for line in invoice["lines"]:
            if line["kind"] in ("usage", "minimum_commitment"):
                print(f"demo: {invoice['number']} ({DEMO_TENANT}): {line['description']} = "
                      f"{line['amount']} EUR", flush=True)


async def _send(client: httpx.AsyncClient, events: list[dict[str, Any]]) -> int:
    response = await client.post(
        "/v1/events", content=httpx.Request("POST", "/", json=events).content,
        headers={"Content-Type": "application/cloudevents-batch+json"})
    response.raise_for_status()
    accepted: int = response.json()["accepted"]
    return accepted


async def load(base_url: str, admin_key: str) -> None:
    headers = {"Authorization": f"Bearer {admin_key}"}
    async with httpx.AsyncClient(base_url=base_url, headers=headers, timeout=120) as client:
        clock = (await client.get("/v1/clock")).json()
        now = datetime.fromisoformat(clock["now"]).astimezone(UTC)
        hook = await demo_webhooks.register(client)
        await create_tenant(client)
        year = clock["manual"] and now == datetime(demo_year.YEAR, 1, 1, tzinfo=UTC)
        # 25,000 calls a month on the year's 10th, or one batch now: 15,000 beyond the
        # 10,000 included at 0.002 = 30.00 on acme's invoices (or its upcoming invoice).
        months = [datetime(demo_year.YEAR, m, 10, 12, tzinfo=UTC) for m in range(1, 13)]
        await _send(client, api_call_events(months if year else [now], 25_000))
        if year:
            tenants = await demo_year.play(client)
            print(f"demo: a year of invoices for {', '.join(tenants)} "
                  "(docs/invoicing.md, 'A simulated year'):", flush=True)
            await print_invoices(client, tenants)
            await print_usage_lines(client)
            notices = await demo_year.renewal_notices(client)
            print(f"demo: {demo_year.NOTICES_TENANT}'s VIP plan sent its renewal notices at "
                  f"{', '.join(notices)}", flush=True)
            credits = await demo_year.declined_credit_notes(client)
            print(f"demo: its OrangeCare renewal, invoiced then declined, credited: "
                  f"{', '.join(credits) or 'not yet'}", flush=True)
        events = demo_events(now)
        log.info("demo events sent", extra={"accepted": await _send(client, events)})
        await finance_tour(client)
        await usage_limit_tour(client, ahead=year)
        await migration_tour(client)
        if hook is not None:
            await demo_webhooks.show(client, *hook, base_url, admin_key)
        start = (now - timedelta(days=30)).isoformat()
        print(f"demo: {len(events)} events sent for tenant '{DEMO_TENANT}'. Try:\n"
              f"  curl -H 'Authorization: Bearer {admin_key}' "
              f"'{base_url}/v1/usage?tenant={DEMO_TENANT}&meter=emails_sent&window=day"
              f"&tz=Europe/Paris&from={start.replace('+00:00', 'Z')}"
              f"&to={now.isoformat().replace('+00:00', 'Z')}'\n"
              f"  curl -H 'Authorization: Bearer {admin_key}' "
              f"'{base_url}/v1/tenants/{DEMO_TENANT}/check?module=crm&user=u-4'\n"
              f"  curl -H 'Authorization: Bearer {admin_key}' "
              f"'{base_url}/v1/invoices?tenant={DEMO_TENANT}'\n"
              f"  curl -H 'Authorization: Bearer {admin_key}' "
              f"'{base_url}/v1/tenants/{DEMO_TENANT}/upcoming-invoice'  "
              "(API calls: a usage line, R10)\n", flush=True)

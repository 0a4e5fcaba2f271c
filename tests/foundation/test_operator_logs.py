"""Operator visibility (docs/operating.md "Logs, metrics and the dashboard"): one access line
per request, fast path included, naming the key's id and never its secret; an audit line per
change saying who made it; the new Prometheus series on `/metrics`."""

from __future__ import annotations

import logging
from typing import Any

import httpx
import pytest

from tests.conftest import ADMIN, ADMIN_KEY, OWNER, RunningApp, create_tenant, eventually


def _access(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [r for r in caplog.records if r.name == "meterbill.access"]


def _audit(caplog: pytest.LogCaptureFixture, action: str) -> list[logging.LogRecord]:
    return [r for r in caplog.records
            if r.name == "meterbill.audit" and getattr(r, "action", None) == action]


def _of(record: logging.LogRecord, *fields: str) -> tuple[Any, ...]:
    """The JSON fields of a log line (extra attributes of its record)."""
    return tuple(getattr(record, name, "<missing>") for name in fields)


def _no_secret(caplog: pytest.LogCaptureFixture, *secrets: str) -> None:
    for record in caplog.records:
        text = f"{record.getMessage()} {record.__dict__}"
        for secret in secrets:
            assert secret not in text, f"secret in a {record.name} record"


async def _mint(client: httpx.AsyncClient, role: str, tenant: str | None = None
                ) -> tuple[str, str]:
    r = await client.post("/v1/api-keys", json={"role": role, "tenant": tenant}, headers=ADMIN)
    assert r.status_code == 201, r.text
    return r.json()["id"], r.json()["key"]


async def test_one_access_line_per_request(platform: RunningApp, unique: str,
                                           caplog: pytest.LogCaptureFixture) -> None:
    c = platform.client
    tenant = f"logs-{unique}"
    await create_tenant(c, tenant)
    key_id, secret = await _mint(c, "ingest", tenant)
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="meterbill.access"):
        # the check's fast path, a FastAPI route, a request with no key
        fast = await c.get(f"/v1/tenants/{tenant}/check", params={"module": "crm"},
                           headers={"Authorization": f"Bearer {secret}"})
        routed = await c.get(f"/v1/tenants/{tenant}",
                             headers={"Authorization": f"Bearer {secret}"})
        anonymous = await c.get(f"/v1/tenants/{tenant}")
    assert fast.status_code == 200, fast.text
    assert routed.status_code == 200, routed.text
    assert anonymous.status_code == 401
    lines = _access(caplog)
    assert len(lines) == 3
    seen = [_of(r, "method", "route", "status", "key_id") for r in lines]
    assert seen == [("GET", "/v1/tenants/{tenant}/check", 200, key_id),
                    ("GET", "/v1/tenants/{tenant}", 200, key_id),
                    ("GET", "/v1/tenants/{tenant}", 401, None)]
    assert all(_of(r, "latency_ms")[0] >= 0 for r in lines)
    _no_secret(caplog, secret, ADMIN_KEY)


async def test_audit_lines_say_who_changed_what(platform: RunningApp, unique: str,
                                                caplog: pytest.LogCaptureFixture) -> None:
    c = platform.client
    tenant = f"audit-{unique}"
    with caplog.at_level(logging.INFO, logger="meterbill"):
        await create_tenant(c, tenant)
        key_id, secret = await _mint(c, "ingest", tenant)
        bought = await c.post(f"/v1/tenants/{tenant}/purchases",
                              headers={"Authorization": f"Bearer {secret}"},
                              json={"actor": OWNER, "item": "seats-crm", "quantity": 2,
                                    "confirm": True})
        assert bought.status_code == 201, bought.text
        number = bought.json()["invoice"]
        credited = await c.post(f"/v1/invoices/{number}/credit-notes",
                                json={"amount": "1.00", "reason": "goodwill"}, headers=ADMIN)
        assert credited.status_code == 201, credited.text
        now = (await c.get("/v1/clock", headers=ADMIN)).json()["now"]
        moved = await c.put("/v1/clock", json={"now": now}, headers=ADMIN)
        assert moved.status_code == 200, moved.text

    (created,) = _audit(caplog, "tenant.create")
    assert _of(created, "key_id", "role", "tenant") == ("key-admin", "admin", tenant)
    minted = [r for r in _audit(caplog, "api_key.mint") if _of(r, "minted") == (key_id,)]
    assert [_of(r, "role", "minted_role", "tenant") for r in minted] == [
        ("admin", "ingest", tenant)]
    (purchase,) = _audit(caplog, "purchase")
    assert _of(purchase, "key_id", "role", "scope", "actor", "invoice", "status") == (
        key_id, "ingest", tenant, OWNER, number, "confirmed")
    (note,) = _audit(caplog, "credit_note")
    assert _of(note, "key_id", "invoice", "credit_note") == (
        "key-admin", number, credited.json()["number"])
    (clock,) = _audit(caplog, "clock.move")
    assert _of(clock, "key_id", "role", "scope", "after") == ("key-admin", "admin", None, now)
    _no_secret(caplog, secret, ADMIN_KEY)


async def test_metrics_expose_the_operator_series(platform: RunningApp, unique: str) -> None:
    c = platform.client
    await create_tenant(c, f"metrics-{unique}")
    names = ("consumer_lag_messages", "entitlements_outbox_backlog",
             "invoicing_invoices_issued_total", "invoicing_billing_runs_total",
             "metering_events_stored_total", "metering_events_duplicate_total",
             "metering_dead_letters_total", "http_requests_total")

    async def exposed() -> bool:
        text = (await c.get("/metrics")).text
        # Lag shows once each consumer has fetched from its partitions.
        return all(n.removesuffix("_total") in text for n in names) and all(
            f'consumer_lag_messages{{consumer="{loop}"' in text
            for loop in ("metering-consumer", "invoicing-consumer"))

    await eventually(exposed)

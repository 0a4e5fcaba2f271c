"""The webhooks API (docs/api.md, "Webhooks"): secrets shown once and never listed nor
logged, URLs refused naming `url`, every field bounded, tenant-limited keys confined to
their tenant, endpoint changes in the audit log."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import pytest
from standardwebhooks import Webhook

from shared.stack import Endpoints
from tests.conftest import ADMIN, RunningApp, create_tenant, eventually
from tests.webhooks.wh_support import deliveries, receiver, register, webhook_platform

START = datetime(2026, 3, 1, 9, tzinfo=UTC)


async def _key(app: RunningApp, role: str, tenant: str | None) -> dict[str, str]:
    minted = await app.client.post("/v1/api-keys", json={"role": role, "tenant": tenant},
                                   headers=ADMIN)
    assert minted.status_code == 201, minted.text
    return {"Authorization": f"Bearer {minted.json()['key']}"}


async def test_the_secret_is_shown_once_signs_and_is_never_listed_nor_logged(
        endpoints: Endpoints, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    tenant = f"wh-api-{unique}"
    caplog.set_level(logging.DEBUG)
    async with receiver() as hooks, webhook_platform(endpoints, unique, START) as app:
        created = await register(app.client, hooks.url, ["tenant.created"], tenant=None)
        listed = await app.client.get("/v1/webhooks", headers=ADMIN)
        await create_tenant(app.client, tenant)
        await eventually(lambda: _received(hooks))
        log = await deliveries(app.client, created["id"])
        stored = await app.runtime.redis.hgetall("wh:endpoints")

    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["id"].startswith("wh-")
    assert (created["url"], created["events"], created["tenant"]) == (
        hooks.url, ["tenant.created"], None)
    assert listed.json() == {"data": [{k: v for k, v in created.items() if k != "secret"}]}
    assert Webhook(secret).verify(hooks.received[0].body, hooks.received[0].headers)["data"][
        "tenant"] == tenant
    assert secret not in caplog.text
    assert secret not in str(stored)
    assert secret not in str(log)
    audit = [r for r in caplog.records if r.name == "meterbill.audit"]
    assert [(r.getMessage(), getattr(r, "webhook", None)) for r in audit
            if r.getMessage().startswith("webhook")] == [("webhook.create", created["id"])]


async def _received(hooks: Any) -> bool:
    return bool(hooks.received)


@pytest.mark.parametrize(("url", "why"), [
    ("ftp://hooks.example.com/x", "https"),
    ("http://hooks.example.com/x", "https"),
    ("https://10.1.2.3/x", "public"),
    ("https://192.168.0.10/x", "public"),
    ("https://169.254.169.254/latest/meta-data", "public"),
    ("https://[fd00::1]/x", "public"),
    ("https://[::ffff:10.0.0.1]/x", "public"),
    ("https://127.0.0.1/x", "public"),
    ("https://localhost/x", "public"),
    ("http://127.0.0.1:9/x", "https"),
    ("https://user:pw@hooks.example.com/x", "credentials"),
    ("https://hooks.example.com/x#frag", "fragment"),
    ("https://hooks.invalid/x", "resolve"),
    ("https:///x", "host"),
    ("https://hooks.example.com:99999/x", "URL"),
    ("https://hooks.example.com/" + "a" * 2100, "characters"),
])
async def test_bad_urls_are_refused_naming_url(platform: RunningApp, url: str, why: str) -> None:
    """The session platform runs with `WEBHOOKS_ALLOW_HTTP_LOOPBACK` off, as in production."""
    answer = await platform.client.post("/v1/webhooks", headers=ADMIN, json={
        "url": url, "events": ["invoice.issued"], "tenant": None})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "url"
    assert why in answer.json()["error"]["message"]


@pytest.mark.parametrize(("body", "field"), [
    ({"url": "https://h.example.com", "events": []}, "events"),
    ({"url": "https://h.example.com", "events": ["Invoice Issued"]}, "events.0"),
    ({"url": "https://h.example.com", "events": ["x" * 70 + ".y"]}, "events.0"),
    ({"url": "https://h.example.com", "events": [f"a.b{n}" for n in range(33)]}, "events"),
    ({"url": "https://h.example.com", "events": ["a.b"], "tenant": ""}, "tenant"),
    ({"url": "https://h.example.com", "events": ["a.b"], "secret": "mine"}, "secret"),
    ({"events": ["a.b"]}, "url"),
])
async def test_fields_are_bounded(platform: RunningApp, body: dict[str, Any],
                                  field: str) -> None:
    answer = await platform.client.post("/v1/webhooks", headers=ADMIN, json=body)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == field


async def test_tenant_limited_keys_see_and_change_their_tenants_webhooks_only(
        endpoints: Endpoints, unique: str, caplog: pytest.LogCaptureFixture) -> None:
    mine, theirs = f"wh-mine-{unique}", f"wh-theirs-{unique}"
    caplog.set_level(logging.INFO, logger="meterbill.audit")
    async with receiver() as hooks, webhook_platform(endpoints, unique, START) as app:
        c = app.client
        for tenant in (mine, theirs):
            await create_tenant(c, tenant)
        limited = await _key(app, "admin", mine)
        dashboard = await _key(app, "dashboard", None)
        everyone = await register(c, hooks.url, ["invoice.issued"])
        other = await register(c, hooks.url, ["invoice.issued"], tenant=theirs)
        own = await register(c, hooks.url, ["invoice.issued"], tenant=mine, headers=limited)
        refused = {
            "for another tenant": await c.post("/v1/webhooks", headers=limited, json={
                "url": hooks.url, "events": ["a.b"], "tenant": theirs}),
            "for every tenant": await c.post("/v1/webhooks", headers=limited, json={
                "url": hooks.url, "events": ["a.b"], "tenant": None}),
            "by a dashboard key": await c.post("/v1/webhooks", headers=dashboard, json={
                "url": hooks.url, "events": ["a.b"], "tenant": None}),
            "unknown tenant": await c.post("/v1/webhooks", headers=ADMIN, json={
                "url": hooks.url, "events": ["a.b"], "tenant": f"nobody-{unique}"}),
        }
        seen = (await c.get("/v1/webhooks", headers=limited)).json()["data"]
        hidden = [
            await c.get(f"/v1/webhooks/{other['id']}/deliveries", headers=limited),
            await c.get(f"/v1/webhooks/{everyone['id']}/deliveries", headers=limited),
            await c.delete(f"/v1/webhooks/{other['id']}", headers=limited),
            await c.post(f"/v1/webhooks/{other['id']}/deliveries/msg_x/retry",
                         headers=limited),
        ]
        deleted = await c.delete(f"/v1/webhooks/{own['id']}", headers=limited)
        again = await c.delete(f"/v1/webhooks/{own['id']}", headers=ADMIN)
        left = (await c.get("/v1/webhooks", headers=ADMIN)).json()["data"]

    assert [(r.status_code, r.json()["error"].get("field")) for r in refused.values()] == [
        (404, "tenant"), (403, "tenant"), (403, None), (404, "tenant")]
    assert [w["id"] for w in seen] == [own["id"]]
    assert [(r.status_code, r.json()["error"]["field"]) for r in hidden] == [(404, "id")] * 4
    assert (deleted.status_code, again.status_code) == (204, 404)
    assert sorted(w["id"] for w in left) == sorted([everyone["id"], other["id"]])
    audit = [(r.getMessage(), getattr(r, "webhook", None), getattr(r, "scope", None),
              getattr(r, "tenant", None)) for r in caplog.records
             if r.name == "meterbill.audit" and r.getMessage().startswith("webhook")]
    assert audit == [("webhook.create", everyone["id"], None, None),
                     ("webhook.create", other["id"], None, theirs),
                     ("webhook.create", own["id"], mine, mine),
                     ("webhook.delete", own["id"], mine, mine)]

"""The demo's webhook receiver: a local HTTP endpoint the demo registers (the embedded
platform allows loopback endpoints when it runs the demo), which checks each delivery's
signature with the `standardwebhooks` library, as a product backend would, and keeps a
count of what it got. Registered again at each start: the endpoint of an earlier run (its
receiver gone with that run) is deleted first."""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from typing import Any

import httpx
import orjson
import uvicorn
from standardwebhooks import Webhook, WebhookVerificationError

from shared.stack import free_port

log = logging.getLogger(__name__)

PATH = "/demo-webhook"
EVENTS = ["purchase.confirmed", "invoice.issued", "credit_note.issued", "lot.expired",
          "plan.changed", "usage.threshold_reached"]


async def request_body(receive: Any) -> bytes:
    """The whole body of an ASGI request (a local receiver's: the tests' and the bench's too)."""
    body = b""
    while True:
        message = await receive()
        body += bytes(message.get("body", b""))
        if not message.get("more_body"):
            return body


class DemoReceiver:
    def __init__(self) -> None:
        self.port = free_port()
        self.secret = ""
        self.received: Counter[str] = Counter()
        self.refused = 0
        self._server: uvicorn.Server | None = None
        self._task: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}{PATH}"

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = await request_body(receive)
        headers = {k.decode(): v.decode() for k, v in scope["headers"]}
        try:
            event = Webhook(self.secret).verify(body, headers)
            self.received[event["type"]] += 1
            status = 204
        except (WebhookVerificationError, ValueError, orjson.JSONDecodeError):
            self.refused += 1
            status = 400
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def start(self) -> None:
        config = uvicorn.Config(self, host="127.0.0.1", port=self.port, log_config=None,
                                access_log=False, lifespan="off")
        self._server = uvicorn.Server(config)
        self._task = asyncio.create_task(self._server.serve(), name="demo-webhook-receiver")
        while not self._server.started:
            if self._task.done():
                await self._task  # it could not listen: its error, raised
                return
            await asyncio.sleep(0.02)


async def register(client: httpx.AsyncClient) -> tuple[DemoReceiver, str] | None:
    """Start the receiver and register it for every tenant's `EVENTS`; None (the demo goes
    on without it) if the platform refuses the loopback URL."""
    listed = await client.get("/v1/webhooks")
    if listed.status_code != 200:  # a platform without the webhooks part
        log.warning("demo webhook not registered: %s", listed.text)
        return None
    for old in listed.json()["data"]:
        if old["url"].endswith(PATH):
            await client.delete(f"/v1/webhooks/{old['id']}")
    receiver = DemoReceiver()
    await receiver.start()
    created = await client.post("/v1/webhooks", json={"url": receiver.url, "events": EVENTS,
                                                      "tenant": None})
    if created.status_code != 201:
        log.warning("demo webhook not registered: %s", created.text)
        return None
    receiver.secret = created.json()["secret"]
    return receiver, created.json()["id"]


async def show(client: httpx.AsyncClient, receiver: DemoReceiver, webhook: str,
               base_url: str, admin_key: str) -> None:
    """What the receiver got so far, and the platform's delivery log of it."""
    for _ in range(50):  # the deliveries follow the events within moments
        if receiver.received:
            break
        await asyncio.sleep(0.1)
    log_page = (await client.get(f"/v1/webhooks/{webhook}/deliveries",
                                 params={"limit": 3})).json()["data"]
    got = ", ".join(f"{n} {t}" for t, n in sorted(receiver.received.items())) or "nothing yet"
    print(f"demo: webhook {webhook} -> {receiver.url}: signatures verified for {got}"
          f"{f'; {receiver.refused} refused' if receiver.refused else ''}", flush=True)
    for delivery in log_page:
        print(f"  {delivery['id']} {delivery['type']} ({delivery['tenant']}): "
              f"{delivery['status']} after {delivery['attempts']} attempt(s)", flush=True)
    print(f"  curl -H 'Authorization: Bearer {admin_key}' "
          f"'{base_url}/v1/webhooks/{webhook}/deliveries'", flush=True)

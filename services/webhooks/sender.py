"""One signed POST of a delivery, per the Standard Webhooks specification (docs/webhooks.md,
"What a receiver gets"), and the address check made before it.

Headers `webhook-id` (stable per endpoint and event: the receiver's dedupe key),
`webhook-timestamp` (Unix seconds) and `webhook-signature` (`v1,` + base64 of HMAC-SHA256
over `id.timestamp.body` with the endpoint's secret), signed by the `standardwebhooks`
library. The body is the event's bytes as `subscription-events` carried them.

An attempt is bounded in time (connection to last byte) and in what it reads back (the
first KiB of the answer, for the delivery log), so a slow receiver, or one answering
garbage without end, holds one attempt of its own endpoint and nothing else. Redirects are
not followed: a 3xx is a failed attempt, as is any answer outside 2xx.
"""

from __future__ import annotations

import asyncio
import socket
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final

import httpx
from standardwebhooks import Webhook

from services.webhooks.urls import Target, is_address, parse_url, refused_address
from shared.errors import ValidationFailed

LOG_BODY_BYTES: Final = 1_024
USER_AGENT: Final = "meterbill-webhooks/1"


@dataclass(frozen=True, slots=True)
class Attempt:
    ok: bool
    status: int | None
    body: str  # the answer's first KiB, for the delivery log
    error: str  # why the attempt failed without an answer, or ""


class AddressRefused(Exception):
    """A host that resolves to an address endpoints may not reach (urls.py)."""


async def vet_host(target: Target, allow_loopback: bool, timeout_s: float = 5.0) -> None:
    """Resolve the target's host; raise AddressRefused unless every address passes, or
    OSError / TimeoutError when it does not resolve."""
    if is_address(target.host):
        return  # an address written in the URL: parse_url checked it
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(timeout_s):
        infos = await loop.getaddrinfo(target.host, target.port, type=socket.SOCK_STREAM)
    refused = refused_address([str(info[4][0]) for info in infos], target, allow_loopback)
    if refused is not None:
        raise AddressRefused(f"{target.host} resolves to {refused}, not a public address")


def signed_headers(secret: str, delivery_id: str, body: bytes) -> dict[str, str]:
    # The wall clock, not the platform's: the timestamp guards the transport against
    # replays, and receivers compare it with their own wall clock (the platform clock may
    # be a manual one, set to another year, in a demo or a test).
    sent_at = datetime.fromtimestamp(int(time.time()), UTC)
    signature = Webhook(secret).sign(delivery_id, sent_at, body.decode())
    return {"webhook-id": delivery_id, "webhook-timestamp": str(int(sent_at.timestamp())),
            "webhook-signature": signature, "content-type": "application/json",
            "user-agent": USER_AGENT}


class Sender:
    def __init__(self, timeout_s: float, allow_loopback: bool) -> None:
        self._timeout_s = timeout_s
        self._allow_loopback = allow_loopback
        self._client = httpx.AsyncClient(
            follow_redirects=False, trust_env=False,
            timeout=httpx.Timeout(timeout_s),
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64))

    async def stop(self) -> None:
        await self._client.aclose()

    async def send(self, url: str, secret: str, delivery_id: str, body: bytes) -> Attempt:
        try:
            async with asyncio.timeout(self._timeout_s):
                await vet_host(parse_url(url, self._allow_loopback), self._allow_loopback)
                return await self._post(url, signed_headers(secret, delivery_id, body), body)
        except TimeoutError:
            return Attempt(False, None, "", f"no answer within {self._timeout_s:g} s")
        except AddressRefused as refused:
            return Attempt(False, None, "", str(refused))
        except ValidationFailed as refused:  # a URL the settings no longer admit
            return Attempt(False, None, "", refused.message)
        except (httpx.HTTPError, OSError) as error:
            return Attempt(False, None, "", f"{type(error).__name__}: {error}"[:LOG_BODY_BYTES])

    async def _post(self, url: str, headers: dict[str, str], body: bytes) -> Attempt:
        async with self._client.stream("POST", url, content=body, headers=headers) as answer:
            head = bytearray()
            async for chunk in answer.aiter_raw():
                head += chunk
                if len(head) >= LOG_BODY_BYTES:
                    break
            text = bytes(head[:LOG_BODY_BYTES]).decode(errors="replace")
            return Attempt(200 <= answer.status_code < 300, answer.status_code, text, "")

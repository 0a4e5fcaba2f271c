"""Writes the Redis client sends again after a broken connection (shared.redis.make_redis
retries connection errors) answer as the first call did when it ran: never applied twice.

A proxy in front of the real valkey runs the first call and then breaks the connection
before its answer comes back, so redis-py really sends it again."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any
from zoneinfo import ZoneInfo

from services.entitlements.store import Change, EntitlementsStore
from services.invoicing.state import Announcement, InvoiceState, IssueRequest, IssueResult
from shared.keys import EntitlementsKeys, InvoicingKeys
from shared.redis import make_redis
from shared.stack import Endpoints, free_port


class AnswerDropper:
    """Forwards to Redis; `drop_next_answer` swallows the next reply and cuts the client off,
    after running `meanwhile` (another writer getting in before the resend)."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self.drop_next_answer = False
        self.dropped = 0
        self.meanwhile: Callable[[], Awaitable[None]] | None = None

    async def _pipe_client(self, client_r: asyncio.StreamReader,
                           client_w: asyncio.StreamWriter) -> None:
        server_r, server_w = await asyncio.open_connection("127.0.0.1", self.target_port)

        async def upstream() -> None:
            while data := await client_r.read(65536):
                server_w.write(data)
            server_w.close()

        async def downstream() -> None:
            while data := await server_r.read(65536):
                if self.drop_next_answer:
                    self.drop_next_answer = False
                    self.dropped += 1
                    if self.meanwhile is not None:
                        await self.meanwhile()
                    client_w.close()
                    server_w.close()
                    return
                client_w.write(data)
            client_w.close()

        await asyncio.gather(upstream(), downstream(), return_exceptions=True)

    @asynccontextmanager
    async def running(self) -> AsyncIterator[str]:
        server = await asyncio.start_server(self._pipe_client, "127.0.0.1", self.port)
        try:
            yield f"redis://127.0.0.1:{self.port}/0"
        finally:
            server.close()


async def test_a_commit_resent_after_another_writer_is_applied_once(
        endpoints: Endpoints, unique: str) -> None:
    direct = make_redis(endpoints.redis_url)
    proxy = AnswerDropper(int(endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]))
    prefix = f"resent-{unique}"
    async with proxy.running() as url:
        via_proxy = make_redis(url)
        store = EntitlementsStore(via_proxy, prefix=prefix)
        other = EntitlementsStore(direct, prefix=prefix)
        try:
            async def another_writer() -> None:
                result = await other.commit("t", 1, b'{"v":2}', Change(history=[b'"B"']), 60)
                assert result.outcome == "committed"

            # Redis learns the script first, so the answer dropped below is the commit's.
            await store.commit("warm-up", 0, b"{}", Change(), 60)
            proxy.meanwhile = another_writer
            proxy.drop_next_answer = True
            result = await store.commit("t", 0, b'{"v":1}', Change(history=[b'"A"']), 60)
            assert proxy.dropped == 1  # the answer was lost and the call sent again
            assert result.outcome == "committed"  # not a conflict to decide again on
            history = await direct.xrange(store.keys.history("t")) or []
            assert [entry and entry["entry"] for _, entry in history] == ['"A"', '"B"']
        finally:
            await via_proxy.aclose()
            await direct.aclose()


ISSUED = datetime(2026, 3, 1, tzinfo=UTC)


@asynccontextmanager
async def invoice_state_behind_a_dropper(endpoints: Endpoints, unique: str
                                         ) -> AsyncIterator[tuple[InvoiceState, AnswerDropper,
                                                                  Any]]:
    """Invoicing's numbering state talking to valkey through an `AnswerDropper`, the dropper,
    and a client straight to valkey to look at what was written."""
    direct = make_redis(endpoints.redis_url)
    proxy = AnswerDropper(int(endpoints.redis_url.rsplit(":", 1)[1].split("/")[0]))
    async with proxy.running() as url:
        via_proxy = make_redis(url)
        try:
            yield (InvoiceState(via_proxy, InvoicingKeys(f"resent-{unique}"),
                                EntitlementsKeys(), ZoneInfo("UTC")), proxy, direct)
        finally:
            await via_proxy.aclose()
            await direct.aclose()


async def test_a_credit_note_call_resent_issues_one_note(endpoints: Endpoints,
                                                         unique: str) -> None:
    async with invoice_state_behind_a_dropper(endpoints, unique) as (state, proxy, direct):
        template = b'{"number":"@@NUMBER@@"}'
        event = b'{"time":"@@ISSUED_AT@@","data":{"number":"@@NUMBER@@"}}'
        # Redis learns the script first, so the answer dropped below is the credit's.
        first = await state.credit("INV-0", 1000, 100, ISSUED, template,
                                   Announcement("event-0", "acme", event))
        assert (first.outcome, first.number) == ("issued", "CN-2026-000001")
        proxy.drop_next_answer = True
        resent = await state.credit("INV-1", 1000, 400, ISSUED, template,
                                    Announcement("event-1", "acme", event))
        assert proxy.dropped == 1
        # The answer of the call that ran, and the only note numbered for it.
        assert (resent.outcome, resent.number) == ("replayed", "CN-2026-000002")
        assert await state.credited_minor("INV-1") == 400
        assert await direct.hlen(state.keys.pending) == 2  # INV-0's note and this one
        # One announcement per note, filled as the note was numbered (R9.3).
        rows: Any = await direct.xrange(state.keys.outbox)
        announced = [(f["id"], f["value"]) for _, f in rows]
        assert announced == [
            ("event-0", '{"time":"2026-03-01T00:00:00Z","data":{"number":"CN-2026-000001"}}'),
            ("event-1", '{"time":"2026-03-01T00:00:00Z","data":{"number":"CN-2026-000002"}}')]


async def test_an_invoice_call_resent_issues_one_invoice(endpoints: Endpoints,
                                                         unique: str) -> None:
    """The billing run fills each document with the instant its numbering call answers; a
    resent call answers as the one that ran, without an instant, and the run then reads the
    document that call kept pending (services.invoicing.service._issued_documents)."""
    async with invoice_state_behind_a_dropper(endpoints, unique) as (state, proxy, _):
        template = b'{"number":"@@NUMBER@@","issued_at":"@@ISSUED_AT@@"}'
        event = b'{"time":"@@ISSUED_AT@@","data":{"number":"@@NUMBER@@"}}'

        def request(day: str) -> IssueRequest:
            return IssueRequest(marker_key=state.keys.billed("acme"), field=day,
                                kind="INV", issued_at=ISSUED, template=template,
                                announcement=Announcement(f"event-{day}", "acme", event))

        # Redis learns the script first, so the answer dropped below is the invoice's.
        first, = await state.issue([request("2026-02-01")])
        assert first == IssueResult(True, "INV-2026-000001", "2026-03-01T00:00:00Z")
        proxy.drop_next_answer = True
        resent, = await state.issue([request("2026-03-01")])
        assert proxy.dropped == 1
        # The number of the call that ran, the only one taken; no instant in the answer.
        assert resent == IssueResult(True, "INV-2026-000002", "")
        kept = await state.pending_of(["INV-2026-000002", "INV-2026-000009"])
        assert kept == {"INV-2026-000002":
                        b'{"number":"INV-2026-000002","issued_at":"2026-03-01T00:00:00Z"}'}

"""`make run`: the whole platform in one process on the embedded stack.

Starts tansu and valkey as children and chDB in-process (shared.stack), serves the three
services' routes on one port (docs/api.md "Running it"), then loads the demo tenant and events.
With KAFKA_BOOTSTRAP, REDIS_URL and CLICKHOUSE_DSN all set it uses those servers instead.
"""

from __future__ import annotations

import asyncio
import logging
import os
import secrets
import signal
import sys
from types import FrameType

import uvicorn
import uvloop

from services import demo
from services.console.part import ConsolePart
from services.entitlements.part import EntitlementsPart
from services.invoicing.part import InvoicingPart
from services.metering.part import MeteringPart
from services.webhooks.part import WebhooksPart
from shared.app import ServicePart, create_app
from shared.kafka import ensure_topics, platform_topics
from shared.observability import configure_logging
from shared.settings import CommonSettings
from shared.stack import EmbeddedStack, StackError

log = logging.getLogger("embedded")


def _uses_external_servers(settings: CommonSettings) -> bool:
    return bool(settings.kafka_bootstrap and settings.redis_url and settings.clickhouse_dsn)


async def keep_alive(stack: EmbeddedStack, settings: CommonSettings) -> None:
    """A child that dies is started again: the platform heals itself instead of answering
    503 until someone restarts it."""
    while True:
        await asyncio.sleep(0.5)
        revived = await asyncio.to_thread(stack.revive)
        if revived:
            log.warning("restarted the embedded %s", ", ".join(revived))
        if "tansu" in revived:
            await ensure_topics(settings.kafka_bootstrap, platform_topics(settings))


async def serve(settings: CommonSettings, with_demo: bool, stack: EmbeddedStack | None) -> None:
    overrides = settings.model_dump(exclude_unset=False)
    embedded = stack is not None
    if embedded and "INGEST_ACK" not in os.environ:
        # The embedded broker keeps nothing across a restart: a 202 must mean "stored".
        overrides["ingest_ack"] = "stored"
    if with_demo and "WEBHOOKS_ALLOW_HTTP_LOOPBACK" not in os.environ:
        # The demo registers a webhook to a receiver of its own, on this machine.
        overrides["webhooks_allow_http_loopback"] = True
    parts: list[ServicePart] = [MeteringPart(overrides), EntitlementsPart(overrides),
                                InvoicingPart(overrides), WebhooksPart(overrides),
                                ConsolePart(overrides)]
    app = create_app(settings, parts)
    # Requests still running 3 s after SIGTERM are cancelled (a long clock move among them),
    # so the platform stops within seconds whatever it is doing: the five parts' stops, the
    # broker's and valkey's come after, and a loaded machine stretches them.
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None,
                            access_log=False, lifespan="on", timeout_graceful_shutdown=3)
    server = uvicorn.Server(config)
    serving = asyncio.create_task(server.serve())
    while not server.started:
        if serving.done():
            await serving
            return
        await asyncio.sleep(0.05)
    healer = None if stack is None else asyncio.create_task(keep_alive(stack, settings))
    base = f"http://{settings.host}:{settings.port}"
    print(f"\nmeterbill is serving on {base}\n"
          f"  API docs:   {base}/docs\n"
          f"  console:    {base}/console (sign in with the admin key)\n"
          f"  readiness:  {base}/readyz\n"
          f"  admin key:  {settings.admin_api_key}\n", flush=True)
    if with_demo:
        try:
            await demo.load(base, settings.admin_api_key)
        except Exception:
            log.exception("loading the demo failed; the platform keeps running")
    try:
        await serving
    finally:
        if healer is not None:
            healer.cancel()


def _exit_quietly(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main() -> None:
    settings = CommonSettings()
    configure_logging(settings.log_level)
    if not settings.admin_api_key:
        settings = settings.model_copy(
            update={"admin_api_key": f"mb_admin_{secrets.token_urlsafe(24)}"})
    stack: EmbeddedStack | None = None
    if not _uses_external_servers(settings):
        stack = EmbeddedStack(settings.data_dir)
        try:
            endpoints = stack.start()
        except StackError as exc:
            print(f"error: {exc}", file=sys.stderr)
            raise SystemExit(1) from None
        settings = settings.model_copy(update={
            "kafka_bootstrap": endpoints.kafka_bootstrap, "redis_url": endpoints.redis_url,
            "clickhouse_dsn": endpoints.clickhouse_dsn})
    # uvicorn shuts down gracefully on SIGTERM/SIGINT, then re-raises the signal: turn it into
    # a normal exit so the stack below is stopped in order.
    signal.signal(signal.SIGTERM, _exit_quietly)
    signal.signal(signal.SIGINT, _exit_quietly)
    try:
        uvloop.run(serve(settings, with_demo="--no-demo" not in sys.argv, stack=stack))
    except SystemExit:
        pass
    finally:
        if stack is not None:
            stack.stop()


if __name__ == "__main__":
    main()

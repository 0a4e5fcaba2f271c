"""Schemathesis against the live in-process platform: no route, called as the admin, may answer
5xx — neither for a generated request on its own (stateless) nor along the links from a
creation to the reads and changes of what it created (stateful).

Schemathesis's ASGI transport runs the app in an event loop of its own, but the app's Redis
and Kafka clients belong to the session loop. So Hypothesis runs in a worker thread and each
case is sent through the session loop (`Sender`)."""

from __future__ import annotations

import asyncio
import contextlib
import copy
import logging
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, Phase, seed, settings
from hypothesis.errors import FlakyStrategyDefinition
from schemathesis import APIOperation, Case, Config, Response, openapi
from schemathesis.checks import not_a_server_error
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok
from schemathesis.generation.hypothesis.builder import (
    HypothesisTestConfig,
    HypothesisTestMode,
    create_test,
)
from schemathesis.generation.stateful.state_machine import APIStateMachine
from schemathesis.schemas import BaseSchema
from starlette.types import Receive, Scope, Send

from tests.conftest import ADMIN, RunningApp

log = logging.getLogger(__name__)

# schemathesis draws from `random` inside its strategies; Hypothesis warns, the run is the same.
pytestmark = pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")

BOUNDED = settings(max_examples=50, deadline=None, derandomize=True, database=None,
                   suppress_health_check=[HealthCheck.too_slow])
# No shrinking: a scenario replayed against the live platform's changed state takes another path.
SCENARIOS = settings(BOUNDED, max_examples=40, stateful_step_count=8, phases=[Phase.generate])
SUITES = 4
CALL_TIMEOUT_S = 30

# Our links only: inference would also chain `GET /v1/api-keys` to `DELETE /v1/api-keys/{key_id}`
# and could revoke the bootstrap admin key every later test signs in with.
CONFIG = Config.from_dict({"phases": {"stateful": {"inference": {"algorithms": []}}}})

# Inputs the routes read raw or take as plain strings, described as docs/api.md and
# docs/events.md do, so that generation gets past the first parse to the code behind it.
CLOUD_EVENT = {
    "type": "object",
    "required": ["specversion", "id", "source", "type", "subject", "time", "data"],
    "properties": {
        "specversion": {"enum": ["1.0"]}, "id": {"type": "string"},
        "source": {"type": "string"}, "subject": {"type": "string"},
        "type": {"enum": ["user.access.granted", "user.access.revoked", "email.sent",
                          "company.created", "company.deleted", "support.session.completed"]},
        "time": {"type": "string", "format": "date-time"}, "data": {"type": "object"},
    },
}
EVENTS_BODY = {"required": True, "content": {"application/json": {"schema": {
    "anyOf": [CLOUD_EVENT, {"type": "array", "items": CLOUD_EVENT}]}}}}
MONTH = {"type": "string", "pattern": r"^\d{4}-\d{2}$"}
INSTANT = {"type": "string", "format": "date-time"}
QUERY_FORMATS = {("/v1/invoices", "month"): MONTH, ("/v1/invoices/export", "month"): MONTH,
                 ("/v1/usage", "from"): INSTANT, ("/v1/usage", "to"): INSTANT,
                 ("/v1/usage/events", "from"): INSTANT, ("/v1/usage/events", "to"): INSTANT}

TENANT_READS = {
    "get_tenant": "GetTenant",
    "patch_tenant": "PatchTenant",
    "history": "TenantHistory",
    "check": "TenantCheck",
    "upcoming": "UpcomingInvoice",
    "purchase": "Purchase",
}
INVOICE_READS = {
    "get_invoice": "GetInvoice",
    "credit_note": "CreditNote",
}


class Sender:
    """Sends a case from Hypothesis's thread to the app on the session loop, as the admin.
    Its own client hands back the app's 500s as responses, where the fixture's client raises."""

    def __init__(self, running: RunningApp, loop: asyncio.AbstractEventLoop) -> None:
        self.app = running.app
        transport = httpx.ASGITransport(app=self.serve, raise_app_exceptions=False)
        self.client = httpx.AsyncClient(transport=transport, base_url="http://test")
        self.loop = loop

    async def serve(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The app as uvicorn serves it: an exception that escapes it (from a fast path, or
        re-raised after the 500 it caused) is logged with its trace."""
        try:
            await self.app(scope, receive, send)
        except Exception:
            log.exception("Exception in ASGI application")
            raise

    def __call__(self, case: Case[Any]) -> httpx.Response:
        kwargs = case.as_transport_kwargs(base_url="http://test", headers=ADMIN)
        request = self.client.request(
            kwargs["method"], kwargs["url"], params=kwargs.get("params"),
            headers=kwargs.get("headers"), json=kwargs.get("json"),
            content=kwargs.get("data"))  # a raw body: `content` in httpx
        return asyncio.run_coroutine_threadsafe(request, self.loop).result(CALL_TIMEOUT_S)


def described(document: dict[str, Any], meters: list[str]) -> dict[str, Any]:
    """The platform's document with the inputs above described, and the usage meters named."""
    doc = copy.deepcopy(document)  # FastAPI caches its document: never change that one
    paths = doc["paths"]
    paths["/v1/events"]["post"]["requestBody"] = EVENTS_BODY
    for (path, name), schema in QUERY_FORMATS.items():
        [parameter] = [p for p in paths[path]["get"]["parameters"] if p["name"] == name]
        parameter["schema"] = schema
    for path in ("/v1/usage", "/v1/usage/events"):
        narrow_query(paths[path]["get"], meter=meters)
    billing = doc["components"]["schemas"]["BillingRunRequest"]["properties"]
    billing["date"] = {"type": "string", "format": "date"}
    return doc


def linked(document: dict[str, Any], catalog: dict[str, Any]) -> dict[str, Any]:
    """The document with OpenAPI links from creations to reads (the platform's has none), and
    tenant and purchase bodies narrowed to the catalog, so that creations succeed often enough
    for the links to be followed."""
    doc = copy.deepcopy(document)
    paths, schemas = doc["paths"], doc["components"]["schemas"]
    tenant = {name: {"operationId": op, "parameters": {"tenant": "$response.body#/id"}}
              for op, name in TENANT_READS.items()}
    tenant["BillTenant"] = {"operationId": "billing_run",
                            "requestBody": {"tenant": "$response.body#/id"}}
    add_links(paths["/v1/tenants"]["post"], "201", tenant)
    add_links(paths["/v1/api-keys"]["post"], "201", {"RevokeKey": {
        "operationId": "revoke_key",
        "parameters": {"key_id": "$response.body#/id"}}})
    add_links(paths["/v1/billing-runs"]["post"], "200", invoice_links("/issued/0"))
    add_links(paths["/v1/invoices"]["get"], "200", invoice_links("/data/0/number"))
    narrow(schemas["TenantCreate"], plan=[p["id"] for p in catalog["plans"]],
           currency=[catalog["currency"]], vat_rate=["0.20", "0.055", "0"],
           time_zone=["Europe/Paris", "UTC", "America/New_York", "Pacific/Kiritimati"])
    narrow(schemas["PurchaseRequest"],
           item=[x["id"] for x in [*catalog["plans"], *catalog["packs"]]])
    return doc


def invoice_links(pointer: str) -> dict[str, Any]:
    return {name: {"operationId": op, "parameters": {"number": f"$response.body#{pointer}"}}
            for op, name in INVOICE_READS.items()}


def add_links(operation: dict[str, Any], status: str, links: dict[str, Any]) -> None:
    operation["responses"][status]["links"] = links


def narrow(schema: dict[str, Any], **choices: list[str]) -> None:
    for field, values in choices.items():
        schema["properties"][field] = {"enum": values}


def narrow_query(operation: dict[str, Any], **choices: list[str]) -> None:
    for parameter in operation["parameters"]:
        if parameter["name"] in choices:
            parameter["schema"] = {"enum": choices[parameter["name"]]}


def load(document: dict[str, Any]) -> BaseSchema:
    # The session shares one platform and one manual clock: moving the clock at random would
    # disturb every later test, so `PUT /v1/clock` is never generated.
    return openapi.from_dict(document, config=CONFIG).exclude(method="PUT", path="/v1/clock")


def fuzz(operation: APIOperation[Any, Any, Any, Any], send: Sender) -> str | None:
    """One operation as schemathesis's own runner tests it: the document's examples, boundary
    values of each input (coverage), then random valid and invalid requests (fuzzing).
    The first 5xx, shrunk, as a report."""
    def check(case: Case[Any]) -> None:
        case.validate_response(send(case), checks=[not_a_server_error])

    phases = HypothesisTestConfig(project=operation.schema.config, settings=BOUNDED,
                                  modes=list(HypothesisTestMode))
    try:
        create_test(operation=operation, test_func=check, config=phases)()
    except (AssertionError, BaseExceptionGroup) as failure:
        return f"{operation.label}: {message(failure)}"
    return None


def machine(schema: BaseSchema, send: Sender, found: dict[str, str]) -> type[APIStateMachine]:
    """schemathesis's state machine for the links, sending through `send`. A 5xx does not stop
    the scenario (a replay would find another state): the first per operation goes to `found`,
    with the scenario that led to it."""
    class Machine(schema.as_state_machine()):  # type: ignore[misc]
        def setup(self) -> None:
            self.steps: list[str] = []

        def call(self, case: Case[Any], **kwargs: Any) -> Response:
            response = send(case)
            self.steps.append(f"[{response.status_code}] {case.as_curl_command()}")
            return Response.from_any(response)

        def validate_response(self, response: Response, case: Case[Any], *args: Any,
                              **kwargs: Any) -> None:
            try:
                case.validate_response(response, checks=[not_a_server_error])
            except FailureGroup as failure:
                scenario = "\n".join(self.steps)
                found.setdefault(case.operation.label, f"stateful {case.operation.label}: "
                                 f"{failure.message}Scenario:\n{scenario}\n")

    return Machine


def scenarios(schema: BaseSchema, send: Sender) -> list[str]:
    """Chains along the links, in a few seeded suites: a suite ends early when Hypothesis
    replays a scenario that takes another path on the live platform (FlakyStrategyDefinition);
    the next goes on."""
    found: dict[str, str] = {}
    links = machine(schema, send, found)
    for suite in range(SUITES):
        links.rule_order_seed = suite  # each suite opens with other operations
        with contextlib.suppress(FlakyStrategyDefinition):
            seed(suite)(links).run(settings=SCENARIOS)
    return list(found.values())


def message(failure: BaseException) -> str:
    """schemathesis's report (a FailureGroup's message), in whatever Hypothesis wrapped it:
    several distinct failures, or one its replay did not see again."""
    if isinstance(failure, FailureGroup):
        return failure.message
    if isinstance(failure, BaseExceptionGroup):
        return "\n".join([failure.message, *(message(inner) for inner in failure.exceptions)])
    return str(failure)


def run_all(stateless: BaseSchema, stateful: BaseSchema, send: Sender) -> list[str]:
    reports = [fuzz(result.ok(), send) if isinstance(result, Ok) else str(result.err())
               for result in stateless.get_all_operations()]
    return [report for report in reports if report is not None] + scenarios(stateful, send)


async def test_no_route_answers_5xx(platform: RunningApp) -> None:
    """Each 5xx found is listed with its request and response; the app's log of its cause
    (trace or unavailable store) follows in pytest's captured log."""
    catalog = (await platform.client.get("/v1/catalog", headers=ADMIN)).json()
    meters = (await platform.client.get("/v1/meters", headers=ADMIN)).json()["data"]
    document = described(platform.app.openapi(), [m["slug"] for m in meters])
    send = Sender(platform, asyncio.get_running_loop())
    try:
        reports = await asyncio.to_thread(run_all, load(document),
                                          load(linked(document, catalog)), send)
    finally:
        await send.client.aclose()
    if reports:
        pytest.fail("\n\n".join(reports), pytrace=False)

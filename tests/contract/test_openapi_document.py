"""The OpenAPI document the platform serves (`/openapi.json`, docs/api.md): a valid OpenAPI
3.1 document that declares what the routes read by hand (the check's query, the events
body), the API key as a bearer scheme, and a typed schema for every main answer."""

from __future__ import annotations

from typing import Any

import pytest
from openapi_spec_validator import validate

from tests.conftest import RunningApp

OPEN = ("/healthz", "/readyz", "/metrics")
# The main answers (docs/api.md): (path, method, status) whose JSON must be typed.
TYPED = [
    ("/v1/tenants", "post", "201"), ("/v1/tenants/{tenant}", "get", "200"),
    ("/v1/tenants/{tenant}", "patch", "200"),
    ("/v1/tenants/{tenant}/purchases", "post", "200"),
    ("/v1/tenants/{tenant}/purchases", "post", "201"),
    ("/v1/tenants/{tenant}/purchases", "post", "202"),
    ("/v1/tenants/{tenant}/check", "get", "200"), ("/v1/check", "post", "200"),
    ("/v1/tenants/{tenant}/history", "get", "200"), ("/v1/catalog", "get", "200"),
    ("/v1/invoices/{number}", "get", "200"), ("/v1/invoices", "get", "200"),
    ("/v1/invoices/{number}/credit-notes", "post", "201"),
    ("/v1/tenants/{tenant}/upcoming-invoice", "get", "200"),
    ("/v1/usage", "get", "200"), ("/v1/events", "post", "202"),
    ("/v1/api-keys", "post", "201"), ("/v1/api-keys", "get", "200"),
    ("/v1/clock", "get", "200"), ("/v1/clock", "put", "200"),
    ("/v1/billing-runs", "post", "200"),
]


@pytest.fixture
async def document(platform: RunningApp) -> dict[str, Any]:
    response = await platform.client.get("/openapi.json")
    assert response.status_code == 200
    doc: dict[str, Any] = response.json()
    return doc


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(path, method, op) for path, item in doc["paths"].items()
            for method, op in item.items()]


async def test_the_document_is_valid_openapi(document: dict[str, Any]) -> None:
    validate(document)


async def test_every_keyed_route_names_the_bearer_scheme(document: dict[str, Any]) -> None:
    [(name, scheme)] = document["components"]["securitySchemes"].items()
    assert scheme["type"] == "http"
    assert scheme["scheme"] == "bearer"
    for path, method, op in operations(document):
        expected: list[dict[str, list[str]]] | None = None if path in OPEN else [{name: []}]
        assert op.get("security") == expected, f"{method} {path}"
        if path not in OPEN:
            assert {"401", "403"} <= op["responses"].keys(), f"{method} {path}"


async def test_the_check_declares_its_query(document: dict[str, Any]) -> None:
    op = document["paths"]["/v1/tenants/{tenant}/check"]["get"]
    query = {p["name"]: p for p in op["parameters"] if p["in"] == "query"}
    assert set(query) == {"module", "user", "feature", "quantity", "level"}
    assert not any(p["required"] for p in query.values())
    assert query["quantity"]["schema"]["pattern"]


async def test_events_declare_an_event_or_a_batch(document: dict[str, Any]) -> None:
    body = document["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["required"]
    batch = body["content"]["application/cloudevents-batch+json"]["schema"]
    assert batch["type"] == "array"
    assert "specversion" in resolved(document, batch["items"])["properties"]
    single, array = body["content"]["application/json"]["schema"]["oneOf"]
    assert resolved(document, single)["required"]
    assert array["type"] == "array"
    assert {"413", "422", "202"} <= document["paths"]["/v1/events"]["post"]["responses"].keys()


def resolved(doc: dict[str, Any], schema: dict[str, Any]) -> dict[str, Any]:
    ref = schema.get("$ref")
    if ref is None:
        return schema
    name = ref.removeprefix("#/components/schemas/")
    found: dict[str, Any] = doc["components"]["schemas"][name]
    return found


@pytest.mark.parametrize(("path", "method", "status"), TYPED)
async def test_main_answers_are_typed(document: dict[str, Any], path: str, method: str,
                                      status: str) -> None:
    response = document["paths"][path][method]["responses"][status]
    schema = resolved(document, response["content"]["application/json"]["schema"])
    assert schema.get("properties"), f"{method} {path} {status}: untyped {schema}"


async def test_errors_csv_and_pdf_are_documented(document: dict[str, Any]) -> None:
    paths = document["paths"]
    error = paths["/v1/tenants/{tenant}"]["get"]["responses"]["404"]["content"]
    assert resolved(document, error["application/json"]["schema"])["properties"]["error"]
    assert "text/csv" in paths["/v1/invoices/export"]["get"]["responses"]["200"]["content"]
    invoice = paths["/v1/invoices/{number}"]["get"]["responses"]
    assert {"application/json", "text/csv", "application/pdf"} <= invoice["200"]["content"].keys()
    assert invoice["200"]["content"]["application/pdf"]["schema"]["format"] == "binary"
    assert "406" in invoice  # an Accept that allows none of the three
    assert paths["/v1/api-keys/{key_id}"]["delete"]["responses"]["204"]

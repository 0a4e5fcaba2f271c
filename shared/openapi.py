"""What the OpenAPI document (`/openapi.json`) says beyond what FastAPI infers: the error
shape, the answers' status codes, the API key as an HTTP bearer scheme, and the links from
creations to what can be done with what they created.

Documentation only: nothing here runs on a request, so declaring a status or a schema never
changes an answer (many routes answer `Response` bytes they build themselves).
"""

from __future__ import annotations

from typing import Any

from fastapi.security import HTTPBearer
from pydantic import BaseModel, ConfigDict, Field

# The API key (docs/api.md "Keys"). `auto_error=False`: shared.auth reads the header itself,
# with its own 401 messages; this object only names the scheme in the document.
BEARER = HTTPBearer(auto_error=False, scheme_name="apiKey", bearerFormat="API key",
                    description="An API key: `Authorization: Bearer <key>`. Its role and "
                    "tenant scope decide what it may call.")


class ErrorDetail(BaseModel):
    code: str = Field(examples=["validation_error"])
    message: str = Field(examples=["quantity: must be an integer"])
    field: str | None = Field(default=None, description="the input to blame, when one is",
                              examples=["quantity"])


class ErrorBody(BaseModel):
    """Every 4xx and 503 (shared.errors): `{"error": {"code", "message", "field"?}}`."""

    model_config = ConfigDict(extra="allow")
    error: ErrorDetail


ERROR_TEXT: dict[int, str] = {
    400: "the body is not valid JSON",
    401: "missing, unknown or revoked API key",
    403: "the key's role may not call this route",
    404: "not found, or outside the key's tenant",
    406: "the `Accept` header allows none of the media types the route answers in",
    409: "conflict with the current state, or an idempotency key reused with another body",
    413: "too many items, or a body over the size limit",
    422: "an input is invalid; `field` names it",
    503: "a store is unavailable (`redis_unavailable`, …); retry later",
}
# Every route behind a key may answer these.
KEYED = (401, 403, 503)


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """`responses=` entries for error statuses, each in the error shape."""
    return {status: {"model": ErrorBody, "description": ERROR_TEXT[status]}
            for status in sorted({*KEYED, *statuses})}


def answers(model: type[BaseModel], *more: int, status: int = 200,
            description: str = "") -> dict[int | str, dict[str, Any]]:
    """`responses=` for a route whose answer FastAPI does not render through a response
    model (it returns `Response` bytes, or a dict passed through `response_model=Any`,
    whose empty schema this one fills): the answer's schema, and its error statuses."""
    documented: dict[int | str, dict[str, Any]] = {
        status: {"model": model, "description": description or model.__doc__ or "the answer"}}
    return {**documented, **errors(*more)}


def component_schema(model: type[BaseModel]) -> dict[str, Any]:
    """A model's schema for `openapi_extra`, its nested models referred to in the document's
    components (where FastAPI puts them for the routes that take them as bodies)."""
    schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
    schema.pop("$defs", None)
    return schema


# Models that routes refer to by `component_ref` (bodies they read by hand), added to the
# document's components by `add_referenced_components` when the document refers to them.
_REFERRED: dict[str, type[BaseModel]] = {}


def component_ref(model: type[BaseModel]) -> dict[str, Any]:
    """A `$ref` to the model's schema in the document's components, for `openapi_extra`: one
    named schema however many times a route mentions it (client generators name it once)."""
    _REFERRED[model.__name__] = model
    return {"$ref": f"#/components/schemas/{model.__name__}"}


def add_referenced_components(document: dict[str, Any]) -> None:
    """Put the schema of every model named through `component_ref` that the document refers to
    but FastAPI did not list in its components."""
    schemas = document.setdefault("components", {}).setdefault("schemas", {})
    text = repr(document["paths"])
    for name, model in _REFERRED.items():
        if name not in schemas and f"'#/components/schemas/{name}'" in text:
            schemas[name] = component_schema(model)
    document["components"]["schemas"] = dict(sorted(schemas.items()))


# OpenAPI links from a creation to the operations on what it created: clients and contract
# tests (stateful schemathesis) follow them. (method, path, status) -> link name ->
# (operation id, the parameter and where its value is in the creation's answer).
_LINKS: dict[tuple[str, str, str], dict[str, tuple[str, str, str]]] = {
    ("post", "/v1/tenants", "201"): {
        "GetTenant": ("get_tenant", "tenant", "$response.body#/id"),
        "PatchTenant": ("patch_tenant", "tenant", "$response.body#/id"),
        "TenantHistory": ("history", "tenant", "$response.body#/id"),
        "TenantCheck": ("check", "tenant", "$response.body#/id"),
        "UpcomingInvoice": ("upcoming", "tenant", "$response.body#/id"),
        "Purchase": ("purchase", "tenant", "$response.body#/id"),
    },
    ("post", "/v1/api-keys", "201"): {
        "RevokeKey": ("revoke_key", "key_id", "$response.body#/id"),
    },
    ("post", "/v1/billing-runs", "200"): {
        "GetInvoice": ("get_invoice", "number", "$response.body#/issued/0"),
        "CreditNote": ("credit_note", "number", "$response.body#/issued/0"),
    },
    ("get", "/v1/invoices", "200"): {
        "GetInvoice": ("get_invoice", "number", "$response.body#/data/0/number"),
        "CreditNote": ("credit_note", "number", "$response.body#/data/0/number"),
    },
}


def add_links(document: dict[str, Any]) -> None:
    """Declare `_LINKS` on the operations the document has."""
    operations = {op.get("operationId") for item in document["paths"].values()
                  for op in item.values() if isinstance(op, dict)}
    for (method, path, status), links in _LINKS.items():
        answer = document["paths"].get(path, {}).get(method, {}).get("responses", {}).get(status)
        if answer is None:
            continue
        answer["links"] = {
            name: {"operationId": op, "parameters": {parameter: value}}
            for name, (op, parameter, value) in links.items() if op in operations}


def operation_id(route: Any) -> str:
    """The operation id: the route function's name (`get_invoice`), which the document's
    client generators turn into function names; FastAPI's default appends path and method."""
    name: str = route.name
    return name

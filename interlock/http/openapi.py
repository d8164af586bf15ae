"""The OpenAPI document: FastAPI's, plus the bodies that routes parse themselves.

`/v1/decide`, `/v1/decide/batch` and `/v1/commands` read their raw body (for speed, and so a
list of commands can stop at the first bad one while keeping those before it), so FastAPI does
not see their body models; they are added here. Predicates are validated by the domain's own
parser, not by their dataclasses, so their schemas are replaced with the predicate language.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from pydantic import TypeAdapter

from domain.predicates import predicate_json_schemas

REF = "#/components/schemas/{model}"


def request_body(name: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is the component `name`."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=name)}
    }}}}


def install_openapi(app: FastAPI, bodies: dict[str, Any]) -> None:
    """Makes `app.openapi()` include the self-parsed `bodies` (component name → type)."""

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = get_openapi(
                title=app.title, version=app.version, description=app.description,
                routes=app.routes,
            )
            components = schema.setdefault("components", {}).setdefault("schemas", {})
            for name, kind in bodies.items():
                body = TypeAdapter(kind).json_schema(ref_template=REF)
                components.update(body.pop("$defs", {}))
                components[name] = body
            components.update(predicate_json_schemas(REF))
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

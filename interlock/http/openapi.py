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

from domain.predicates import ATTRIBUTES, AllOf, AnyOf, Everyone, Membership, Not, UsPerson

REF = "#/components/schemas/{model}"


def request_body(name: str) -> dict[str, Any]:
    """`openapi_extra` for a route whose body is the component `name`."""
    return {"requestBody": {"required": True, "content": {"application/json": {
        "schema": {"$ref": REF.format(model=name)}
    }}}}


def _one_key(key: str, value: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "properties": {key: value}, "required": [key],
            "additionalProperties": False}


_PREDICATE = {"$ref": REF.format(model="Predicate")}
_VALUES = {"type": "array", "items": {"type": "string", "minLength": 1}}
PREDICATE_SCHEMAS: dict[str, dict[str, Any]] = {
    "Predicate": {
        "description": "A subject predicate (DESIGN.md): data, evaluated in three-valued logic.",
        "anyOf": [{"$ref": REF.format(model=kind.__name__)}
                  for kind in (AllOf, AnyOf, Not, Everyone, Membership, UsPerson)],
    },
    AllOf.__name__: _one_key("all", {"type": "array", "items": _PREDICATE, "minItems": 1}),
    AnyOf.__name__: _one_key("any", {"type": "array", "items": _PREDICATE, "minItems": 1}),
    Not.__name__: _one_key("not", _PREDICATE),
    Everyone.__name__: _one_key("everyone", {"const": True}),
    UsPerson.__name__: _one_key("us_person", {"type": "boolean"}),
    Membership.__name__: {
        "type": "object", "minProperties": 1, "maxProperties": 1,
        "propertyNames": {"enum": list(ATTRIBUTES)},
        "additionalProperties": {"oneOf": [_one_key("any_of", _VALUES),
                                           _one_key("none_of", _VALUES)]},
        "description": '`{ATTR: {"any_of": [...]}}` or `{ATTR: {"none_of": [...]}}`.',
    },
}


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
            components.update(PREDICATE_SCHEMAS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]

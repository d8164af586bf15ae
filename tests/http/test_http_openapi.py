"""OpenAPI that clients can live with: the document is valid OpenAPI, every status a route
answers is declared (checked against live answers with openapi-core, refusals included), and
`effect` and reason `code` are open strings, so a new code does not break a generated client."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
from fastapi.testclient import TestClient
from openapi_core import OpenAPI
from openapi_core.testing import MockRequest, MockResponse
from openapi_spec_validator import validate

from domain.limits import MAX_REQUEST_BYTES
from interlock.http.models import EFFECTS, REASON_CODES

from .conftest import Serve
from .http_support import AFTER_ORDER, BEFORE_ORDER, ORDER, SETUP, TOKEN_TABLE, bearer

DECIDE = {"subject": "u-de", "model": "fable-5"}


@pytest.fixture
def guarded(serve: Serve) -> TestClient:
    client = serve(tokens=TOKEN_TABLE)
    answer = client.post("/v1/commands", json={"commands": [*SETUP, ORDER]},
                         headers=bearer("officer"))
    assert answer.status_code == 200
    return client


def _document(client: TestClient) -> dict[str, Any]:
    document: dict[str, Any] = client.get("/openapi.json").json()
    return document


def test_the_document_is_valid_openapi(client: TestClient) -> None:
    validate(_document(client))


def test_every_status_a_route_can_answer_is_declared(client: TestClient) -> None:
    for path, operations in _document(client)["paths"].items():
        for method, operation in operations.items():
            declared = set(operation["responses"])
            name = f"{method.upper()} {path}"
            if operation.get("security"):
                assert {"401", "403"} <= declared, name
            if "requestBody" in operation:
                assert {"413", "422"} <= declared, name
            if operation.get("parameters"):
                assert "422" in declared, name
                schema = operation["responses"]["422"]["content"]["application/json"]
                assert "HTTPValidationError" not in str(schema), f"{name}: ours is ErrorOut"


def test_effect_and_reason_code_are_strings_with_their_known_values(client: TestClient) -> None:
    schemas = _document(client)["components"]["schemas"]
    for model, field, known in (("DecisionOut", "effect", EFFECTS),
                                ("ReasonOut", "code", REASON_CODES),
                                ("VerdictOut", "effect", EFFECTS)):
        schema = schemas[model]["properties"][field]
        assert schema["type"] == "string" and "enum" not in schema, (model, field)
        assert schema["examples"] == list(known)
        assert all(f"`{value}`" in schema["description"] for value in known)


def _check(spec: OpenAPI, method: str, path: str, answer: Any) -> None:
    """The live answer is declared for its route, status and media type, and matches."""
    content_type = answer.headers.get("content-type", "").split(";")[0]
    spec.validate_response(
        MockRequest("http://testserver", method.lower(), path.split("?")[0]),
        MockResponse(answer.content, answer.status_code, dict(answer.headers), content_type),
    )


def test_live_answers_match_the_document_refusals_included(guarded: TestClient) -> None:
    spec = OpenAPI.from_dict(_document(guarded))
    protected: list[tuple[str, str, str, dict[str, Any]]] = [
        ("decide", "POST", "/v1/decide", {"json": DECIDE}),
        ("decide", "POST", "/v1/decide/batch", {"json": {"requests": [DECIDE]}}),
        ("officer", "POST", "/v1/commands",
         {"json": {"type": "register_model", "model": "m-1", "family": "m"}}),
        ("auditor", "GET", "/v1/subjects/u-de/history", {}),
        ("auditor", "GET", "/v1/directives/bis-2026-0417/impact", {}),
        ("auditor", "GET", f"/v1/diff?from={BEFORE_ORDER}&to={AFTER_ORDER}".replace(
            "+", "%2B"), {}),
        ("auditor", "GET", "/v1/decisions", {}),
        ("decide", "GET", "/v1/position", {}),
        ("decide", "GET", "/v1/enforcement/stream", {}),
    ]
    seen: set[int] = set()
    for role, method, path, args in protected:
        other = "auditor" if role != "auditor" else "decide"
        answers = [guarded.request(method, path, **args),
                   guarded.request(method, path, headers={"Authorization": "Bearer nope"},
                                   **args)]
        if path != "/v1/position":  # any role may read the position
            answers.append(guarded.request(method, path, headers=bearer(other), **args))
        if path != "/v1/enforcement/stream":  # its 200 never ends
            answers.append(guarded.request(method, path, headers=bearer(role), **args))
        for answer in answers:
            _check(spec, method, path, answer)
            seen.add(answer.status_code)
    refusals = [
        ("POST", "/v1/decide", {"content": b"{" + b" " * MAX_REQUEST_BYTES + b"}",
                                "headers": {**bearer("decide"),
                                            "Content-Type": "application/json"}}),
        ("POST", "/v1/commands", {"content": b"[" * (MAX_REQUEST_BYTES + 1),
                                  "headers": bearer("officer")}),
        ("POST", "/v1/decide", {"json": {"subject": "u-de"}, "headers": bearer("decide")}),
        ("POST", "/v1/decide", {"json": {**DECIDE, "min_position": 10**6},
                                "headers": bearer("decide")}),
        ("POST", "/v1/commands", {"json": {"type": "launch_missiles"},
                                  "headers": bearer("officer")}),
        ("GET", "/v1/subjects/nobody/history", {"headers": bearer("auditor")}),
        ("GET", "/v1/diff?from=2026-11-26T22:00:00+00:00&to=2026-11-26T23:00:00Z",
         {"headers": bearer("auditor")}),
        ("GET", "/v1/enforcement/stream?heartbeat=0", {"headers": bearer("decide")}),
        ("GET", "/readyz", {}),
        ("GET", "/healthz", {}),
        ("GET", "/metrics", {}),
    ]
    for method, path, args in refusals:
        answer = guarded.request(method, path, **args)
        _check(spec, method, path, answer)
        seen.add(answer.status_code)
    assert {200, 401, 403, 404, 409, 413, 422} <= seen


def test_a_reason_code_added_later_still_matches_the_document(client: TestClient) -> None:
    """What a later server may send: a client built from today's document must accept it."""
    spec = OpenAPI.from_dict(_document(client))
    later = {**client.post("/v1/decide", json=DECIDE).json(), "effect": "quarantine",
             "reasons": [{"code": "sanctions_list", "ref": "ofac-1"}]}
    _check(spec, "POST", "/v1/decide", _Answer(orjson.dumps(later)))


class _Answer:
    def __init__(self, content: bytes) -> None:
        self.content = content
        self.status_code = 200
        self.headers = {"content-type": "application/json"}

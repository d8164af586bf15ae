"""What every router shares: the Service as a FastAPI dependency, the role check, the error
body and the statuses routes declare.

Every error body is `{"error": ..., "field": ..., "index": ...}` (see `ErrorOut`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, Any

import orjson
from fastapi import Depends, Request, Security
from fastapi.responses import Response
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from domain.commands import CommandError, command_error_from
from interlock.auth import Role, Tokens
from interlock.http.models import ErrorOut
from interlock.http.service import Service

JSON = "application/json"

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A token from the configured tokens table.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]

BEARER_REQUIRED = {"security": [{"bearer": []}]}
"""What `Security(BEARER)` documents, for routes that check the token themselves."""


def service_of(request: Request) -> Service:
    """The app's one Service (`create_app` puts it in the app's state)."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]


class DirectRoute(APIRoute):
    """A documented route whose endpoint takes the Request and returns the Response itself:
    FastAPI's dependency solving and body parsing are skipped (a third of the per-request cost
    on the decision path); the endpoint checks the token and parses its body in one call."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        return self.endpoint


def refusal(tokens: Tokens | None, authorization: str | None, needed: Role | None
            ) -> HTTPException | None:
    """401 without a known bearer token, 403 without the role; None when tokens are off."""
    if tokens is None:
        return None
    scheme, _, token = (authorization or "").partition(" ")
    token = token.strip()
    principal = tokens.authenticate(token) if scheme.lower() == "bearer" and token else None
    if principal is None:
        return HTTPException(401, "a valid bearer token is required",
                             headers={"WWW-Authenticate": "Bearer"})
    if needed is not None and needed not in principal.roles:
        return HTTPException(403, f"{principal.name!r} lacks the {needed!r} role")
    return None


def refused(error: HTTPException) -> Response:
    response = error_response(error.status_code, str(error.detail))
    response.headers.update(error.headers or {})
    return response


def requires(needed: Role | None) -> list[Any]:
    """Route dependencies that refuse a request without a known token (401) or, when `needed`
    is given, without that role (403)."""

    async def check(request: Request, service: ServiceDep, _: Credentials) -> None:
        found = refusal(service.tokens, request.headers.get("authorization"), needed)
        if found is not None:
            raise found

    return [Depends(check)]


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None
                  ) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type=JSON)


def error_response(status: int, message: str, field: str | None = None,
                   index: int | None = None, **more: Any) -> Response:
    return json_response({"error": message, "field": field or None, "index": index, **more},
                         status)


def invalid(error: ValidationError) -> Response:
    """422 naming the first bad field; `index` when it is an item of a batch."""
    location = error.errors()[0]["loc"]
    index = location[1] if len(location) > 1 and isinstance(location[1], int) else None
    problem = command_error_from(error)
    return error_response(422, problem.message, problem.field, index)


def unreadable(error: CommandError) -> Response:
    """422 for a body that is not one unambiguous JSON document (see `load_json`); `index`
    when the fault is inside an item of a batch."""
    parts = error.field.split(".")
    index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return error_response(422, error.message, error.field, index)


def responses(*extra: tuple[int, type, str]) -> dict[int | str, dict[str, Any]]:
    """The statuses of a protected route: 401, 403 and `extra`."""
    found: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut, "description": "No or unknown bearer token."},
        403: {"model": ErrorOut, "description": "The token lacks the role this route needs."},
    }
    for status, model, description in extra:
        found[status] = {"model": model, "description": description}
    return found


INVALID = (422, ErrorOut, "The request is malformed; `field` names what is wrong.")
TOO_LARGE = (413, ErrorOut, "The body is over the request limit; it was not read.")
UNKNOWN = (404, ErrorOut, "Nothing is known under that id.")

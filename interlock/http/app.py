"""The FastAPI application: one `Service`, the body guard, the error handlers, one router per
audience, and the OpenAPI document.

- decide.py: upstream services (`/v1/decide`, `/v1/decide/batch`);
- officer.py: compliance officers (`/v1/commands`);
- auditor.py: auditors (history, impact, diff, the decision log);
- operations.py: operators (position, health, readiness, metrics, the enforcement stream).

Routes reach the Service through the `ServiceDep` dependency (routing.py).
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp

from domain.commands import Command
from domain.limits import MAX_REQUEST_BYTES, MAX_STREAM_CONNECTIONS
from interlock.http import auditor, decide, officer, operations
from interlock.http.guard import Guard, too_large
from interlock.http.metrics import Metrics
from interlock.http.models import BatchIn, CommandListIn, DecideIn
from interlock.http.openapi import install_openapi
from interlock.http.operations import StreamSlots
from interlock.http.routing import JSON, error_response, refused
from interlock.http.service import Service
from interlock.http.settings import ServeSettings

logger = logging.getLogger("interlock.http")

DESCRIPTION = """\
Decisions for upstream services, commands for compliance officers, history, impact and diff
for auditors. Authenticate with `Authorization: Bearer TOKEN`; each route names the role it
needs. Pass the `position` a command answered as `min_position` to read your own writes.
"""


class GuardedAPI(FastAPI):
    """FastAPI with `Guard` outside all of FastAPI's own middleware, where a declared body
    size is refused before FastAPI's body limit would answer it in plain text."""

    def __init__(self, metrics: Metrics, **options: Any) -> None:
        super().__init__(max_body_size=MAX_REQUEST_BYTES, **options)
        self.metrics = metrics

    def build_middleware_stack(self) -> ASGIApp:
        return Guard(super().build_middleware_stack(), MAX_REQUEST_BYTES, self.metrics)


async def http_error(_: Request, error: HTTPException) -> Response:
    if error.status_code == 413:  # max_body_size, while the body was read
        return Response(too_large(MAX_REQUEST_BYTES), 413, media_type=JSON)
    return refused(error)


async def internal_error(request: Request, error: Exception) -> Response:
    """The last guard: a fault of ours (never of the input, which is refused with 4xx
    before this) answers one line, and the traceback goes to the log."""
    logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
    return error_response(500, f"internal error ({type(error).__name__}); see the server log")


UNENCODED_PLUS = re.compile(r"\d:\d\d(\.\d+)? \d\d(:?\d\d)?$")
"""A time whose `+HH:MM` offset came unencoded in a query string, where `+` means a space."""


async def invalid_request(_: Request, error: RequestValidationError) -> Response:
    first = error.errors()[0]
    location = ".".join(str(part) for part in first["loc"][1:])
    given = first.get("input")
    if first["loc"][0] == "query" and isinstance(given, str) and UNENCODED_PLUS.search(given):
        return error_response(422, f"{given!r} is not a time: a '+' in a query string reads "
                              "as a space; encode it as %2B (e.g. 2026-11-26T22:21:00%2B00:00) "
                              "or write the time in UTC with Z", location)
    if first["type"] == "timezone_aware":
        return error_response(422, "timestamp needs a UTC offset (e.g. +00:00 or Z)", location)
    return error_response(422, first["msg"].removeprefix("Value error, "), location)


def create_app(settings: ServeSettings) -> FastAPI:
    """The API over one `Service`, whose store is open while the app is up (its lifespan)."""
    service = Service(settings)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    app = GuardedAPI(service.metrics, title="Interlock", version="1", description=DESCRIPTION,
                     lifespan=lifespan)
    app.state.service = service
    app.state.streams = StreamSlots(MAX_STREAM_CONNECTIONS, service.metrics.streams.set)
    app.add_exception_handler(HTTPException, http_error)  # type: ignore[arg-type]
    app.add_exception_handler(Exception, internal_error)
    app.add_exception_handler(RequestValidationError, invalid_request)  # type: ignore[arg-type]
    for audience in (decide, auditor, officer, operations):
        app.include_router(audience.router)
    install_openapi(app, {
        "DecideIn": DecideIn,
        "BatchIn": BatchIn,
        "CommandsIn": Command | CommandListIn,
    })
    return app


def app_from_environment() -> FastAPI:
    """The uvicorn factory `interlock serve` starts (in each worker)."""
    return create_app(ServeSettings.from_environment())

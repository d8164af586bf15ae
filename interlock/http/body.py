"""The request-body bound, enforced before anything reads a body into memory, and the count of
error responses.

An ASGI middleware rather than a check in each route: it refuses a declared `Content-Length`
over the bound before the body is received, and counts the bytes of a chunked (or lying) body
as they arrive, refusing the request as soon as the count passes the bound. A refused body
therefore never occupies much more server memory than the bound itself. Seeing every response
start, it also reports each status to the metrics.
"""

from __future__ import annotations

from collections.abc import Callable

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class _TooLarge(Exception):
    """Raised into the route reading the body once it passes the bound."""


class BodyLimit:
    """Answers 413 for a request whose body exceeds `limit` bytes; `answered` is told the status
    of every response."""

    def __init__(self, app: ASGIApp, limit: int, answered: Callable[[int], None]) -> None:
        self.app = app
        self.limit = limit
        self.answered = answered

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.limit:
            await self._refuse(send)
            return
        received = 0
        started = False

        async def counted() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.limit:
                    raise _TooLarge
            return message

        async def watched(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
                self.answered(message["status"])
            await send(message)

        try:
            await self.app(scope, counted, watched)
        except _TooLarge:
            if started:  # too late for a status; the server closes the connection
                raise
            await self._refuse(send)

    async def _refuse(self, send: Send) -> None:
        self.answered(413)
        body = orjson.dumps({
            "error": f"the request body is over the limit of {self.limit:,} bytes",
            "field": None, "index": None,
        })
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close"),
        ]})
        await send({"type": "http.response.body", "body": body})


def _content_length(scope: Scope) -> int | None:
    """The declared body length; a malformed one counts as over any bound."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() and len(value) < 20 else 2**63
    return None

"""The ASGI layer in front of everything: the request-body bound and the count of refusals.

FastAPI's `max_body_size` counts a body's bytes as the route reads them and answers 413 once
they pass MAX_REQUEST_BYTES, chunked bodies included, so a refused body never takes much more
server memory than the bound. A body *declared* over the bound is refused here instead, before
routing, so that its 413 carries the API's error body too (Starlette's own is plain text).
Every response's status passes here, so refusals made anywhere are counted in one place.
"""

from __future__ import annotations

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from interlock.http.metrics import Metrics


def too_large(limit: int) -> bytes:
    """The error body of a 413."""
    return orjson.dumps({"error": f"the request body is over the limit of {limit:,} bytes; "
                         "it was not read", "field": None, "index": None})


class Guard:
    """Refuses a declared `Content-Length` over `limit` with 413, and reports the status of
    every response to `metrics`."""

    def __init__(self, app: ASGIApp, limit: int, metrics: Metrics) -> None:
        self.app = app
        self.limit = limit
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        for name, value in scope["headers"]:
            if name == b"content-length" and (not value.isdigit() or int(value) > self.limit):
                await self._too_large(send)
                return

        async def counted(message: Message) -> None:
            if message["type"] == "http.response.start":
                self.metrics.answered(message["status"])
            await send(message)

        await self.app(scope, receive, counted)

    async def _too_large(self, send: Send) -> None:
        self.metrics.answered(413)
        body = too_large(self.limit)
        await send({"type": "http.response.start", "status": 413, "headers": [
            (b"content-type", b"application/json"), (b"content-length", b"%d" % len(body)),
            (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": body})

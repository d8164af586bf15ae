"""The operators' routes: position, health, readiness, metrics, and the enforcement stream for
gateways without Kafka."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Annotated

import orjson
from fastapi import APIRouter, Header, Query, Request
from fastapi.responses import Response, StreamingResponse
from prometheus_client import CONTENT_TYPE_LATEST
from starlette.types import Receive, Scope, Send

from interlock.http.models import ErrorOut, HealthOut, PositionOut, ReadyOut
from interlock.http.routing import INVALID, JSON, ServiceDep, error_response, requires, responses
from interlock.revocations import RevocationLog

STREAM_RETRY_SECONDS = 5
"""`Retry-After` of a stream refused for want of a slot."""

router = APIRouter()


class StreamSlots:
    """At most `capacity` open event streams in this process: each holds a connection and a
    task for as long as its client stays, so without a cap enough idle clients would exhaust
    the server for the decisions it exists to answer."""

    def __init__(self, capacity: int, opened: Callable[[int], None]) -> None:
        self.capacity = capacity
        self.open = 0
        self._opened = opened

    def take(self) -> bool:
        if self.open >= self.capacity:
            return False
        self.open += 1
        self._opened(self.open)
        return True

    def give_back(self) -> None:
        self.open -= 1
        self._opened(self.open)


class SlotStream(StreamingResponse):
    """A stream that gives its slot back when it ends, however it ends (client gone, server
    stopping): the slot is released by the response itself, which always runs, not by the
    generator, which does not run at all when the client left before it started."""

    def __init__(self, content: AsyncIterator[bytes], slots: StreamSlots,
                 headers: dict[str, str]) -> None:
        super().__init__(content, media_type="text/event-stream", headers=headers)
        self._slots = slots

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            await super().__call__(scope, receive, send)
        finally:
            self._slots.give_back()


@router.get(
    "/v1/enforcement/stream", tags=["decide"], dependencies=requires("decide"),
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
              "description": "Server-sent events: packed `access_revoked` / "
              "`access_restored` records."},
        **responses(INVALID),
        404: {"model": ErrorOut, "description": "This replica does not enforce."},
        503: {"model": ErrorOut, "description": "All stream slots of this process are "
              "taken; retry after `Retry-After` seconds (or ask another replica).",
              "headers": {"Retry-After": {"schema": {"type": "integer"},
                                          "description": "Seconds to wait."}}},
    },
)
async def enforcement_stream(
    request: Request,
    service: ServiceDep,
    after: Annotated[int | None, Query(ge=0, description=(
        "Send the records numbered after this one (default: only new ones)."
    ))] = None,
    last_event_id: Annotated[int | None, Header(ge=0)] = None,
    heartbeat: Annotated[float, Query(gt=0, le=60)] = 15.0,
) -> Response:
    """Access changes as server-sent events, for gateways without Kafka: each event is a
    packed `access_revoked` or `access_restored` record (the one verdict, the `subjects` it
    applies to), its JSON as data and this process's record number as id, so a reconnecting
    client resumes with `Last-Event-ID`. Role `decide`. At most MAX_STREAM_CONNECTIONS streams
    per process are open at once."""
    log = service.engine.revocations
    if log is None:
        return error_response(404, "this replica follows Kafka; read interlock.enforcement")
    streams: StreamSlots = request.app.state.streams
    if not streams.take():
        response = error_response(503, f"all {streams.capacity} enforcement stream slots of "
                                  "this process are taken; retry later or ask another replica")
        response.headers["Retry-After"] = str(STREAM_RETRY_SECONDS)
        return response
    start = last_event_id if last_event_id is not None else after
    return SlotStream(
        _records_as_events(log, log.last if start is None else start, heartbeat),
        streams, headers={"Cache-Control": "no-store"},
    )


async def _records_as_events(
    log: RevocationLog, after: int, heartbeat: float
) -> AsyncIterator[bytes]:
    """Server-sent events from the revocation log, with a comment line as heartbeat. It waits
    on the event loop (never in a pool thread), so it ends as soon as the client leaves."""
    last = after
    while True:
        records = await log.next_after(last, heartbeat)
        if not records:
            yield b": keep-alive\n\n"
            continue
        chunk = []
        for number, record in records:
            chunk.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (
                number, record.name.encode(), orjson.dumps(record.to_json())
            ))
            last = number
        yield b"".join(chunk)


@router.get("/v1/position", tags=["decide"], dependencies=requires(None),
            responses=responses())
def position(service: ServiceDep) -> PositionOut:
    """The store's last position and this replica's index position. Any role."""
    return PositionOut(position=service.engine.app.position,
                       index_position=service.index.position,
                       enforced_position=service.enforced_position)


# Health and readiness read memory only, so they run on the event loop: no thread pool,
# however busy, can keep an orchestrator from seeing that the process is alive.
@router.get("/healthz", tags=["operate"])
async def healthz() -> HealthOut:
    """The process is up."""
    return HealthOut()


@router.get("/readyz", tags=["operate"], response_model=ReadyOut,
            responses={503: {"model": ReadyOut, "description": "The index lags too far."}})
async def readyz(service: ServiceDep) -> Response:
    """Ready while the index lags the store by no more than the staleness bound."""
    lag = service.freshness.lag()
    ready = not service.freshness.stale()
    body = ReadyOut(
        ready=ready, index_position=lag.index_position, store_position=lag.store_position,
        lag_positions=lag.positions, lag_seconds=lag.seconds,
        max_lag_seconds=service.freshness.max_lag_seconds,
        store_checked_seconds_ago=lag.store_checked_seconds_ago,
    )
    return Response(body.model_dump_json(), 200 if ready else 503, media_type=JSON)


@router.get("/metrics", tags=["operate"], response_class=Response, responses={
    200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
          "description": "Prometheus text format."},
})
def prometheus(service: ServiceDep) -> Response:
    """Decisions by effect, decision latency, projection lag, commands applied and
    refused."""
    return Response(service.metrics.render(), media_type=CONTENT_TYPE_LATEST)

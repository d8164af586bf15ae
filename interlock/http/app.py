"""The FastAPI application: routes, roles, error bodies, input bounds.

Every error body is `{"error": ..., "field": ..., "index": ...}` (see `ErrorOut`). Bodies are
bounded before and while they arrive (`Guard`), then read by `load_json`, which refuses what
two JSON parsers could read two ways; decision routes then validate with one pydantic call and
answer orjson-serialised normative JSON.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from time import perf_counter
from typing import Annotated, Any

import orjson
from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Depends, FastAPI, Header, Query, Request, Security
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response, StreamingResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST
from pydantic import ValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from domain.commands import (
    Command,
    CommandConflict,
    CommandError,
    Timestamp,
    command_error_from,
    load_json,
)
from domain.decision import Decision, Reason, reasons_json
from domain.limits import MAX_REQUEST_BYTES, MAX_STREAM_CONNECTIONS
from interlock.auth import Role, Tokens
from interlock.http import compliance
from interlock.http.decisions import (
    DECISION_ID_HEADER,
    ServedBatchOut,
    ServedDecisionOut,
    decisions_router,
)
from interlock.http.guard import Guard, too_large
from interlock.http.metrics import Metrics
from interlock.http.models import (
    AppliedOut,
    BatchIn,
    BehindOut,
    CommandListIn,
    CommandRejectedOut,
    DecideIn,
    DiffOut,
    ErrorOut,
    HealthOut,
    HistoryOut,
    ImpactOut,
    PositionOut,
    ReadyOut,
)
from interlock.http.openapi import install_openapi, request_body
from interlock.http.service import CommandsOutcome, Service, command_documents
from interlock.http.settings import ServeSettings
from interlock.revocations import RevocationLog

logger = logging.getLogger("interlock.http")

JSON = "application/json"
STREAM_RETRY_SECONDS = 5
"""`Retry-After` of a stream refused for want of a slot."""
DESCRIPTION = """\
Decisions for upstream services, commands for compliance officers, history, impact and diff
for auditors. Authenticate with `Authorization: Bearer TOKEN`; each route names the role it
needs. Pass the `position` a command answered as `min_position` to read your own writes.
"""

BEARER = HTTPBearer(auto_error=False, scheme_name="bearer",
                    description="A token from the configured tokens table.")
Credentials = Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)]


BEARER_REQUIRED = {"security": [{"bearer": []}]}
"""What `Security(BEARER)` documents, for routes that check the token themselves."""


class GuardedAPI(FastAPI):
    """FastAPI with `Guard` outside all of FastAPI's own middleware, where a declared body
    size is refused before FastAPI's body limit would answer it in plain text."""

    def __init__(self, metrics: Metrics, **options: Any) -> None:
        super().__init__(max_body_size=MAX_REQUEST_BYTES, **options)
        self.metrics = metrics

    def build_middleware_stack(self) -> ASGIApp:
        return Guard(super().build_middleware_stack(), MAX_REQUEST_BYTES, self.metrics)


class DirectRoute(APIRoute):
    """A documented route whose endpoint takes the Request and returns the Response itself:
    FastAPI's dependency solving and body parsing are skipped (a third of the per-request cost
    on the decision path); the endpoint checks the token and parses its body in one call."""

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        return self.endpoint


def _refusal(tokens: Tokens | None, authorization: str | None, needed: Role | None
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


def _refused(error: HTTPException) -> Response:
    response = _error(error.status_code, str(error.detail))
    response.headers.update(error.headers or {})
    return response


class DecisionJSON:
    """The normative JSON of decisions, four times faster than `Decision.to_json()`: equal
    verdicts share one reasons tuple, whose JSON is built once, and the valid time a batch
    shares is formatted once. Tests hold the output equal to `to_json`'s."""

    def __init__(self, max_cached: int = 100_000) -> None:
        self._reasons: dict[tuple[Reason, ...], list[dict[str, str | None]]] = {}
        self._max_cached = max_cached

    def many(self, decisions: Iterable[Decision]) -> list[dict[str, Any]]:
        cache = self._reasons
        encoded = []
        last_at: datetime | None = None
        at_text = ""
        for d in decisions:
            if d.at is not last_at:
                last_at = d.at
                at_text = last_at.astimezone(UTC).isoformat()
            reasons = cache.get(d.reasons)
            if reasons is None:
                if len(cache) >= self._max_cached:
                    cache.clear()
                reasons = cache[d.reasons] = reasons_json(d.reasons)
            encoded.append(d.json_with(reasons, at_text))
        return encoded


def _json(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(orjson.dumps(data), status, headers, media_type=JSON)


def _unlogged() -> Response:
    return _error(503, "the decision log could not record this decision, so it is not served "
                  "(strict mode); retry")


def _error(status: int, message: str, field: str | None = None, index: int | None = None,
           **more: Any) -> Response:
    return _json({"error": message, "field": field or None, "index": index, **more}, status)


def _invalid(error: ValidationError) -> Response:
    """422 naming the first bad field; `index` when it is an item of a batch."""
    location = error.errors()[0]["loc"]
    index = location[1] if len(location) > 1 and isinstance(location[1], int) else None
    problem = command_error_from(error)
    return _error(422, problem.message, problem.field, index)


def _unreadable(error: CommandError) -> Response:
    """422 for a body that is not one unambiguous JSON document (see `load_json`); `index`
    when the fault is inside an item of a batch."""
    parts = error.field.split(".")
    index = int(parts[1]) if len(parts) > 1 and parts[1].isdigit() else None
    return _error(422, error.message, error.field, index)


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


def _responses(*extra: tuple[int, type, str]) -> dict[int | str, dict[str, Any]]:
    found: dict[int | str, dict[str, Any]] = {
        401: {"model": ErrorOut, "description": "No or unknown bearer token."},
        403: {"model": ErrorOut, "description": "The token lacks the role this route needs."},
    }
    for status, model, description in extra:
        found[status] = {"model": model, "description": description}
    return found


INVALID = (422, ErrorOut, "The request is malformed; `field` names what is wrong.")
TOO_LARGE = (413, ErrorOut, "The body is over the request limit; it was not read.")
UNLOGGED = (503, ErrorOut, "Strict decision log: the decision could not be logged, so it is "
            "not served; retry.")
LOGGED_HEADER = {200: {"description": "The decision.", "headers": {DECISION_ID_HEADER: {
    "description": "With a decision log: the id it is logged under.",
    "schema": {"type": "string", "format": "uuid"}}}}}
UNKNOWN = (404, ErrorOut, "Nothing is known under that id.")


def create_app(settings: ServeSettings) -> FastAPI:
    """The API over one `Service`, whose store is open while the app is up (its lifespan)."""
    service = Service(settings)
    metrics = service.metrics
    encode = DecisionJSON()
    streams = StreamSlots(MAX_STREAM_CONNECTIONS, metrics.streams.set)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        service.start()
        try:
            yield
        finally:
            service.close()

    app = GuardedAPI(metrics, title="Interlock", version="1", description=DESCRIPTION,
                     lifespan=lifespan)
    app.state.service = service

    def role(needed: Role | None) -> Callable[..., Awaitable[None]]:
        async def check(request: Request, _: Credentials) -> None:
            refusal = _refusal(service.tokens, request.headers.get("authorization"), needed)
            if refusal is not None:
                raise refusal

        return check

    officer, auditor, anyone = ([Depends(role(name))] for name in ("officer", "auditor", None))
    direct = APIRouter(route_class=DirectRoute)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> Response:
        if error.status_code == 413:  # max_body_size, while the body was read
            return Response(too_large(MAX_REQUEST_BYTES), 413, media_type=JSON)
        return _refused(error)

    @app.exception_handler(Exception)
    async def internal_error(request: Request, error: Exception) -> Response:
        """The last guard: a fault of ours (never of the input, which is refused with 4xx
        before this) answers one line, and the traceback goes to the log."""
        logger.error("%s %s failed", request.method, request.url.path, exc_info=error)
        return _error(500, f"internal error ({type(error).__name__}); see the server log")

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, error: RequestValidationError) -> Response:
        first = error.errors()[0]
        location = ".".join(str(part) for part in first["loc"][1:])
        if first["type"] == "timezone_aware":
            return _error(422, "timestamp needs a UTC offset (e.g. +00:00 or Z)", location)
        return _error(422, first["msg"].removeprefix("Value error, "), location)

    @direct.post(
        "/v1/decide", tags=["decide"], response_model=ServedDecisionOut,
        responses={**_responses(INVALID, TOO_LARGE, UNLOGGED, (409, BehindOut, "The index is "
                                                              "behind the asked position after "
                                                              "waiting.")),
                   **LOGGED_HEADER},
        openapi_extra={**request_body("DecideIn"), **BEARER_REQUIRED},
    )
    async def decide(request: Request) -> Response:
        """May `subject` use `model` — and if not, why? The normative decision JSON.

        Role `decide`. `min_position` or `as_of` beyond this replica's index makes it wait (up
        to the configured bound), then answer 409 rather than a stale decision."""
        started = perf_counter()
        refusal = _refusal(service.tokens, request.headers.get("authorization"), "decide")
        if refusal is not None:
            return _refused(refusal)
        body = await request.body()
        try:
            load_json(body, MAX_REQUEST_BYTES)
            ask = DecideIn.model_validate_json(body)
        except CommandError as error:
            return _unreadable(error)
        except ValidationError as error:
            return _invalid(error)
        needed = ask.required_position
        if needed and not await service.reach(needed):
            return _behind(needed)
        decision = service.decide(ask)
        body = encode.many((decision,))[0]
        headers = None
        if service.decision_log is not None:
            ids = await service.decision_log.record((ask,), (decision,))
            if ids is None:
                return _unlogged()
            body["decision_id"] = ids[0]
            headers = {DECISION_ID_HEADER: ids[0]}
        metrics.count(decision)
        metrics.decide_latency.observe(perf_counter() - started)
        return Response(orjson.dumps(body), headers=headers, media_type=JSON)

    @direct.post(
        "/v1/decide/batch", tags=["decide"], response_model=ServedBatchOut,
        responses=_responses(INVALID, TOO_LARGE, UNLOGGED, (409, BehindOut, "The index is behind "
                                                            "a position asked for after waiting.")),
        openapi_extra={**request_body("BatchIn"), **BEARER_REQUIRED},
    )
    async def decide_batch(request: Request) -> Response:
        """Many decisions in one call, in request order, all as known at one position.

        Role `decide`. One bad request refuses the batch (422, `index` names it)."""
        started = perf_counter()
        refusal = _refusal(service.tokens, request.headers.get("authorization"), "decide")
        if refusal is not None:
            return _refused(refusal)
        body = await request.body()
        try:
            load_json(body, MAX_REQUEST_BYTES)  # refuses what pydantic reads: repeated keys
            batch = BatchIn.model_validate_json(body)
        except CommandError as error:
            return _unreadable(error)
        except ValidationError as error:
            return _invalid(error)
        needed = max((ask.required_position for ask in batch.requests), default=0)
        if needed and not await service.reach(needed):
            return _behind(needed)
        decisions = service.decide_all(batch.requests)
        encoded = encode.many(decisions)
        if service.decision_log is not None:
            ids = await service.decision_log.record(batch.requests, decisions)
            if ids is None:
                return _unlogged()
            for decision, decision_id in zip(encoded, ids, strict=True):
                decision["decision_id"] = decision_id
        metrics.count_all(decisions)
        body = orjson.dumps({"decisions": encoded})
        metrics.batch_latency.observe(perf_counter() - started)
        return Response(body, media_type=JSON)

    app.include_router(direct)
    app.include_router(decisions_router(service, auditor))

    def _behind(needed: int) -> Response:
        position = service.index.position
        return _error(409, f"the index is at position {position}, behind the asked {needed}; "
                      "retry later or ask another replica", "min_position",
                      position=position, required=needed)

    @app.post(
        "/v1/commands", tags=["officer"], dependencies=officer, response_model=AppliedOut,
        responses=_responses(
            (422, CommandRejectedOut, "A command was refused: nothing of it was stored, the "
             "`applied` commands before it were (`index` names it)."),
            (409, CommandRejectedOut, "A `command_id` already applied with a different "
             "command (`index` names it; nothing of it was stored, the `applied` commands "
             "before it were), or another writer changed the same facts at the same time "
             "(retry)."),
            TOO_LARGE,
        ),
        openapi_extra=request_body("CommandsIn"),
    )
    async def commands(request: Request) -> Response:
        """Applies one command, or `{"commands": [...]}` in order; a repeat of an applied
        `command_id` is skipped and counted in `repeated`.

        Role `officer`. With officer keys configured, directive commands must be signed."""
        try:
            documents = command_documents(load_json(await request.body(), MAX_REQUEST_BYTES))
        except CommandError as error:
            parts = error.field.split(".")
            within = len(parts) > 1 and parts[0] == "commands" and parts[1].isdigit()
            # A field inside the n-th command is named as the domain names its fields.
            return _rejected(CommandError(".".join(parts[2:]) if within else error.field,
                                          error.message),
                             int(parts[1]) if within else None)
        try:
            outcome = await run_in_threadpool(service.apply, documents)
        except IntegrityError:
            return _error(409, "another writer changed the same facts concurrently; nothing of "
                          "these commands was stored, retry them", applied=0, repeated=0,
                          position=service.index.position)
        if outcome.rejected is not None:
            index, error = outcome.rejected
            if isinstance(error, CommandConflict):  # named as `interlock apply` names it
                error = CommandConflict("command_id", f"command_id "
                                        f"{documents[index]['command_id']!r}: {error.message}")
            return _rejected(error, index, outcome)
        return _json({"applied": outcome.applied, "repeated": outcome.repeated,
                      "position": outcome.position})

    def _rejected(error: CommandError, index: int | None,
                  outcome: CommandsOutcome | None = None) -> Response:
        """422 (409 for a conflicting `command_id`) with what was applied before it."""
        if outcome is None:
            metrics.commands_rejected.inc()
            outcome = CommandsOutcome(0, service.index.position)
        status = 409 if isinstance(error, CommandConflict) else 422
        return _error(status, error.message, error.field, index, applied=outcome.applied,
                      repeated=outcome.repeated, position=outcome.position)

    @app.get("/v1/subjects/{subject}/history", tags=["audit"], dependencies=auditor,
             responses=_responses(UNKNOWN, INVALID))
    def history(
        subject: str,
        model: Annotated[str | None, Query(min_length=1, max_length=200,
                                           description="Only this model's decision.")] = None,
    ) -> HistoryOut:
        """The subject's facts with valid and recorded times and positions, and its current
        decision per registered model (or for `model`). Role `auditor`."""
        found = compliance.history(service.index, subject, model,
                                   lambda s, m: service.decide(DecideIn(subject=s, model=m)))
        if found is None:
            raise HTTPException(404, f"nothing is known about subject {subject!r}")
        return found

    @app.get("/v1/directives/{directive}/impact", tags=["audit"], dependencies=auditor,
             responses=_responses(UNKNOWN, INVALID))
    def impact(directive: str) -> ImpactOut:
        """The (subject, model) decisions the directive changed at its effective time.
        Role `auditor`."""
        found = compliance.impact(service.index, directive, service.reach_indexes)
        if found is None:
            raise HTTPException(404, f"no directive {directive!r}")
        return found

    @app.get("/v1/diff", tags=["audit"], dependencies=auditor, responses=_responses(INVALID))
    def diff(
        start: Annotated[Timestamp, Query(alias="from", description="Valid time (with offset).")],
        to: Annotated[Timestamp, Query(description="Valid time (with offset).")],
        model: Annotated[str | None, Query(min_length=1, max_length=200,
                                           description="A model id, family:NAME or *.")] = None,
    ) -> DiffOut:
        """Who gained or lost access (an `allow`) between two valid times, as known now.
        Role `auditor`."""
        return compliance.diff(service.index, start, to, model, service.reach_indexes)

    @app.get(
        "/v1/enforcement/stream", tags=["decide"], dependencies=[Depends(role("decide"))],
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {"schema": {"type": "string"}}},
                  "description": "Server-sent events: `access_revoked` / `access_restored`."},
            404: {"model": ErrorOut, "description": "This replica does not enforce."},
            503: {"model": ErrorOut, "description": "All stream slots of this process are "
                  "taken; retry after `Retry-After` seconds (or ask another replica)."},
        },
    )
    async def enforcement_stream(
        after: Annotated[int | None, Query(ge=0, description=(
            "Send the changes numbered after this one (default: only new ones)."
        ))] = None,
        last_event_id: Annotated[int | None, Header(ge=0)] = None,
        heartbeat: Annotated[float, Query(gt=0, le=60)] = 15.0,
    ) -> Response:
        """Access changes as server-sent events, for gateways without Kafka: each event is
        `access_revoked` or `access_restored` with the record's JSON as data and this
        process's change number as id, so a reconnecting client resumes with `Last-Event-ID`.
        Role `decide`. At most MAX_STREAM_CONNECTIONS streams per process are open at once."""
        log = service.engine.revocations
        if log is None:
            return _error(404, "this replica follows Kafka; read interlock.enforcement")
        if not streams.take():
            response = _error(503, f"all {streams.capacity} enforcement stream slots of this "
                              "process are taken; retry later or ask another replica")
            response.headers["Retry-After"] = str(STREAM_RETRY_SECONDS)
            return response
        start = last_event_id if last_event_id is not None else after
        return SlotStream(
            _changes_as_events(log, log.last if start is None else start, heartbeat),
            streams, headers={"Cache-Control": "no-store"},
        )

    @app.get("/v1/position", tags=["decide"], dependencies=anyone, responses=_responses())
    def position() -> PositionOut:
        """The store's last position and this replica's index position. Any role."""
        return PositionOut(position=service.engine.app.position,
                           index_position=service.index.position)

    # Health and readiness read memory only, so they run on the event loop: no thread pool,
    # however busy, can keep an orchestrator from seeing that the process is alive.
    @app.get("/healthz", tags=["operate"])
    async def healthz() -> HealthOut:
        """The process is up."""
        return HealthOut()

    @app.get("/readyz", tags=["operate"], response_model=ReadyOut,
             responses={503: {"model": ReadyOut, "description": "The index lags too far."}})
    async def readyz() -> Response:
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

    @app.get("/metrics", tags=["operate"], response_class=Response, responses={
        200: {"content": {CONTENT_TYPE_LATEST.split(";")[0]: {"schema": {"type": "string"}}},
              "description": "Prometheus text format."},
    })
    def prometheus() -> Response:
        """Decisions by effect, decision latency, projection lag, commands applied and
        refused."""
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    install_openapi(app, {
        "DecideIn": DecideIn,
        "BatchIn": BatchIn,
        "CommandsIn": Command | CommandListIn,
    })
    return app


async def _changes_as_events(
    log: RevocationLog, after: int, heartbeat: float
) -> AsyncIterator[bytes]:
    """Server-sent events from the revocation log, with a comment line as heartbeat. It waits
    on the event loop (never in a pool thread), so it ends as soon as the client leaves."""
    last = after
    while True:
        changes = await log.next_after(last, heartbeat)
        if not changes:
            yield b": keep-alive\n\n"
            continue
        chunk = []
        for number, change in changes:
            chunk.append(b"id: %d\nevent: %s\ndata: %s\n\n" % (
                number, change.kind.encode(), orjson.dumps(change.to_json())
            ))
            last = number
        yield b"".join(chunk)


def app_from_environment() -> FastAPI:
    """The uvicorn factory `interlock serve` starts (in each worker)."""
    return create_app(ServeSettings.from_environment())


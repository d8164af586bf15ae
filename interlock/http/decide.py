"""The upstream services' routes: `POST /v1/decide` and `POST /v1/decide/batch`.

Bodies are bounded by `Guard`, then read by `load_json`, which refuses what two JSON parsers
could read two ways, validated with one pydantic call and answered as orjson-serialised
normative JSON.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime
from time import perf_counter
from typing import Any

import orjson
from fastapi import APIRouter, Request
from fastapi.responses import Response
from pydantic import ValidationError

from domain.commands import CommandError, load_json
from domain.decision import Decision, Reason, reasons_json
from domain.limits import MAX_REQUEST_BYTES
from interlock.http.decisions import DECISION_ID_HEADER, ServedBatchOut, ServedDecisionOut
from interlock.http.models import BatchIn, BehindOut, DecideIn, ErrorOut
from interlock.http.openapi import request_body
from interlock.http.routing import (
    BEARER_REQUIRED,
    INVALID,
    JSON,
    TOO_LARGE,
    DirectRoute,
    error_response,
    invalid,
    refusal,
    refused,
    responses,
    service_of,
    unreadable,
)
from interlock.http.service import Service


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


ENCODE = DecisionJSON()
"""One cache of reasons' JSON for the process (reasons are values, so apps can share it)."""

UNLOGGED = (503, ErrorOut, "Strict decision log: the decision could not be logged, so it is "
            "not served; retry.")
LOGGED_HEADER = {200: {"description": "The decision.", "headers": {DECISION_ID_HEADER: {
    "description": "With a decision log: the id it is logged under.",
    "schema": {"type": "string", "format": "uuid"}}}}}

router = APIRouter(route_class=DirectRoute, tags=["decide"])


def _unlogged() -> Response:
    return error_response(503, "the decision log could not record this decision, so it is "
                          "not served (strict mode); retry")


def _behind(service: Service, needed: int) -> Response:
    position = service.index.position
    return error_response(409, f"the index is at position {position}, behind the asked "
                          f"{needed}; retry later or ask another replica", "min_position",
                          position=position, required=needed)


@router.post(
    "/v1/decide", response_model=ServedDecisionOut,
    responses={**responses(INVALID, TOO_LARGE, UNLOGGED, (409, BehindOut, "The index is "
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
    service = service_of(request)
    refusing = refusal(service.tokens, request.headers.get("authorization"), "decide")
    if refusing is not None:
        return refused(refusing)
    body = await request.body()
    try:
        load_json(body, MAX_REQUEST_BYTES)
        ask = DecideIn.model_validate_json(body)
    except CommandError as error:
        return unreadable(error)
    except ValidationError as error:
        return invalid(error)
    needed = ask.required_position
    if needed and not await service.wait_for_position(needed):
        return _behind(service, needed)
    decision = service.decide(ask)
    body = ENCODE.many((decision,))[0]
    headers = None
    if service.decision_log is not None:
        ids = await service.decision_log.record((ask,), (decision,))
        if ids is None:
            return _unlogged()
        body["decision_id"] = ids[0]
        headers = {DECISION_ID_HEADER: ids[0]}
    service.metrics.count(decision)
    service.metrics.decide_latency.observe(perf_counter() - started)
    return Response(orjson.dumps(body), headers=headers, media_type=JSON)


@router.post(
    "/v1/decide/batch", response_model=ServedBatchOut,
    responses=responses(INVALID, TOO_LARGE, UNLOGGED, (409, BehindOut, "The index is behind "
                                                       "a position asked for after waiting.")),
    openapi_extra={**request_body("BatchIn"), **BEARER_REQUIRED},
)
async def decide_batch(request: Request) -> Response:
    """Many decisions in one call, in request order, all as known at one position.

    Role `decide`. One bad request refuses the batch (422, `index` names it)."""
    started = perf_counter()
    service = service_of(request)
    refusing = refusal(service.tokens, request.headers.get("authorization"), "decide")
    if refusing is not None:
        return refused(refusing)
    body = await request.body()
    try:
        load_json(body, MAX_REQUEST_BYTES)  # refuses what pydantic reads: repeated keys
        batch = BatchIn.model_validate_json(body)
    except CommandError as error:
        return unreadable(error)
    except ValidationError as error:
        return invalid(error)
    needed = max((ask.required_position for ask in batch.requests), default=0)
    if needed and not await service.wait_for_position(needed):
        return _behind(service, needed)
    decisions = service.decide_all(batch.requests)
    encoded = ENCODE.many(decisions)
    if service.decision_log is not None:
        ids = await service.decision_log.record(batch.requests, decisions)
        if ids is None:
            return _unlogged()
        for decision, decision_id in zip(encoded, ids, strict=True):
            decision["decision_id"] = decision_id
    service.metrics.count_all(decisions)
    body = orjson.dumps({"decisions": encoded})
    service.metrics.batch_latency.observe(perf_counter() - started)
    return Response(body, media_type=JSON)

"""The auditor's routes: a subject's history, a directive's impact, who gained or lost access
between two valid times, and the served-decision log."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from pydantic import ValidationError
from starlette.exceptions import HTTPException

from domain.commands import Timestamp
from interlock.http.decisions import DecisionLogOut
from interlock.http.models import DecideIn, DiffOut, ErrorOut, HistoryOut, ImpactOut
from interlock.http.routing import INVALID, JSON, UNKNOWN, ServiceDep, invalid, requires, responses
from projections import compliance
from projections.decision_log import LogQuery, LogReadError, query

router = APIRouter(tags=["audit"], dependencies=requires("auditor"))


def _answer(data: dict[str, Any]) -> Response:
    return Response(orjson.dumps(data), media_type=JSON)


@router.get("/v1/subjects/{subject}/history", response_model=HistoryOut,
            responses=responses(UNKNOWN, INVALID))
def history(
    subject: str,
    service: ServiceDep,
    model: Annotated[str | None, Query(min_length=1, max_length=200,
                                       description="Only this model's decision.")] = None,
    start: Annotated[Timestamp | None, Query(alias="from", description=(
        "Decision changes from this valid time (with offset)."))] = None,
    end: Annotated[Timestamp | None, Query(alias="to", description=(
        "Decision changes up to this valid time (with offset)."))] = None,
) -> Response:
    """The subject's facts with valid and recorded times and positions, every change of its
    decisions as they were made, and its current decision per registered model (or for
    `model`): the JSON of `interlock history --json`. Role `auditor`."""
    with service.index.reading():
        found = compliance.history(service.index.facts, subject, model, start, end)
    if found is None:
        raise HTTPException(404, f"nothing is known about subject {subject!r}")
    # Current decisions as this replica serves them (fail closed while it lags).
    try:
        now = [service.decide(DecideIn(subject=subject, model=name)) for name in found.models]
    except ValidationError as error:  # `model` is no id
        return invalid(error)
    return _answer(replace(found, decisions=now).to_json())


@router.get("/v1/directives/{directive}/impact", response_model=ImpactOut,
            responses=responses(UNKNOWN, INVALID))
def impact(directive: str, service: ServiceDep) -> Response:
    """The (subject, model) decisions the directive changed at its effective time, grouped by
    reason: the JSON of `interlock impact --json`. Role `auditor`."""
    with service.index.reading():
        if directive not in service.index.facts.directives:
            raise HTTPException(404, f"no directive {directive!r}")
        found = compliance.impact(service.index.facts, directive, service.candidate_indexes)
    return _answer(found.to_json())


@router.get("/v1/diff", response_model=DiffOut, responses=responses(INVALID))
def diff(
    service: ServiceDep,
    start: Annotated[Timestamp, Query(alias="from", description="Valid time (with offset).")],
    to: Annotated[Timestamp, Query(description="Valid time (with offset).")],
    model: Annotated[str | None, Query(min_length=1, max_length=200,
                                       description="A model id, family:NAME or *.")] = None,
    as_of: Annotated[int | None, Query(ge=0, description=(
        "As known at this position (default: everything known)."))] = None,
) -> Response:
    """Who gained or lost access (an `allow`) between two valid times: the JSON of
    `interlock diff --json`. Role `auditor`."""
    with service.index.reading():
        found = compliance.diff(service.index.facts, start, to, model, as_of,
                                service.candidate_indexes)
    return _answer(found.to_json())


@router.get(
    "/v1/decisions", response_model=DecisionLogOut,
    responses={
        **responses(),
        404: {"model": ErrorOut, "description": "This server keeps no decision log."},
        422: {"model": ErrorOut, "description": "A filter is malformed; `field` names it."},
        503: {"model": ErrorOut, "description": "The log cannot be read now, or holds an "
              "entry that cannot be read back (damaged or edited)."},
    },
)
def decisions(asked: Annotated[LogQuery, Query()], service: ServiceDep) -> Response:
    """Served decisions from the decision log, by served time: `subject`, `model` (an id,
    `family:NAME` or `*`), `effect`, served time in [`from`, `to`), at most `limit`.
    Role `auditor`."""
    log = service.decision_log
    if log is None:
        raise HTTPException(404, "this server keeps no decision log (serve "
                            "--decision-log DEST); read it with `interlock decisions "
                            "query`")
    try:
        entries, more = query(log.log, asked)
    except LogReadError as error:
        raise HTTPException(503, f"{error}; `interlock decisions audit` checks the "
                            "log") from None
    except Exception as error:  # the log's store is down: say so, not 500
        raise HTTPException(503, "the decision log cannot be read now: "
                            f"{type(error).__name__}: {error}") from None
    return Response(orjson.dumps({"decisions": [e.to_json() for e in entries],
                                  "more": more}), media_type=JSON)

"""The auditor's routes: a subject's history, a directive's impact, who gained or lost access
between two valid times, and the served-decision log."""

from __future__ import annotations

from typing import Annotated

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from domain.commands import Timestamp
from interlock.http import compliance
from interlock.http.decisions import DecisionLogOut
from interlock.http.models import DecideIn, DiffOut, ErrorOut, HistoryOut, ImpactOut
from interlock.http.routing import INVALID, UNKNOWN, ServiceDep, requires, responses
from projections.decision_log import LogQuery, LogReadError, query

router = APIRouter(tags=["audit"], dependencies=requires("auditor"))


@router.get("/v1/subjects/{subject}/history", responses=responses(UNKNOWN, INVALID))
def history(
    subject: str,
    service: ServiceDep,
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


@router.get("/v1/directives/{directive}/impact", responses=responses(UNKNOWN, INVALID))
def impact(directive: str, service: ServiceDep) -> ImpactOut:
    """The (subject, model) decisions the directive changed at its effective time.
    Role `auditor`."""
    found = compliance.impact(service.index, directive, service.candidate_indexes)
    if found is None:
        raise HTTPException(404, f"no directive {directive!r}")
    return found


@router.get("/v1/diff", responses=responses(INVALID))
def diff(
    service: ServiceDep,
    start: Annotated[Timestamp, Query(alias="from", description="Valid time (with offset).")],
    to: Annotated[Timestamp, Query(description="Valid time (with offset).")],
    model: Annotated[str | None, Query(min_length=1, max_length=200,
                                       description="A model id, family:NAME or *.")] = None,
) -> DiffOut:
    """Who gained or lost access (an `allow`) between two valid times, as known now.
    Role `auditor`."""
    return compliance.diff(service.index, start, to, model, service.candidate_indexes)


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
                                  "more": more}), media_type="application/json")

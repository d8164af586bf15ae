"""The compliance officer's route: `POST /v1/commands`."""

from __future__ import annotations

from eventsourcing.persistence import IntegrityError
from fastapi import APIRouter, Request
from fastapi.responses import Response
from starlette.concurrency import run_in_threadpool

from domain.commands import CommandConflict, CommandError, load_json
from domain.limits import MAX_REQUEST_BYTES
from interlock.http.models import AppliedOut, CommandRejectedOut
from interlock.http.openapi import request_body
from interlock.http.routing import (
    TOO_LARGE,
    ServiceDep,
    error_response,
    json_response,
    requires,
    responses,
)
from interlock.http.service import CommandsOutcome, Service, command_documents
from projections.chain import ChainRefused

router = APIRouter(tags=["officer"], dependencies=requires("officer"))


@router.post(
    "/v1/commands", response_model=AppliedOut,
    responses=responses(
        (422, CommandRejectedOut, "A command was refused: nothing of it was stored, the "
         "`applied` commands before it were (`index` names it)."),
        (409, CommandRejectedOut, "A `command_id` already applied with a different "
         "command (`index` names it; nothing of it was stored, the `applied` commands "
         "before it were), or another writer changed the same facts at the same time "
         "(retry)."),
        (503, CommandRejectedOut, "The store refused the write: the log since the hash "
         "chain's head is not what a writer of ours left (`interlock verify` names it); "
         "nothing of these commands was stored."),
        TOO_LARGE,
    ),
    openapi_extra=request_body("CommandsIn"),
)
async def commands(request: Request, service: ServiceDep) -> Response:
    """Applies one command, or `{"commands": [...]}` in order; a repeat of an applied
    `command_id` is skipped and counted in `repeated`.

    Role `officer`. With officer keys configured, directive commands must be signed."""
    try:
        documents = command_documents(load_json(await request.body(), MAX_REQUEST_BYTES))
    except CommandError as error:
        parts = error.field.split(".")
        within = len(parts) > 1 and parts[0] == "commands" and parts[1].isdigit()
        # A field inside the n-th command is named as the domain names its fields.
        return _rejected(service, CommandError(".".join(parts[2:]) if within else error.field,
                                               error.message),
                         int(parts[1]) if within else None)
    try:
        outcome = await run_in_threadpool(service.apply, documents)
    except IntegrityError:
        return error_response(409, "another writer changed the same facts concurrently; "
                              "nothing of these commands was stored, retry them", applied=0,
                              repeated=0, position=service.index.position)
    except ChainRefused as refused:
        service.metrics.commands_rejected.inc()
        return error_response(503, f"write refused (nothing of these commands was stored): "
                              f"{refused}", applied=0, repeated=0,
                              position=service.index.position)
    if outcome.rejected is not None:
        index, error = outcome.rejected
        if isinstance(error, CommandConflict):  # named as `interlock apply` names it
            error = CommandConflict("command_id", f"command_id "
                                    f"{documents[index]['command_id']!r}: {error.message}")
        return _rejected(service, error, index, outcome)
    return json_response({"applied": outcome.applied, "repeated": outcome.repeated,
                          "position": outcome.position})


def _rejected(service: Service, error: CommandError, index: int | None,
              outcome: CommandsOutcome | None = None) -> Response:
    """422 (409 for a conflicting `command_id`) with what was applied before it."""
    if outcome is None:
        service.metrics.commands_rejected.inc()
        outcome = CommandsOutcome(0, service.index.position)
    status = 409 if isinstance(error, CommandConflict) else 422
    return error_response(status, error.message, error.field, index, applied=outcome.applied,
                          repeated=outcome.repeated, position=outcome.position)

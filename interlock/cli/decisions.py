"""Deciding and recording: `apply`, `decide` (one request or `--batch`), `position`."""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, BinaryIO

import typer

from interlock.cli.shell import (
    TOO_LONG,
    AsOfOption,
    JsonOption,
    KnownAtOption,
    LocationOption,
    PurposeOption,
    StoreOption,
    app,
    emit,
    engine_for,
    fail,
    input_lines,
    line_error,
    literal,
    open_input,
    out,
    read_command,
    timestamp_option,
)
from interlock.config import store_url

if TYPE_CHECKING:  # the commands import what they use: `interlock --help` stays quick
    from domain.decision import Decision
    from domain.queries import DecisionRequest
    from interlock.engine import Engine


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="JSON lines of commands, or - for stdin.")],
    keep_going: Annotated[
        bool, typer.Option("--continue", help="Apply the good lines and list the bad ones.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Apply commands; a bad line stops here (exit 2), keeping every line before it.

    A repeat of an applied `command_id` (same id, same command) is skipped and counted as
    `repeated`; the same id with a different command is refused.

    Only the aggregates the commands name are read from the store (never the whole log: the
    access index is not built), so applying one command costs the same on any store."""
    from domain.commands import CommandConflict, CommandError

    bad: list[str] = []
    with engine_for(ctx, store, catch_up=False, create=True) as engine, \
            open_input(file) as stream:
        with engine.app.batch() as batch:
            for number, line in input_lines(stream):
                try:
                    command = read_command(line)
                    batch.apply(command)
                except CommandConflict as error:
                    bad.append(line_error(number, f"command_id {command.command_id!r}: "
                                          f"{error.message}"))
                except CommandError as error:
                    bad.append(line_error(number, error))
                if bad and not keep_going:
                    break
        result = batch.result
        emit({"applied": result.applied, "repeated": result.repeated,
              "position": result.position})
    for message in bad:
        sys.stderr.write(message + "\n")
    if bad:
        raise typer.Exit(2)


@app.command()
def decide(
    ctx: typer.Context,
    subject: Annotated[str | None, typer.Argument(help="Subject id.")] = None,
    model: Annotated[str | None, typer.Argument(help="Model version id.")] = None,
    at: Annotated[str | None, typer.Option(help="Valid time (ISO-8601 with offset).")] = None,
    as_of: AsOfOption = None,
    known_at: KnownAtOption = None,
    location: LocationOption = None,
    purpose: PurposeOption = None,
    batch: Annotated[
        str | None, typer.Option(help="JSON lines of requests (or -); decisions out.")
    ] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """May SUBJECT use MODEL — and if not, why?"""
    if batch is not None:
        if subject is not None or model is not None:
            raise fail("--batch takes requests from its file, not SUBJECT MODEL")
        with engine_for(ctx, store) as engine, open_input(batch) as stream:
            warn_if_empty(engine, store or ctx.obj)
            decide_batch(engine, stream)
        return
    if subject is None or model is None:
        raise fail("decide needs SUBJECT and MODEL, or --batch FILE")
    request = request_of(subject, model, at, as_of, known_at, location, purpose)
    with engine_for(ctx, store) as engine:
        warn_if_empty(engine, store or ctx.obj)
        decision = decide_request(engine, request)
    if as_json:
        emit(decision.to_json())
    else:
        show_decision(decision)


def request_of(subject: str, model: str, at: str | None, as_of: int | None,
               known_at: str | None, location: str | None, purpose: str | None
               ) -> DecisionRequest:
    """The options of `decide` and `explain`, validated as an HTTP decide request is."""
    from pydantic import ValidationError

    from domain.commands import command_error_from
    from domain.queries import DecisionRequest

    try:
        return DecisionRequest(
            subject=subject, model=model, at=timestamp_option(at, "--at"), as_of=as_of,
            known_at=timestamp_option(known_at, "--known-at"), location=location,
            purpose=purpose,
        )
    except ValidationError as error:
        problem = command_error_from(error)
        name = problem.field if problem.field in ("subject", "model") else "--" + (
            problem.field.replace("_", "-"))
        raise fail(f"{name}: {problem.message}") from None


def warn_if_empty(engine: Engine, store: str | None) -> None:
    """A decision from a store without events denies everything as unknown_model; say why."""
    if engine.index.position == 0:
        sys.stderr.write(f"note: store {store_url(store)} holds no events: every model is "
                         "unknown to it (apply commands first, or choose another --store)\n")


def decide_request(engine: Engine, request: DecisionRequest) -> Decision:
    return engine.index.decide(
        request.subject, request.model, at=request.at, as_of=request.as_of,
        known_at=request.known_at, context=request.context,
    )


def decide_batch(engine: Engine, stream: BinaryIO) -> None:
    """One decision per request line, in order; the first bad line stops here (exit 2)."""
    from domain.commands import CommandError
    from domain.queries import parse_decision_request_json

    for number, line in input_lines(stream):
        if line is None:
            raise fail(line_error(number, TOO_LONG))
        try:
            request = parse_decision_request_json(line)
        except CommandError as error:
            raise fail(line_error(number, error)) from None
        emit(decide_request(engine, request).to_json())


def show_decision(decision: Decision) -> None:
    from rich.table import Table

    colour = {"allow": "green", "deny": "red", "route": "yellow"}[decision.effect]
    headline = (f"[bold {colour}]{decision.effect.upper()}[/] {literal(decision.subject)} → "
                f"{literal(decision.model)}")
    if decision.route_to:
        headline += f" routed to [bold]{literal(decision.route_to)}[/]"
        headline += " (disclosed)" if decision.disclosed else " (not disclosed)"
    out.print(headline)
    out.print(f"at {decision.at.isoformat()}, as known at position {decision.as_of}")
    table = Table("reason", "ref", box=None)
    for reason in decision.reasons:
        table.add_row(reason.code, literal(reason.ref or ""))
    out.print(table)


@app.command()
def position(ctx: typer.Context, as_json: JsonOption = False, store: StoreOption = None) -> None:
    """The position of the last stored event."""
    with engine_for(ctx, store, catch_up=False) as engine:  # the store's; no index needed
        value = engine.app.position
    if as_json:
        emit({"position": value})
    else:
        out.print(value)

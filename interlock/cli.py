"""The `interlock` command line."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TextIO

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.table import Table

from domain.commands import CommandError, Timestamp, command_error_from, parse_command_json
from domain.decision import Decision
from domain.queries import DecisionRequest
from interlock.config import StoreURLError
from interlock.engine import Engine, open_engine

app = typer.Typer(
    help="Interlock: event-sourced access control and export compliance for AI models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console()

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="INTERLOCK_STORE",
        help="sqlite:///PATH (default .interlock/interlock.db), postgresql://..., or memory:",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]

_TIMESTAMP = TypeAdapter(Timestamp)


@app.callback()
def main(ctx: typer.Context, store: StoreOption = None) -> None:
    ctx.obj = store


def fail(message: str, code: int = 2) -> typer.Exit:
    sys.stderr.write(message + "\n")
    return typer.Exit(code)


@contextmanager
def engine_for(ctx: typer.Context, store: str | None) -> Iterator[Engine]:
    try:
        engine = open_engine(store or ctx.obj)
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None
    try:
        yield engine
    finally:
        engine.close()


@contextmanager
def open_input(path: str) -> Iterator[TextIO]:
    if path == "-":
        yield sys.stdin
        return
    try:
        with Path(path).open(encoding="utf-8") as stream:
            yield stream
    except OSError as error:
        raise fail(f"{path}: {error.strerror}") from None


def timestamp_option(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return _TIMESTAMP.validate_python(value)
    except ValidationError as error:
        raise fail(f"{name}: {command_error_from(error).message}") from None


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")


@app.command()
def apply(
    ctx: typer.Context,
    file: Annotated[str, typer.Argument(help="JSON lines of commands, or - for stdin.")],
    keep_going: Annotated[
        bool, typer.Option("--continue", help="Apply the good lines and list the bad ones.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Apply commands; a bad line stops here (exit 2), keeping every line before it."""
    bad: list[str] = []
    with engine_for(ctx, store) as engine, open_input(file) as lines:
        with engine.app.batch() as batch:
            for number, line in enumerate(lines, start=1):
                if not line.strip():
                    continue
                try:
                    batch.apply(parse_command_json(line))
                except CommandError as error:
                    bad.append(f"line {number}: {error}")
                    if not keep_going:
                        break
        emit({"applied": batch.result.applied, "position": batch.result.position})
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
    as_of: Annotated[int | None, typer.Option(help="Use only facts up to this position.")] = None,
    known_at: Annotated[
        str | None, typer.Option(help="Use only facts recorded by this time.")
    ] = None,
    location: Annotated[str | None, typer.Option(help="Request location (country).")] = None,
    purpose: Annotated[str | None, typer.Option(help="Request purpose.")] = None,
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
        with engine_for(ctx, store) as engine, open_input(batch) as lines:
            decide_batch(engine, lines)
        return
    if subject is None or model is None:
        raise fail("decide needs SUBJECT and MODEL, or --batch FILE")
    try:
        request = DecisionRequest(
            subject=subject, model=model, at=timestamp_option(at, "--at"), as_of=as_of,
            known_at=timestamp_option(known_at, "--known-at"), location=location,
            purpose=purpose,
        )
    except ValidationError as error:
        raise fail(f"--{command_error_from(error)}") from None
    with engine_for(ctx, store) as engine:
        decision = decide_request(engine, request)
    if as_json:
        emit(decision.to_json())
    else:
        show_decision(decision)


def decide_request(engine: Engine, request: DecisionRequest) -> Decision:
    return engine.index.decide(
        request.subject, request.model, at=request.at, as_of=request.as_of,
        known_at=request.known_at, context=request.context,
    )


def decide_batch(engine: Engine, lines: TextIO) -> None:
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            request = DecisionRequest.model_validate_json(line)
        except ValidationError as error:
            raise fail(f"line {number}: {command_error_from(error)}") from None
        emit(decide_request(engine, request).to_json())


def show_decision(decision: Decision) -> None:
    colour = {"allow": "green", "deny": "red", "route": "yellow"}[decision.effect]
    headline = f"[bold {colour}]{decision.effect.upper()}[/] {decision.subject} → {decision.model}"
    if decision.route_to:
        headline += f" routed to [bold]{decision.route_to}[/]"
        headline += " (disclosed)" if decision.disclosed else " (not disclosed)"
    out.print(headline)
    out.print(f"at {decision.at.isoformat()}, as known at position {decision.as_of}")
    table = Table("reason", "ref", box=None)
    for reason in decision.reasons:
        table.add_row(reason.code, reason.ref or "")
    out.print(table)


@app.command()
def position(ctx: typer.Context, as_json: JsonOption = False, store: StoreOption = None) -> None:
    """The position of the last stored event."""
    with engine_for(ctx, store) as engine:
        value = engine.app.position
    if as_json:
        emit({"position": value})
    else:
        out.print(value)


@app.command()
def demo(
    ctx: typer.Context,
    subjects: Annotated[int, typer.Option(help="Size of the synthetic population.")] = 10_000,
    fresh: Annotated[bool, typer.Option(help="Start from an empty demo store.")] = True,
    store: Annotated[
        str | None, typer.Option("--store", help="Store for the demo.")
    ] = None,
) -> None:
    """The 5:21 p.m. order on a synthetic population, told as a timeline."""
    from interlock.demo import run_demo

    run_demo(out, store or "sqlite:///.interlock/demo.db", subjects=subjects, fresh=fresh)

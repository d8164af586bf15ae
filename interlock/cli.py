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
def engine_for(ctx: typer.Context, store: str | None, catch_up: bool = True) -> Iterator[Engine]:
    try:
        engine = open_engine(store or ctx.obj, catch_up=catch_up)
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


KafkaOption = Annotated[
    str | None,
    typer.Option("--kafka", envvar="INTERLOCK_KAFKA", help="Kafka bootstrap servers."),
]
PrefixOption = Annotated[
    str, typer.Option("--topic-prefix", help="Prefix for the four topic names.")
]


def run_until_signalled(name: str, process: Any, progress: Any) -> None:
    """Runs a Kafka process until SIGTERM or SIGINT, then closes it cleanly."""
    import signal
    import threading

    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    sys.stderr.write(f"interlock {name}: running ({progress()})\n")
    try:
        process.run(stop)
    finally:
        process.close()
        sys.stderr.write(f"interlock {name}: stopped ({progress()})\n")


def kafka_for(kafka: str | None, prefix: str) -> tuple[str, Any]:
    from consumers.kafka import DEFAULT_TOPICS, Topics, bootstrap_servers, ensure_topics

    try:
        bootstrap = bootstrap_servers(kafka)
    except ValueError as error:
        raise fail(f"--kafka: {error}") from None
    topics = Topics.prefixed(prefix) if prefix else DEFAULT_TOPICS
    ensure_topics(bootstrap, topics)
    return bootstrap, topics


@app.command()
def intake(
    ctx: typer.Context, kafka: KafkaOption = None, topic_prefix: PrefixOption = "",
    store: StoreOption = None,
) -> None:
    """Apply commands from interlock.commands exactly once; rejects go to the DLQ."""
    from consumers.intake import Intake

    bootstrap, topics = kafka_for(kafka, topic_prefix)
    with engine_for(ctx, store) as engine:
        process = Intake(engine.app, bootstrap, topics)
        run_until_signalled("intake", process, lambda: (
            f"applied {process.applied}, rejected {process.rejected}"
        ))


@app.command()
def relay(
    ctx: typer.Context, kafka: KafkaOption = None, topic_prefix: PrefixOption = "",
    store: StoreOption = None,
) -> None:
    """Publish every stored event to interlock.events in position order."""
    from consumers.relay import Relay

    bootstrap, topics = kafka_for(kafka, topic_prefix)
    with engine_for(ctx, store, catch_up=False) as engine:
        process = Relay(engine.app, bootstrap, topics)
        run_until_signalled("relay", process, lambda: f"published up to {process.position}")


@app.command()
def enforce(kafka: KafkaOption = None, topic_prefix: PrefixOption = "") -> None:
    """Follow interlock.events and publish access_revoked / access_restored records."""
    from consumers.enforcer import EnforcerProcess

    bootstrap, topics = kafka_for(kafka, topic_prefix)
    process = EnforcerProcess(bootstrap, topics)
    run_until_signalled("enforce", process, lambda: (
        f"position {process.position}, {process.published} records published"
    ))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Address to bind.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to bind.")] = 8080,
    tokens: Annotated[
        str | None,
        typer.Option(help="JSON or TOML file: sha256 hex of each token → {name, roles}; "
                     "default: INTERLOCK_TOKENS (same content inline)."),
    ] = None,
    officer_keys: Annotated[
        str | None,
        typer.Option(help="JSON or TOML file: key id → base64 Ed25519 public key; directives "
                     "must then be signed. Default: INTERLOCK_OFFICER_KEYS (inline)."),
    ] = None,
    workers: Annotated[int, typer.Option(min=1, help="uvicorn worker processes.")] = 1,
    max_lag: Annotated[
        float, typer.Option(help="Staleness bound in seconds: beyond it directive-scoped "
                            "models are denied (stale_index) and /readyz fails.")
    ] = 2.0,
    wait: Annotated[
        float, typer.Option(help="Seconds a decision asking for an unreached position waits "
                            "before answering 409.")
    ] = 2.0,
    log_level: Annotated[str, typer.Option(help="uvicorn log level.")] = "warning",
    store: StoreOption = None,
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn); OpenAPI at /docs."""
    from interlock.auth import ConfigError, Tokens
    from interlock.http.server import is_loopback, run
    from interlock.http.settings import ServeSettings
    from interlock.signing import OfficerKeys

    store = store or ctx.obj
    try:
        configured_tokens = Tokens.configured(tokens)
        keys = OfficerKeys.configured(officer_keys)
        settings = ServeSettings(
            store=store, tokens=None if configured_tokens is None else configured_tokens.table,
            officer_keys=None if keys is None else keys.table(), max_lag_seconds=max_lag,
            wait_seconds=wait,
        )
    except ConfigError as error:
        raise fail(str(error)) from None
    except ValidationError as error:
        raise fail(f"--{command_error_from(error)}") from None
    if configured_tokens is None and not is_loopback(host):
        raise fail(f"refusing to serve on {host} without tokens: configure --tokens FILE or "
                   "INTERLOCK_TOKENS, or bind a loopback address")
    if workers > 1 and (store or "").startswith("memory:"):
        raise fail("--workers > 1 needs a shared store; memory: lives in one process")
    auth = (f"{len(configured_tokens)} token(s)" if configured_tokens is not None
            else "OFF (no tokens configured; loopback only)")
    signing = f"required ({len(keys.keys)} officer key(s))" if keys else "not required"
    sys.stderr.write(
        f"interlock serve on http://{host}:{port} ({workers} worker(s)); authentication: "
        f"{auth}; directive signatures: {signing}; staleness bound {max_lag:g} s\n"
    )
    run(settings, host, port, workers, log_level)


@app.command()
def sign(
    file: Annotated[
        str | None, typer.Argument(help="JSON lines of commands, or - for stdin.")
    ] = None,
    key: Annotated[str, typer.Option(help="The officer's Ed25519 private key (PEM).")] = "",
    key_id: Annotated[str, typer.Option(help="The key's id in the officer-keys table.")] = "",
    generate_key: Annotated[
        bool, typer.Option(help="Write a new private key to --key and print its entry for "
                           "the officer-keys table.")
    ] = False,
) -> None:
    """Sign directive commands (other commands pass through unchanged)."""
    from interlock.auth import ConfigError
    from interlock.signing import generate_key as new_key
    from interlock.signing import load_private_key, private_key_pem, public_key_b64, sign_command

    if not key or not key_id:
        raise fail("sign needs --key FILE and --key-id ID")
    if generate_key:
        private = new_key()
        try:
            with Path(key).open("xb") as stream:
                Path(key).chmod(0o600)
                stream.write(private_key_pem(private))
        except OSError as error:
            raise fail(f"{key}: {error.strerror}") from None
        emit({key_id: public_key_b64(private)})
        return
    if file is None:
        raise fail("sign needs FILE (or - for stdin), or --generate-key")
    try:
        private = load_private_key(key)
    except ConfigError as error:
        raise fail(str(error)) from None
    with open_input(file) as lines:
        for number, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            try:
                parse_command_json(line)
                emit(sign_command(json.loads(line), private, key_id))
            except CommandError as error:
                raise fail(f"line {number}: {error}") from None


token_app = typer.Typer(help="Bearer tokens for `interlock serve`.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("hash")
def token_hash(
    token: Annotated[str | None, typer.Argument(help="The token; read from stdin if omitted.")]
    = None,
) -> None:
    """The sha256 hex a tokens table stores for TOKEN."""
    from interlock.auth import hash_token

    sys.stdout.write(hash_token(token if token is not None else sys.stdin.read().strip()) + "\n")


@token_app.command("new")
def token_new(
    name: Annotated[str, typer.Option(help="Who holds the token.")],
    role: Annotated[list[str], typer.Option(help="decide, officer or auditor (repeatable).")],
) -> None:
    """A new random token and its tokens-table entry: hand out the token, keep the entry."""
    from typing import get_args

    from interlock.auth import Role, hash_token, new_token

    unknown = sorted(set(role) - set(get_args(Role)))
    if unknown:
        raise fail(f"--role: unknown {', '.join(unknown)}; expected decide, officer or auditor")
    token = new_token()
    emit({"token": token, "entry": {hash_token(token): {"name": name, "roles": sorted(set(role))}}})

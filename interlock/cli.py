"""The `interlock` command line."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, BinaryIO

import typer
from pydantic import TypeAdapter, ValidationError
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from domain.commands import (
    Command,
    CommandConflict,
    CommandError,
    Timestamp,
    command_error_from,
    load_json,
    parse_command_json,
)
from domain.decision import Decision
from domain.limits import MAX_COMMAND_BYTES
from domain.queries import DecisionRequest, parse_decision_request_json
from interlock.config import DEMO_STORE, StoreMissing, StoreURLError, store_url
from interlock.decisions_cli import decisions_app
from interlock.engine import Engine, open_engine


class Interlock(typer.Typer):
    """The console script, with a last guard: input errors are refused where they are read,
    naming the line or option (exit 2); anything that still escapes is a fault of ours, told
    in one line (exit 1) instead of a traceback."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        try:
            return super().__call__(*args, **kwargs)
        except Exception as error:
            sys.stderr.write(f"interlock: internal error: {type(error).__name__}: "
                             f"{str(error)[:500]}\n")
            sys.exit(1)


app = Interlock(
    help="Interlock: event-sourced access control and export compliance for AI models.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)
out = Console(emoji=False)
"""Human output. Every piece of stored data it prints goes through `literal`, so that an id
like `[/]` or `:smile:` prints as itself instead of as markup."""

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        envvar="INTERLOCK_STORE",
        help="sqlite:///PATH (default .interlock/interlock.db), postgresql://..., or memory:",
    ),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
SnapshotOption = Annotated[
    str | None,
    typer.Option(
        "--snapshot",
        envvar="INTERLOCK_SNAPSHOT",
        help="Index snapshot to start from (see `interlock snapshot`); one that does not fit "
        "the store is ignored.",
    ),
]

_TIMESTAMP = TypeAdapter(Timestamp)


@app.callback()
def main(
    ctx: typer.Context,
    store: StoreOption = None,
    snapshot: SnapshotOption = None,
    officer_keys: Annotated[
        str | None,
        typer.Option(
            "--officer-keys",
            help="JSON or TOML file: key id → base64 Ed25519 public key; directive commands "
            "must then be signed on every path. Default: INTERLOCK_OFFICER_KEYS (inline).",
        ),
    ] = None,
) -> None:
    ctx.obj = store
    if snapshot:
        # Through the environment, so that every engine this process opens starts from it,
        # serve's uvicorn workers (separate processes) included.
        os.environ["INTERLOCK_SNAPSHOT"] = snapshot
    if officer_keys:
        from interlock.auth import ConfigError
        from interlock.signing import OFFICER_KEYS_VARIABLE, OfficerKeys

        try:
            found = OfficerKeys.configured(officer_keys)
        except ConfigError as error:
            raise fail(f"--officer-keys: {error}") from None
        # Likewise through the environment: every engine opened below (apply, intake, serve's
        # workers) then checks signatures with these keys.
        os.environ[OFFICER_KEYS_VARIABLE] = json.dumps(found.table() if found else {})


def literal(value: object) -> str:
    """Stored data (an id, a source, evidence) as rich markup that prints it as it is: markup
    escaped, and characters that print as nothing or move the cursor (controls, bidi
    overrides, zero-width) written as escapes, so that the id read is the id stored."""
    text = str(value)
    if not text.isprintable():
        text = "".join(char if char.isprintable() else repr(char)[1:-1] for char in text)
    return escape(text)


def fail(message: str, code: int = 2) -> typer.Exit:
    sys.stderr.write(message + "\n")
    return typer.Exit(code)


@contextmanager
def engine_for(
    ctx: typer.Context, store: str | None, catch_up: bool = True, create: bool = False
) -> Iterator[Engine]:
    """The engine on the chosen store. Only writers `create` it: a read-only command on a
    store that does not exist stops with exit 2 rather than answer from an empty one."""
    from interlock.auth import ConfigError
    from projections.chain import ChainRefused

    try:
        engine = open_engine(store or ctx.obj, catch_up=catch_up, create=create)
    except StoreMissing as error:
        raise fail(str(error)) from None
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None
    except ConfigError as error:
        raise fail(str(error)) from None
    try:
        yield engine
    except ChainRefused as error:
        raise fail(f"write refused (its transaction stored nothing): {error}", 1) from None
    finally:
        engine.close()


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """FILE or - (stdin) as bytes: lines are decoded one by one (`input_lines`), so a bad byte
    is refused naming its line, after every line before it."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        with Path(path).open("rb") as stream:
            yield stream
    except OSError as error:
        raise fail(f"{path}: {error.strerror}") from None


TOO_LONG = f"longer than the limit of {MAX_COMMAND_BYTES:,} bytes"


def input_lines(stream: BinaryIO) -> Iterator[tuple[int, bytes | None]]:
    """The numbered non-blank lines of a JSON-lines stream; None for a line over
    MAX_COMMAND_BYTES, which is read past in bounded pieces, never held whole."""
    number = 0
    while line := stream.readline(MAX_COMMAND_BYTES + 1):
        number += 1
        if len(line) > MAX_COMMAND_BYTES and not line.endswith(b"\n"):
            while line and not line.endswith(b"\n"):
                line = stream.readline(MAX_COMMAND_BYTES)
            yield number, None
        elif line.strip():
            yield number, line


def read_command(line: bytes | None) -> Command:
    """A command from the bytes of a line (None: too long) or a file, read by the domain's
    strict reader (UTF-8, repeated keys, size: see `domain.commands.load_json`)."""
    if line is None:
        raise CommandError("", TOO_LONG)
    return parse_command_json(line)


def line_error(number: int, problem: object) -> str:
    return f"line {number}: {problem}"


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
    """Apply commands; a bad line stops here (exit 2), keeping every line before it.

    A repeat of an applied `command_id` (same id, same command) is skipped and counted as
    `repeated`; the same id with a different command is refused."""
    bad: list[str] = []
    with engine_for(ctx, store, create=True) as engine, open_input(file) as stream:
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
    for number, line in input_lines(stream):
        if line is None:
            raise fail(line_error(number, TOO_LONG))
        try:
            request = parse_decision_request_json(line)
        except CommandError as error:
            raise fail(line_error(number, error)) from None
        emit(decide_request(engine, request).to_json())


def show_decision(decision: Decision) -> None:
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


@app.command()
def demo(
    ctx: typer.Context,
    subjects: Annotated[int, typer.Option(help="Size of the synthetic population.")] = 10_000,
    fresh: Annotated[bool, typer.Option(help="Start from an empty demo store.")] = True,
    store: Annotated[
        str | None, typer.Option("--store", help="Store for the demo.")
    ] = None,
    export: Annotated[
        str | None, typer.Option("--export", help="Write the demo's commands to FILE (- for "
                                 "stdout) as JSON lines for `interlock apply`, and stop.")
    ] = None,
) -> None:
    """The 5:21 p.m. order on a synthetic population, told as a timeline."""
    from interlock.demo import demo_commands, run_demo

    if export is not None:
        lines = "".join(json.dumps(command) + "\n" for command in demo_commands(subjects))
        if export == "-":
            sys.stdout.write(lines)
            return
        try:
            Path(export).write_text(lines, encoding="utf-8")
        except OSError as error:
            raise fail(f"--export: {export}: {error.strerror}") from None
        emit({"exported": lines.count("\n"), "file": export})
        return
    run_demo(out, store or DEMO_STORE, subjects=subjects, fresh=fresh)


@app.command()
def snapshot(
    ctx: typer.Context,
    file: Annotated[
        str | None, typer.Argument(help="Where to write it; default INTERLOCK_SNAPSHOT.")
    ] = None,
    every: Annotated[
        float | None,
        typer.Option(min=1, help="Keep running: every N seconds, catch up and write a new "
                     "snapshot if the store has moved on (until SIGTERM)."),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Write the access index (facts and position) to FILE, to start processes from it."""
    import signal
    import threading
    import time

    from projections.snapshot import write_snapshot

    target = file or os.environ.get("INTERLOCK_SNAPSHOT")
    if not target:
        raise fail("snapshot needs FILE (or INTERLOCK_SNAPSHOT)")
    path = Path(target)
    stop = threading.Event()
    if every is not None:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: stop.set())
    try:
        # Starts from the snapshot it replaces, when that fits: only newer events are read.
        engine = open_engine(store or ctx.obj, snapshot=path, create=False)
    except StoreMissing as error:
        raise fail(str(error)) from None
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None
    try:
        written: int | None = None
        while True:
            if engine.index.position != written:
                started = time.perf_counter()
                info = write_snapshot(engine.index, engine.app.recorder, path)
                written = info.position
                emit({"snapshot": str(path), "position": info.position,
                      "bytes": info.payload_bytes,
                      "seconds": round(time.perf_counter() - started, 2)})
                sys.stdout.flush()
            if every is None or stop.wait(every):
                break
            engine.catch_up()
    finally:
        engine.close()


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


@contextmanager
def kafka_process(name: str) -> Iterator[None]:
    """Reports why a Kafka process cannot go on in one line on stderr, exit 1: a broker that
    does not answer, a producer fenced by a newer instance, an event the relay cannot publish, a
    store unreachable at start. Run them under a supervisor that restarts them: each resumes
    where it stopped."""
    from kafka.errors import KafkaError

    from consumers.kafka import STORE_FAULTS, KafkaProcessError

    try:
        yield
    except KafkaProcessError as error:
        raise fail(f"interlock {name}: {error}", 1) from None
    except KafkaError as error:
        raise fail(f"interlock {name}: Kafka: {type(error).__name__}: {error}", 1) from None
    except STORE_FAULTS as error:
        raise fail(f"interlock {name}: store unavailable: {error}", 1) from None


def kafka_for(kafka: str | None, prefix: str) -> tuple[str, Any]:
    """The bootstrap servers and the deployment's topics, created if missing."""
    from consumers.kafka import Topics, bootstrap_servers, ensure_topics

    try:
        bootstrap = bootstrap_servers(kafka)
    except ValueError as error:
        raise fail(f"--kafka: {error}") from None
    topics = Topics.prefixed(prefix)
    ensure_topics(bootstrap, topics)
    return bootstrap, topics


@app.command()
def intake(
    ctx: typer.Context, kafka: KafkaOption = None, topic_prefix: PrefixOption = "",
    store: StoreOption = None,
) -> None:
    """Apply commands from interlock.commands exactly once; refusals go to the DLQ."""
    from consumers.intake import Intake

    with kafka_process("intake"):
        bootstrap, topics = kafka_for(kafka, topic_prefix)
        with engine_for(ctx, store, catch_up=False, create=True) as engine:
            process = Intake(engine.app, bootstrap, topics)
            run_until_signalled("intake", process, lambda: (
                f"applied {process.applied}, repeated {process.repeated}, "
                f"refused {process.refused}"
            ))


@app.command()
def relay(
    ctx: typer.Context, kafka: KafkaOption = None, topic_prefix: PrefixOption = "",
    store: StoreOption = None,
) -> None:
    """Publish every stored event to interlock.events in position order."""
    from consumers.relay import Relay

    with kafka_process("relay"):
        bootstrap, topics = kafka_for(kafka, topic_prefix)
        with engine_for(ctx, store, catch_up=False, create=True) as engine:
            process = Relay(engine.app, bootstrap, topics)
            run_until_signalled("relay", process,
                                lambda: f"published up to {process.position}")


@app.command()
def enforce(kafka: KafkaOption = None, topic_prefix: PrefixOption = "") -> None:
    """Follow interlock.events and publish access_revoked / access_restored records."""
    from consumers.enforcer import EnforcerProcess

    with kafka_process("enforce"):
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
    follow: Annotated[
        str, typer.Option(help="store: embedded, the index follows the store and the kill "
                          "switch runs in-process; kafka: a decision replica following "
                          "interlock.events.")
    ] = "store",
    kafka: KafkaOption = None,
    topic_prefix: PrefixOption = "",
    revocations: Annotated[
        str | None, typer.Option(help="Embedded mode: also append access changes to this "
                                 "JSON-lines file.")
    ] = None,
    decision_log: Annotated[
        str | None, typer.Option(envvar="INTERLOCK_DECISION_LOG", help="Log every served "
                                 "decision: sqlite:///PATH, postgresql://... or kafka (on "
                                 "--kafka).")
    ] = None,
    decision_log_mode: Annotated[
        str, typer.Option(help="strict: answer a decision only once its log entry is durable; "
                          "best-effort: answer at once, count what the log cannot keep.")
    ] = "strict",
    retention: Annotated[
        str | None, typer.Option(help="Prune log entries older than this (30d, 5y) on a "
                                 "schedule.")
    ] = None,
    replica_name: Annotated[
        str | None, typer.Option(help="This process's name in the decision log (default "
                                 "hostname:pid).")
    ] = None,
    store: StoreOption = None,
) -> None:
    """Serve the HTTP API (FastAPI on uvicorn); OpenAPI at /docs."""
    from interlock.auth import ConfigError, Tokens
    from interlock.http.server import is_loopback, run
    from interlock.http.settings import ServeSettings
    from interlock.signing import OfficerKeys
    from projections.decision_log import parse_duration

    store = store or ctx.obj
    try:
        kept = None if retention is None else parse_duration(retention).total_seconds()
    except ValueError as error:
        raise fail(f"--retention: {error}") from None
    try:
        configured_tokens = Tokens.configured(tokens)
        keys = OfficerKeys.configured(officer_keys)
        settings = ServeSettings(
            store=store, tokens=None if configured_tokens is None else configured_tokens.table,
            officer_keys=None if keys is None else keys.table(), max_lag_seconds=max_lag,
            wait_seconds=wait, follow=follow, kafka=kafka, topic_prefix=topic_prefix,
            revocation_file=revocations, decision_log=decision_log,
            decision_log_mode=decision_log_mode, retention_seconds=kept,
            replica_name=replica_name,
        )
    except ConfigError as error:
        raise fail(str(error)) from None
    except ValidationError as error:
        problem = command_error_from(error)
        option = {"max_lag_seconds": "--max-lag", "wait_seconds": "--wait",
                  "follow": "--follow", "decision_log_mode": "--decision-log-mode",
                  "replica_name": "--replica-name"}.get(problem.field)
        raise fail(f"{option}: {problem.message}" if option else problem.message) from None
    if configured_tokens is None and not is_loopback(host):
        raise fail(f"refusing to serve on {host} without tokens: configure --tokens FILE or "
                   "INTERLOCK_TOKENS, or bind a loopback address")
    if workers > 1 and (store or "").startswith("memory:"):
        raise fail("--workers > 1 needs a shared store; memory: lives in one process")
    auth = (f"{len(configured_tokens)} token(s)" if configured_tokens is not None
            else "OFF (no tokens configured; loopback only)")
    signing = f"required ({len(keys.keys)} officer key(s))" if keys else "not required"
    logged = (f"; decision log: {settings.decision_log} ({decision_log_mode}"
              + (f", retention {retention}" if retention else "") + ")"
              if settings.decision_log else "")
    sys.stderr.write(
        f"interlock serve on http://{host}:{port} ({workers} worker(s)); authentication: "
        f"{auth}; directive signatures: {signing}; staleness bound {max_lag:g} s{logged}\n"
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
    """Sign directive commands (other commands pass through unchanged); a directive command
    without a command_id gets a fresh one, which the signature covers."""
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
    with open_input(file) as stream:
        for number, line in input_lines(stream):
            if line is None:
                raise fail(line_error(number, TOO_LONG))
            try:
                emit(sign_command(load_json(line), private, key_id))
            except CommandError as error:
                raise fail(line_error(number, error)) from None


@app.command()
def docs(
    directory: Annotated[
        Path, typer.Argument(help="The docs directory of a checkout.")
    ] = Path("docs"),
    check: Annotated[
        bool, typer.Option("--check", help="Write nothing; exit 1 naming each generated file "
                           "that is missing or differs from what the models say.")
    ] = False,
    story: Annotated[
        Path, typer.Option(help="The example story; each command's first line in it is that "
                           "command's example.")
    ] = Path("examples/5-21/story.jsonl"),
) -> None:
    """Generate the command reference (commands.md) and the JSON Schemas of commands and
    decision requests (schema/*.schema.json) from the pydantic models."""
    from interlock.reference import reference_files, stale_files

    try:
        if check:
            stale = stale_files(directory, story)
            for name in stale:
                sys.stderr.write(f"{directory / name}: out of date; run `interlock docs`\n")
            raise typer.Exit(1 if stale else 0)
        for name, text in reference_files(story).items():
            path = directory / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
            emit({"wrote": str(path), "bytes": len(text.encode())})
    except OSError as error:
        raise fail(f"{error.filename}: {error.strerror}") from None


token_app = typer.Typer(help="Bearer tokens for `interlock serve`.", no_args_is_help=True)
app.add_typer(token_app, name="token")
app.add_typer(decisions_app, name="decisions")


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


# ----------------------------------------------------------------- compliance officer tools
# history, impact, diff, explain, replay, verify, report: a compliance officer's questions,
# answered from the same store and index as `decide` (projections.compliance, .audit).

LimitOption = Annotated[
    int, typer.Option("--limit", help="Rows to print per table (--json prints all).")
]


def _utc(value: str | None) -> str:
    """An ISO timestamp as shown in tables: UTC, to the millisecond."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _reasons(verdict: dict[str, Any]) -> str:
    return ", ".join(f"{r['code']}={literal(r['ref'])}" if r["ref"] else r["code"]
                     for r in verdict["reasons"])


def _effect(verdict: dict[str, Any]) -> str:
    colour = {"allow": "green", "deny": "red", "route": "yellow"}[verdict["effect"]]
    routed = f" → {literal(verdict['route_to'])}" if verdict.get("route_to") else ""
    return f"[{colour}]{verdict['effect']}{routed}[/] [dim]{_reasons(verdict)}[/]"


def _more(shown: int, total: int) -> None:
    if total > shown:
        out.print(f"[dim]… {total - shown:,} more (--limit N, or --json for all)[/]")


@app.command()
def history(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="Subject id.")],
    model: Annotated[str | None, typer.Option(help="Only this model version.")] = None,
    from_: Annotated[str | None, typer.Option("--from", help="Changes from this time.")] = None,
    to: Annotated[str | None, typer.Option(help="Changes up to this time.")] = None,
    limit: LimitOption = 100,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """SUBJECT's facts and every change of its decisions, as they were made.

    A change is listed where the decision at moment τ, with the facts known at τ, differs from
    the one just before: when a fact was recorded, or when a known fact took effect."""
    from projections import compliance

    start, end = timestamp_option(from_, "--from"), timestamp_option(to, "--to")
    with engine_for(ctx, store) as engine, engine.index.lock:
        facts = engine.index.facts
        if model is not None and model not in facts.models:
            raise fail(f"--model: unknown model {model!r}", 1)
        found = compliance.history(facts, subject, model, start, end)
    if found is None:
        raise fail(f"unknown subject {subject!r}: nothing is known about it", 1)
    data = found.to_json()
    if as_json:
        emit(data)
        return
    out.print(f"[bold]{literal(subject)}[/] as known at position {data['as_of']:,} (times in UTC)")
    facts_table = Table("kind", "values", "valid from", "valid until", "recorded", "position",
                        "source", "evidence", title="Attestations", title_justify="left")
    for a in data["attestations"]:
        values = "; ".join(f"{k}: {', '.join(map(literal, v)) or '—'}"
                           for k, v in a["values"].items())
        facts_table.add_row(a["kind"], values, _utc(a["valid_from"]), _utc(a["valid_until"]),
                            _utc(a["recorded_at"]), f"{a['position']:,}", literal(a["source"]),
                            literal(a["evidence"] or ""))
    for r in data["revocations"]:
        facts_table.add_row(f"{r['kind']} revoked", "", _utc(r["effective_at"]), "",
                            _utc(r["recorded_at"]), f"{r['position']:,}", "", "")
    out.print(facts_table)
    grants = Table("entitlement", "grantee", "models", "valid from", "valid until", "recorded",
                   "position", "revoked", title="Entitlements", title_justify="left")
    for e in data["entitlements"]:
        ((kind, grantee),) = e["grantee"].items()
        revoked = ", ".join(f"{_utc(r['effective_at'])} (pos {r['position']:,})"
                            for r in e["revocations"])
        grants.add_row(literal(e["entitlement"]), f"{kind} {literal(grantee)}",
                       ", ".join(map(literal, e["models"])),
                       _utc(e["valid_from"]), _utc(e["valid_until"]), _utc(e["recorded_at"]),
                       f"{e['position']:,}", revoked)
    out.print(grants)
    out.print("\n[bold]Decision changes, as decided at each moment[/]")
    for change in data["changes"][:limit]:
        cause = change["cause"]
        mark = {"lost": "[red]▼ lost[/]", "gained": "[green]▲ gained[/]"}.get(
            change["access"] or "", "· changed")
        out.print(f"{_utc(change['at'])}  [bold]{literal(change['model'])}[/]  {mark}  "
                  f"{_effect(change['before'])} → {_effect(change['after'])}")
        out.print(f"    [dim]{change['kind']}:[/] {cause['event']} {literal(cause['ref'])} at "
                  "position "
                  f"{cause['position']:,}, recorded {_utc(cause['recorded_at'])}")
    _more(limit, len(data["changes"]))
    now = Table("model", "decision now", title="Now", title_justify="left")
    for decision in data["decisions"]:
        now.add_row(literal(decision["model"]), _effect(decision))
    out.print(now)


def _load_view(engine: Engine) -> Any:
    """A private index with reach (candidate subjects), replayed with a progress bar."""
    from projections.compliance import load_view

    with _progress("reading the store") as advance:
        return load_view(engine.app, progress=advance)


@contextmanager
def _progress(label: str) -> Iterator[Any]:
    """A rich progress bar on stderr for a catch-up; yields the `progress` callback."""
    import time

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    started = time.perf_counter()
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn())
    with Progress(*columns, console=Console(stderr=True), transient=True) as bar:
        task = bar.add_task(label, total=None, rate="")

        def advance(position: int, last: int) -> None:
            elapsed = time.perf_counter() - started
            rate = f"{position / elapsed:,.0f} events/s" if elapsed > 0 else ""
            bar.update(task, completed=position, total=last, rate=rate)

        yield advance


def _impact_table(data: dict[str, Any]) -> Table:
    models = data["compared"]["models"]
    table = Table("reason", *map(literal, models), "pairs", "subjects",
                  title="Changed decisions by reason",
                  title_justify="left")
    for group in data["groups"]:
        label = ("unknown " + ", ".join(group["unknown_attributes"])
                 if group["group"] == "unknown_attribute" else "meets the predicate")
        table.add_row(label, *(f"{group['by_model'].get(m, 0):,}" for m in models),
                      f"{group['pairs']:,}", f"{group['subjects']:,}")
    changed = data["changed"]
    table.add_row("[bold]total[/]", *(f"[bold]{changed['by_model'].get(m, 0):,}[/]"
                                      for m in models),
                  f"[bold]{changed['pairs']:,}[/]", f"[bold]{changed['subjects']:,}[/]")
    return table


@app.command()
def impact(
    ctx: typer.Context,
    directive: Annotated[str | None, typer.Argument(help="Directive id.")] = None,
    what_if: Annotated[
        str | None, typer.Option("--what-if", help="An issue_directive command (JSON file, or "
                                 "- for stdin) to evaluate on current facts without storing it.")
    ] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Every (subject, model) whose decision DIRECTIVE changed, grouped by reason.

    Decisions at its effective time, as known just before and just after its position."""
    from domain.commands import IssueDirective
    from projections import compliance

    if (directive is None) == (what_if is None):
        raise fail("impact needs DIRECTIVE, or --what-if FILE")
    with engine_for(ctx, store, catch_up=False) as engine:
        if what_if is not None:
            with open_input(what_if) as stream:
                data = stream.read(MAX_COMMAND_BYTES + 1)
            try:
                command = read_command(data if len(data) <= MAX_COMMAND_BYTES else None)
            except CommandError as error:
                raise fail(f"{what_if}: {error}") from None
            if not isinstance(command, IssueDirective):
                raise fail(f"{what_if}: --what-if takes an issue_directive command")
            try:
                with _progress("reading the store") as advance:
                    result = compliance.what_if(engine.app, command, progress=advance)
            except CommandError as error:
                raise fail(f"{what_if}: {error}") from None
        else:
            view = _load_view(engine)
            if directive not in view.facts.directives:
                raise fail(f"unknown directive {directive!r}", 1)
            result = compliance.impact(view.facts, directive, view.reach)
    data = result.to_json()
    if as_json:
        emit(data)
        return
    hypothetical = " [yellow](what-if: not issued)[/]" if data["what_if"] else ""
    out.print(f"[bold]{literal(data['directive'])}[/]{hypothetical} — "
              f"{literal(data['authority'])} {literal(data['reference'])}")
    out.print(f"received {_utc(data['received_at'])}, effective {_utc(data['effective_at'])}, "
              f"recorded {_utc(data['recorded_at'])} at position {data['position']:,}")
    compared = data["compared"]
    out.print(f"compared at {_utc(compared['at'])} as known at positions {compared['before']:,} "
              f"and {compared['after']:,}: {compared['subjects']:,} candidate subjects of "
              f"{compared['of_subjects']:,}")
    out.print(_impact_table(data))
    rows = Table("subject", "model", "why", "before", "after", title="Changes",
                 title_justify="left")
    for row in data["changes"][:limit]:
        why = ("unknown " + ", ".join(row["unknown_attributes"])
               if row["group"] == "unknown_attribute" else "meets the predicate")
        rows.add_row(literal(row["subject"]), literal(row["model"]), why, _effect(row["before"]),
                     _effect(row["after"]))
    out.print(rows)
    _more(limit, len(data["changes"]))


@app.command()
def diff(
    ctx: typer.Context,
    from_: Annotated[str, typer.Option("--from", help="The earlier valid time.")],
    to: Annotated[str, typer.Option(help="The later valid time.")],
    model: Annotated[
        str | None, typer.Option(help="A model id, family:NAME or * (default: all).")
    ] = None,
    as_of: Annotated[
        int | None, typer.Option(help="As known at this position (default: now).")
    ] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Who gained and who lost access between two valid times, and why."""
    from projections import compliance

    start, end = timestamp_option(from_, "--from"), timestamp_option(to, "--to")
    assert start is not None and end is not None
    with engine_for(ctx, store, catch_up=False) as engine:
        view = _load_view(engine)
        if model is not None and not compliance.models_matching(view.facts, model):
            raise fail(f"--model: no registered model matches {model!r}", 1)
        result = compliance.diff(view.facts, start, end, model, as_of, view.reach)
    data = result.to_json()
    if as_json:
        emit(data)
        return
    out.print(f"from {_utc(data['from'])} to {_utc(data['to'])}, as known at position "
              f"{data['as_of']:,} ({data['compared']['subjects']:,} of "
              f"{data['compared']['of_subjects']:,} subjects could change)")
    counts = Table("model", "lost", "gained", title="Access changes", title_justify="left")
    for name in data["models"]:
        counts.add_row(literal(name), f"{data['counts']['lost'].get(name, 0):,}",
                       f"{data['counts']['gained'].get(name, 0):,}")
    out.print(counts)
    for label in ("lost", "gained"):
        rows = Table("subject", "model", f"at {_utc(data['from'])}", f"at {_utc(data['to'])}",
                     title=label.capitalize(), title_justify="left")
        for row in data[label][:limit]:
            rows.add_row(literal(row["subject"]), literal(row["model"]), _effect(row["before"]),
                         _effect(row["after"]))
        out.print(rows)
        _more(limit, len(data[label]))


def _truth(value: bool | None) -> str:
    return {True: "[green]true[/]", False: "[red]false[/]", None: "[yellow]unknown[/]"}[value]


def _predicate_tree(node: dict[str, Any], tree: Any) -> None:
    kind = node["node"]
    if kind in ("any_of", "none_of"):
        actual = ("unknown" if node["actual"] is None else
                  ", ".join(map(literal, node["actual"])) or "none")
        label = (f"{node['attribute']} {kind} \\[{', '.join(map(literal, node['values']))}] "
                 f"(is: {actual})")
    elif kind == "us_person":
        label = f"us_person is {str(node['expected']).lower()}"
    else:
        label = kind
    branch = tree.add(f"{_truth(node['truth'])}  {label}")
    for part in node.get("parts", ()):
        _predicate_tree(part, branch)


@app.command()
def explain(
    ctx: typer.Context,
    subject: Annotated[str, typer.Argument(help="Subject id.")],
    model: Annotated[str, typer.Argument(help="Model version id.")],
    at: Annotated[str | None, typer.Option(help="Valid time (default now).")] = None,
    as_of: Annotated[int | None, typer.Option(help="Use only facts up to this position.")] = None,
    known_at: Annotated[
        str | None, typer.Option(help="Use only facts recorded by this time.")
    ] = None,
    location: Annotated[str | None, typer.Option(help="Request location (country).")] = None,
    purpose: Annotated[str | None, typer.Option(help="Request purpose.")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """The decision and the facts it used, each predicate evaluated node by node."""
    from datetime import UTC

    from rich.tree import Tree

    from projections import compliance

    request = request_of(subject, model, at, as_of, known_at, location, purpose)
    with engine_for(ctx, store) as engine, engine.index.lock:
        data = compliance.explain(engine.index.facts, request.subject, request.model,
                                  request.at or datetime.now(UTC), request.as_of,
                                  request.known_at, request.context)
    if as_json:
        emit(data)
        return
    decision = data["decision"]
    out.print(f"{_effect(decision)}  [bold]{literal(subject)}[/] → [bold]{literal(model)}[/] at "
              f"{_utc(data['at'])}, as known at position {data['as_of']:,} (times in UTC)")
    out.print("[bold]Attributes[/]")
    for name, entry in data["subject"]["attributes"].items():
        value = "[yellow]unknown[/]" if entry["values"] is None else ", ".join(
            map(literal, entry["values"])) or "none"
        a = entry.get("attestation")
        if a is not None:
            source = literal(a["source"]) + (
                f", evidence {literal(a['evidence'])}" if a["evidence"] else "")
            why = (f"attestation at position {a['position']:,} ({source}), valid "
                   f"{_utc(a['valid_from'])} to {_utc(a['valid_until'])}, recorded "
                   f"{_utc(a['recorded_at'])}")
        else:
            why = literal(entry.get("why_unknown") or entry["from"] or "")
        out.print(f"  {name}: {value}" + (f" [dim]— {why}[/]" if why else ""))
    for step in data["models"]:
        out.print(f"\n[bold]{literal(step['model'])}[/]: " + (
            "not registered" if not step["registered"] else
            f"family {literal(step['family'])}, registered at position {step['position']:,}"
            + (", [red]withdrawn[/]" if step["withdrawn"] else "")))
        out.print("[bold]Entitlements considered[/]" if step["entitlements"] else
                  "no entitlement considered")
        for e in step["entitlements"]:
            out.print(f"  {literal(e['entitlement'])} (via {literal(e['via'])}, "
                      f"{', '.join(map(literal, e['models']))}, "
                      f"position {e['position']:,}, valid {_utc(e['valid_from'])} to "
                      f"{_utc(e['valid_until'])}): active {_truth(e['active'])}, covers "
                      f"{_truth(e['covers'])}, matched {_truth(e['matched'])}")
        for d in step["directives"]:
            head = (f"[bold]{literal(d['directive'])}[/] {d['effect']} on "
                    f"{', '.join(map(literal, d['models']))} "
                    f"(position {d['position']:,}, effective {_utc(d['effective_at'])})")
            if not d["in_force"]:
                out.print(f"{head}: not in force — {literal(d['why'])}")
                continue
            verdict = "[red]applies[/]" if d["applies"] else "[green]does not apply[/]"
            notes = [] if d["covers"] else ["does not cover this model"]
            if d["exempt"]:
                notes.append("exempts this subject")
            tree = Tree(f"{head}: {verdict}" + (f" ({'; '.join(notes)})" if notes else "")
                        + f"; on unknown: {d['on_unknown']}")
            _predicate_tree(d["predicate"], tree)
            out.print(tree)
        if "route" in step:
            out.print(f"routed by {literal(step['route']['directive'])} to "
                      f"[bold]{literal(step['route']['to'])}[/]")


@app.command()
def replay(
    ctx: typer.Context,
    until: Annotated[
        str | None, typer.Option(help="Replay the events recorded by this time.")
    ] = None,
    as_of: Annotated[int | None, typer.Option(help="Replay up to this position.")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Rebuild the access index from the store and report events per second."""
    from projections import audit

    if until is not None and as_of is not None:
        raise fail("give --until or --as-of, not both")
    moment = timestamp_option(until, "--until")
    with engine_for(ctx, store, catch_up=False) as engine:
        position = as_of if moment is None else audit.position_recorded_by(engine.app, moment)
        with _progress("replaying") as advance:
            result = audit.replay(engine.app, position, progress=advance)
        facts = result.index.facts
        data = {
            "position": result.position, "events": result.events,
            "seconds": round(result.seconds, 3),
            "events_per_second": round(result.events_per_second),
            "subjects": len(facts.subjects), "models": len(facts.models),
            "directives": len(facts.directives),
            "digest": audit.state_digest(facts).digest,
        }
    if as_json:
        emit(data)
        return
    out.print(f"replayed {data['events']:,} events up to position {data['position']:,} in "
              f"{data['seconds']:.2f} s: [bold]{data['events_per_second']:,} events/s[/]")
    out.print(f"index: {data['subjects']:,} subjects, {data['models']} models, "
              f"{data['directives']} directives; state digest {data['digest']}")


@app.command()
def verify(
    ctx: typer.Context,
    expect_head: Annotated[
        str | None, typer.Option(help="P:LINK, a head kept from an earlier `verify --json` "
                                 "(chain.head.position:chain.head.link): the log must still "
                                 "hold LINK at position P. A bare LINK is compared with the "
                                 "current head.")
    ] = None,
    checkpoints: Annotated[
        Path | None, typer.Option(help="A checkpoints file (`interlock checkpoint`): every "
                                  "checkpoint in it must be signed by --server-key and still "
                                  "hold.")
    ] = None,
    server_key: Annotated[
        str | None, typer.Option(help="The server's public key (base64 or PEM file) that "
                                 "signed --checkpoints.")
    ] = None,
    at: Annotated[
        str | None, typer.Option(help="Valid time of the decisions compared (default now).")
    ] = None,
    decisions: Annotated[
        bool, typer.Option(help="Also compare every (subject, model) decision.")
    ] = True,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Check the store's hash chain and rebuild the index to compare it with the live one.

    Exits 0 when both hold (and every expected head and checkpoint), 1 naming the first
    altered, removed or reordered position or the first difference."""
    from datetime import UTC

    from projections import audit

    moment = timestamp_option(at, "--at") or datetime.now(UTC)
    expected = _expected_head(expect_head)
    anchors = _anchors(checkpoints, server_key)
    url = store or ctx.obj
    with audit.bulk_load():
        _verify(url, moment, expect_head, expected, anchors, decisions, as_json)


def _expected_head(given: str | None) -> tuple[int | None, str] | None:
    """(position, link) of --expect-head; position None for a bare link (the current head)."""
    if given is None:
        return None
    import re

    found = re.fullmatch(r"(?:(\d{1,19}):)?([0-9a-fA-F]{64})", given.strip())
    if found is None:
        raise fail("--expect-head: expected P:LINK (a position and a 64-hex-digit link, as "
                   "`verify --json` prints chain.head), or a bare LINK")
    return (None if found[1] is None else int(found[1])), found[2].lower()


def _anchors(path: Path | None, server_key: str | None) -> tuple[Any, list[Any], list[Any]] | None:
    """(public key, checkpoints, malformed lines) of --checkpoints and --server-key."""
    if path is None and server_key is None:
        return None
    if path is None or server_key is None:
        raise fail("--checkpoints and --server-key go together")
    from interlock.auth import ConfigError
    from interlock.checkpoints import load_public_key
    from projections.checkpoints import read_checkpoints

    try:
        key = load_public_key(server_key)
    except ConfigError as error:
        raise fail(f"--server-key: {error}") from None
    try:
        with path.open(encoding="utf-8") as lines:
            found, malformed = read_checkpoints(lines)
    except (OSError, UnicodeDecodeError) as error:
        raise fail(f"--checkpoints: {path}: {getattr(error, 'strerror', None) or error}") \
            from None
    return key, found, malformed


def _verify(url: str | None, moment: datetime, expect_head: str | None,
            expected: tuple[int | None, str] | None,
            anchors: tuple[Any, list[Any], list[Any]] | None, decisions: bool,
            as_json: bool) -> None:
    from projections import audit
    from projections.checkpoints import check_checkpoints

    keep = {c.position for _, c in anchors[1]} if anchors else set()
    if expected is not None and expected[0] is not None:
        keep.add(expected[0])
    live_error = None
    try:
        try:
            engine = open_engine(url, create=False)
        except StoreURLError:
            raise
        except Exception as error:  # a tampered event can fail the live catch-up anywhere
            live_error = f"{type(error).__name__}: {error}"
            engine = open_engine(url, catch_up=False, create=False)
    except StoreMissing as error:
        raise fail(str(error)) from None
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None
    try:
        live = None if live_error is not None else engine.index
        reached = engine.index.position
        rebuilt = audit.Rebuilt(to_event=engine.app.mapper.to_domain_event)

        with _progress("verifying") as advance:
            last = engine.app.position

            def seen(notification: Any) -> None:
                if live is None or notification.id <= reached:
                    rebuilt.feed(notification)
                if notification.id % 5000 == 0:
                    advance(notification.id, last)

            chain = audit.verify_chain(engine.app, on_event=seen, keep=keep)
        index = audit.compare_indexes(live, live_error, rebuilt, moment, decisions)
    finally:
        engine.close()
    head_problem = _head_problem(expected, chain)
    anchored = None
    if anchors is not None:
        anchored = check_checkpoints(anchors[1], anchors[0], chain.links)
        anchored.problems[:0] = anchors[2]
    ok = chain.ok and index.ok and head_problem is None and (anchored is None or anchored.ok)
    data = {"ok": ok, "chain": chain.to_json(), "index": index.to_json(),
            "expected_head": expect_head,
            "head_matches": None if expected is None else head_problem is None,
            "head_problem": head_problem,
            "checkpoints": None if anchored is None else anchored.to_json()}
    if as_json:
        emit(data)
    else:
        _show_verify(chain, index, expect_head, head_problem, anchored)
    if not ok:
        first = chain.first
        sys.stderr.write("verify: FAILED: " + (
            f"position {first.position}: {first.problem}: {first.detail}" if first is not None
            else index.difference if not index.ok
            else f"--expect-head: {head_problem}" if head_problem is not None
            else f"--checkpoints: {anchored.problems[0]}" if anchored is not None
            else "") + "\n")
        raise typer.Exit(1)


def _head_problem(expected: tuple[int | None, str] | None, chain: Any) -> str | None:
    """Why the log no longer holds the expected head (None: it does)."""
    if expected is None:
        return None
    position, link = expected
    if position is None:
        found = chain.head_link
        return None if found == link else f"expected {link}, found {found}"
    found = chain.links.get(position)
    if found is None:
        return (f"the store holds no event at position {position} (its last is "
                f"{chain.last_position}): events were removed")
    if found != link:
        return (f"position {position} now has link {found}, not {link}: the log up to it was "
                "rewritten")
    return None


def _show_verify(chain: Any, index: Any, expect_head: str | None, head_problem: str | None,
                 anchored: Any) -> None:
    if not chain.kept:
        out.print("[yellow]chain[/]: not kept for this store (memory:)" if chain.ok else
                  f"[red]chain: FAILED[/] — {chain.first.detail}")
    elif chain.ok:
        out.print(f"[green]chain: ok[/] — {chain.chained:,} events sealed; head at position "
                  f"{chain.head_position:,}: {chain.head_link}")
    else:
        first = chain.first
        out.print(f"[red]chain: FAILED[/] — first problem at position [bold]{first.position:,}"
                  f"[/]: {first.problem}: {first.detail}")
        for problem in sorted(chain.problems, key=lambda p: p.position)[1:10]:
            out.print(f"  also position {problem.position:,}: {problem.problem}: "
                      f"{problem.detail}")
    if expect_head is not None:
        out.print("[green]head: as expected[/]" if head_problem is None else
                  f"[red]head: FAILED[/] — {head_problem}")
    if anchored is not None:
        if anchored.ok:
            latest = anchored.latest
            out.print(f"[green]checkpoints: ok[/] — {anchored.checked:,} hold" + (
                f"; latest at position {latest.position:,}, signed {latest.time.isoformat()}"
                if latest is not None else ""))
        else:
            out.print(f"[red]checkpoints: FAILED[/] — {anchored.problems[0]}")
            for problem in anchored.problems[1:10]:
                out.print(f"  also {problem}")
    if index.ok:
        out.print(f"[green]index: ok[/] — rebuilt from scratch to position {index.position:,}; "
                  f"state digest {index.live_digest}; {index.decisions:,} decisions agree")
    else:
        out.print(f"[red]index: FAILED[/] — {index.difference}")


@app.command()
def checkpoint(
    ctx: typer.Context,
    key: Annotated[str, typer.Option(help="The server's Ed25519 private key (PEM).")],
    out_file: Annotated[
        Path | None, typer.Option("--out", help="The append-only JSON-lines file the "
                                  "checkpoint is added to; the last one there is the one the "
                                  "chain is verified from.")
    ] = None,
    kafka: Annotated[
        str | None, typer.Option(help="Also publish to <prefix>interlock.checkpoints on these "
                                 "Kafka bootstrap servers.")
    ] = None,
    topic_prefix: PrefixOption = "",
    generate_key: Annotated[
        bool, typer.Option(help="Write a new server key to --key and print its public key.")
    ] = False,
    store: StoreOption = None,
) -> None:
    """Sign the chain's head with the server key and publish it outside the database.

    The chain is verified first (from the last checkpoint in --out, or from the start): a
    checkpoint never vouches for a chain that does not hold. Exit 1, nothing signed, when it
    does not."""
    from interlock.auth import ConfigError
    from interlock.checkpoints import (
        append_checkpoint,
        last_checkpoint,
        public_key_b64,
        publish_checkpoint,
        sign_head,
    )
    from interlock.signing import generate_key as new_key
    from interlock.signing import load_private_key, private_key_pem
    from projections import audit
    from projections.checkpoints import key_id

    if generate_key:
        private = new_key()
        try:
            with Path(key).open("xb") as stream:
                Path(key).chmod(0o600)
                stream.write(private_key_pem(private))
        except OSError as error:
            raise fail(f"{key}: {error.strerror}") from None
        emit({"public_key": public_key_b64(private), "key_id": key_id(private.public_key())})
        return
    try:
        private = load_private_key(key)
        previous = None if out_file is None else last_checkpoint(out_file, private.public_key())
    except ConfigError as error:
        raise fail(str(error)) from None
    since = None if previous is None else (previous.position, bytes.fromhex(previous.link))
    with engine_for(ctx, store, catch_up=False) as engine:
        chain = audit.verify_chain(engine.app, since=since)
    if not chain.ok:
        first = chain.first
        raise fail(f"checkpoint: refused, nothing signed: position {first.position}: "
                   f"{first.problem}: {first.detail}", 1)
    signed = sign_head(chain.last_position, chain.last_link, private)
    if out_file is not None:
        append_checkpoint(out_file, signed)
    if kafka is not None:
        try:
            publish_checkpoint(kafka, topic_prefix, signed)
        except Exception as error:  # the broker's many failures end the same way
            raise fail(f"--kafka: checkpoint not published ({type(error).__name__}: {error})"
                       + (f"; it is in {out_file}" if out_file is not None else ""), 1) \
                from None
    sys.stdout.write(signed.line() + "\n")


@app.command()
def seal(ctx: typer.Context, as_json: JsonOption = False, store: StoreOption = None) -> None:
    """Seal the events stored after the chain's head (or in a store that never kept a chain).

    Writers refuse to seal such events; this is the operator vouching for them, after checking
    them (`interlock verify`, and `--checkpoints` for what was anchored before)."""
    from interlock.persistence import ChainedPostgresProcessRecorder, ChainedSQLiteProcessRecorder

    with engine_for(ctx, store, catch_up=False) as engine:
        recorder = engine.app.recorder
        if not isinstance(recorder, ChainedSQLiteProcessRecorder
                          | ChainedPostgresProcessRecorder):
            raise fail("seal: this store keeps no hash chain (memory:)")
        first, last, count = recorder.seal_unsealed()
    data = {"sealed": count, "from": first or None, "to": last}
    if as_json:
        emit(data)
    elif count:
        out.print(f"sealed {count:,} events, positions {first:,} to {last:,}: the chain now "
                  "vouches for them")
    else:
        out.print("nothing to seal: every event is chained")


@app.command()
def report(
    ctx: typer.Context,
    html: Annotated[Path, typer.Option("--html", help="Where to write the HTML page.")],
    directive: Annotated[
        str | None, typer.Option(help="The order (default: the latest issued directive).")
    ] = None,
    tz: Annotated[
        str, typer.Option("--tz", help="Display offset, e.g. -05:00 (default UTC).")
    ] = "UTC",
    before: Annotated[int, typer.Option(help="Minutes charted before the order.")] = 30,
    after: Annotated[int, typer.Option(help="Minutes charted after the order.")] = 60,
    revocations: Annotated[
        Path | None, typer.Option(help="The embedded enforcer's JSON-lines log, for the "
                                  "'enforced' time.")
    ] = None,
    rows: Annotated[int, typer.Option(help="Changed decisions and unknowns listed.")] = 100,
    now: Annotated[
        str | None, typer.Option(help="The valid time of the figures 'now' (default: the "
                                 "moment the report is made).")
    ] = None,
    decision_log: Annotated[
        str | None, typer.Option(help="The served-decision log (see `decisions query --log`): "
                                 "allows served to the order's subjects before enforcement "
                                 "reached them.")
    ] = None,
    kafka: KafkaOption = None,
    topic_prefix: PrefixOption = "",
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """A self-contained HTML report on an order: timeline, access over time, impact, unknowns."""
    from datetime import timedelta

    from interlock.report import parse_offset, render
    from projections import audit, compliance

    try:
        zone = parse_offset(tz)
    except ValueError:
        raise fail(f"--tz: expected UTC or an offset like -05:00, not {tz!r}") from None
    moment = timestamp_option(now, "--now")
    log = None
    if revocations is not None:
        try:
            log = compliance.load_enforcement_log(revocations.read_text().splitlines())
        except (OSError, ValueError) as error:
            raise fail(f"--revocations: {error}") from None
    with engine_for(ctx, store, catch_up=False) as engine:
        view = _load_view(engine)
        facts = view.facts
        if directive is None:
            if not facts.directives:
                raise fail("the store holds no directive to report on", 1)
            directive = max(facts.directives.values(), key=lambda d: d.position).directive
        if directive not in facts.directives:
            raise fail(f"unknown directive {directive!r}", 1)
        table = audit.ChainTable(engine.app.recorder)
        head = table.head() if table.kept else None
        data = compliance.order_report(
            view, directive, now=moment, before=timedelta(minutes=before),
            after=timedelta(minutes=after),
            enforcement=log, chain_head=None if head is None else (head[0], head[1].hex()),
        )
    served = None
    if decision_log is not None:
        from interlock.decisions_cli import opened_log
        from projections.decision_log import LogReadError, exposure

        order = data.impact.directive
        with opened_log(decision_log, kafka, topic_prefix) as decisions:
            try:
                served = exposure(decisions, {(r.subject, r.model) for r in data.impact.rows},
                                  order.effective_at, order.position)
            except LogReadError as error:
                raise fail(f"--decision-log: {error}", 1) from None
    page = render(data, zone, rows, served)
    html.parent.mkdir(parents=True, exist_ok=True)
    html.write_text(page, encoding="utf-8")
    summary = {"html": str(html), "bytes": len(page.encode()), "directive": directive,
               "changed": len(data.impact.rows), "unknowns": len(data.unknowns),
               **({} if served is None else {"served": served.to_json()})}
    if as_json:
        emit(summary)
    else:
        out.print(f"wrote {html} ({summary['bytes']:,} bytes): order {directive}, "
                  f"{summary['changed']:,} changed decisions, {summary['unknowns']:,} unknowns "
                  "still open")

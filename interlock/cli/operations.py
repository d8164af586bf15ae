"""Running Interlock: `serve`, `intake`, `relay`, `enforce`, `snapshot`, `demo`, `docs`, `token`."""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any

import typer

from interlock.cli.shell import (
    KafkaOption,
    PrefixOption,
    SnapshotOption,
    StoreOption,
    app,
    emit,
    engine_for,
    fail,
    out,
)
from interlock.config import (
    DEMO_STORE,
    StoreMissing,
    StoreURLError,
    kept_snapshot,
    snapshot_path,
    store_url,
)


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
        str | None, typer.Argument(help="Where to write it; default INTERLOCK_SNAPSHOT, else "
                                   "beside an SQLite store (PATH.snapshot).")
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

    from interlock.engine import open_engine
    from projections.snapshot import write_snapshot

    path = kept_snapshot(store_url(store or ctx.obj), file)
    if path is None:
        raise fail("snapshot needs FILE (or INTERLOCK_SNAPSHOT; by default only an SQLite "
                   "store has one beside it)")
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
    app.index_built = True
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
def enforce(
    ctx: typer.Context,
    kafka: KafkaOption = None, topic_prefix: PrefixOption = "",
    shard: Annotated[str, typer.Option(help="k/N: run as shard k of N, owning the partitions "
                                       "p of interlock.enforcement with p % N == k.")] = "0/1",
    from_beginning: Annotated[bool, typer.Option(
        "--from-beginning", help="A new enforcer (no committed offset) enforces the whole "
        "history of interlock.events; without it, history is replayed silently.")] = False,
    snapshot: SnapshotOption = None,
    store: StoreOption = None,
) -> None:
    """Follow interlock.events and publish packed access_revoked / access_restored records,
    then an enforcement_completed record per partition for each cause.

    With --snapshot (an index snapshot of --store, see `interlock snapshot`) a fresh shard
    starts from the snapshot and reads the topic from the first event after it, instead of
    replaying the whole topic; a snapshot that does not fit the store, or that holds events
    this shard has not enforced yet, is ignored (logged) and the topic is replayed."""
    from consumers.enforcer import EnforcerProcess, Shard

    try:
        owned = Shard.parse(shard)
    except ValueError as error:
        raise fail(f"--shard: {error}") from None
    path = snapshot_path(snapshot)
    with kafka_process("enforce"):
        bootstrap, topics = kafka_for(kafka, topic_prefix)
        engine = None if path is None else _snapshot_store(store or ctx.obj)
        try:
            process = EnforcerProcess(bootstrap, topics, shard=owned,
                                      from_beginning=from_beginning, snapshot=path,
                                      store=None if engine is None else engine.app)
        finally:
            if engine is not None:
                engine.close()
        started = "" if process.snapshot is None else (
            f", started from the snapshot at position {process.snapshot.position}")
        run_until_signalled("enforce", process, lambda: (
            f"position {process.position}, {process.published} records published{started}"
        ))


def _snapshot_store(store: str | None) -> Any:
    """The store a snapshot is checked against and its events read back from, read only."""
    from interlock.engine import open_engine

    try:
        return open_engine(store, catch_up=False, create=False)
    except StoreMissing as error:
        raise fail(f"--snapshot: {error}; name the store it was taken of (--store)") from None
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None


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
    from pydantic import ValidationError

    from domain.commands import command_error_from
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

"""The `interlock` command line."""

from __future__ import annotations

import json
import os
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
from interlock.decisions_cli import decisions_app
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


def fail(message: str, code: int = 2) -> typer.Exit:
    sys.stderr.write(message + "\n")
    return typer.Exit(code)


@contextmanager
def engine_for(ctx: typer.Context, store: str | None, catch_up: bool = True) -> Iterator[Engine]:
    from interlock.auth import ConfigError

    try:
        engine = open_engine(store or ctx.obj, catch_up=catch_up)
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None
    except ConfigError as error:
        raise fail(str(error)) from None
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
) -> None:
    """The 5:21 p.m. order on a synthetic population, told as a timeline."""
    from interlock.demo import run_demo

    run_demo(out, store or "sqlite:///.interlock/demo.db", subjects=subjects, fresh=fresh)


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
        engine = open_engine(store or ctx.obj, snapshot=path)
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


def kafka_for(kafka: str | None, prefix: str) -> tuple[str, Any]:
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
    """Apply commands from interlock.commands exactly once; rejects go to the DLQ."""
    from consumers.intake import Intake

    bootstrap, topics = kafka_for(kafka, topic_prefix)
    with engine_for(ctx, store, catch_up=False) as engine:
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
# history, impact, diff, explain, replay, verify, report: DESIGN.md's questions of an officer,
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
    return ", ".join(f"{r['code']}={r['ref']}" if r["ref"] else r["code"]
                     for r in verdict["reasons"])


def _effect(verdict: dict[str, Any]) -> str:
    colour = {"allow": "green", "deny": "red", "route": "yellow"}[verdict["effect"]]
    routed = f" → {verdict['route_to']}" if verdict.get("route_to") else ""
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
    out.print(f"[bold]{subject}[/] as known at position {data['as_of']:,} (times in UTC)")
    facts_table = Table("kind", "values", "valid from", "valid until", "recorded", "position",
                        "source", "evidence", title="Attestations", title_justify="left")
    for a in data["attestations"]:
        values = "; ".join(f"{k}: {', '.join(v) or '—'}" for k, v in a["values"].items())
        facts_table.add_row(a["kind"], values, _utc(a["valid_from"]), _utc(a["valid_until"]),
                            _utc(a["recorded_at"]), f"{a['position']:,}", a["source"],
                            a["evidence"] or "")
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
        grants.add_row(e["entitlement"], f"{kind} {grantee}", ", ".join(e["models"]),
                       _utc(e["valid_from"]), _utc(e["valid_until"]), _utc(e["recorded_at"]),
                       f"{e['position']:,}", revoked)
    out.print(grants)
    out.print("\n[bold]Decision changes, as decided at each moment[/]")
    for change in data["changes"][:limit]:
        cause = change["cause"]
        mark = {"lost": "[red]▼ lost[/]", "gained": "[green]▲ gained[/]"}.get(
            change["access"] or "", "· changed")
        out.print(f"{_utc(change['at'])}  [bold]{change['model']}[/]  {mark}  "
                  f"{_effect(change['before'])} → {_effect(change['after'])}")
        out.print(f"    [dim]{change['kind']}:[/] {cause['event']} {cause['ref']} at position "
                  f"{cause['position']:,}, recorded {_utc(cause['recorded_at'])}")
    _more(limit, len(data["changes"]))
    now = Table("model", "decision now", title="Now", title_justify="left")
    for decision in data["decisions"]:
        now.add_row(decision["model"], _effect(decision))
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
    table = Table("reason", *models, "pairs", "subjects", title="Changed decisions by reason",
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
    from domain.commands import IssueDirective, parse_command
    from projections import compliance

    if (directive is None) == (what_if is None):
        raise fail("impact needs DIRECTIVE, or --what-if FILE")
    with engine_for(ctx, store, catch_up=False) as engine:
        if what_if is not None:
            with open_input(what_if) as stream:
                text = stream.read()
            try:
                command = parse_command(json.loads(text))
            except json.JSONDecodeError as error:
                raise fail(f"{what_if}: not valid JSON: {error.msg}") from None
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
    out.print(f"[bold]{data['directive']}[/]{hypothetical} — {data['authority']} "
              f"{data['reference']}")
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
        rows.add_row(row["subject"], row["model"], why, _effect(row["before"]),
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
        counts.add_row(name, f"{data['counts']['lost'].get(name, 0):,}",
                       f"{data['counts']['gained'].get(name, 0):,}")
    out.print(counts)
    for label in ("lost", "gained"):
        rows = Table("subject", "model", f"at {_utc(data['from'])}", f"at {_utc(data['to'])}",
                     title=label.capitalize(), title_justify="left")
        for row in data[label][:limit]:
            rows.add_row(row["subject"], row["model"], _effect(row["before"]),
                         _effect(row["after"]))
        out.print(rows)
        _more(limit, len(data[label]))


def _truth(value: bool | None) -> str:
    return {True: "[green]true[/]", False: "[red]false[/]", None: "[yellow]unknown[/]"}[value]


def _predicate_tree(node: dict[str, Any], tree: Any) -> None:
    kind = node["node"]
    if kind in ("any_of", "none_of"):
        actual = "unknown" if node["actual"] is None else ", ".join(node["actual"]) or "none"
        label = f"{node['attribute']} {kind} [{', '.join(node['values'])}] (is: {actual})"
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

    from domain.decision import Context
    from projections import compliance

    moment = timestamp_option(at, "--at") or datetime.now(UTC)
    known = timestamp_option(known_at, "--known-at")
    context = Context(location.upper() if location else None, purpose)
    with engine_for(ctx, store) as engine, engine.index.lock:
        data = compliance.explain(engine.index.facts, subject, model, moment, as_of, known,
                                  context)
    if as_json:
        emit(data)
        return
    decision = data["decision"]
    out.print(f"{_effect(decision)}  [bold]{subject}[/] → [bold]{model}[/] at "
              f"{_utc(data['at'])}, as known at position {data['as_of']:,} (times in UTC)")
    out.print("[bold]Attributes[/]")
    for name, entry in data["subject"]["attributes"].items():
        value = "[yellow]unknown[/]" if entry["values"] is None else ", ".join(
            entry["values"]) or "none"
        a = entry.get("attestation")
        if a is not None:
            source = a["source"] + (f", evidence {a['evidence']}" if a["evidence"] else "")
            why = (f"attestation at position {a['position']:,} ({source}), valid "
                   f"{_utc(a['valid_from'])} to {_utc(a['valid_until'])}, recorded "
                   f"{_utc(a['recorded_at'])}")
        else:
            why = entry.get("why_unknown") or entry["from"] or ""
        out.print(f"  {name}: {value}" + (f" [dim]— {why}[/]" if why else ""))
    for step in data["models"]:
        out.print(f"\n[bold]{step['model']}[/]: " + (
            "not registered" if not step["registered"] else
            f"family {step['family']}, registered at position {step['position']:,}"
            + (", [red]withdrawn[/]" if step["withdrawn"] else "")))
        out.print("[bold]Entitlements considered[/]" if step["entitlements"] else
                  "no entitlement considered")
        for e in step["entitlements"]:
            out.print(f"  {e['entitlement']} (via {e['via']}, {', '.join(e['models'])}, "
                      f"position {e['position']:,}, valid {_utc(e['valid_from'])} to "
                      f"{_utc(e['valid_until'])}): active {_truth(e['active'])}, covers "
                      f"{_truth(e['covers'])}, matched {_truth(e['matched'])}")
        for d in step["directives"]:
            head = (f"[bold]{d['directive']}[/] {d['effect']} on {', '.join(d['models'])} "
                    f"(position {d['position']:,}, effective {_utc(d['effective_at'])})")
            if not d["in_force"]:
                out.print(f"{head}: not in force — {d['why']}")
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
            out.print(f"routed by {step['route']['directive']} to [bold]{step['route']['to']}[/]")


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
        str | None, typer.Option(help="The chain head (hex) kept from an earlier verify.")
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

    Exits 0 when both hold, 1 naming the first altered, removed or reordered position or the
    first difference."""
    from datetime import UTC

    from projections import audit

    moment = timestamp_option(at, "--at") or datetime.now(UTC)
    url = store or ctx.obj
    with audit.bulk_load():
        _verify(url, moment, expect_head, decisions, as_json)


def _verify(url: str | None, moment: datetime, expect_head: str | None, decisions: bool,
            as_json: bool) -> None:
    from projections import audit

    live_error = None
    try:
        try:
            engine = open_engine(url)
        except StoreURLError:
            raise
        except Exception as error:  # a tampered event can fail the live catch-up anywhere
            live_error = f"{type(error).__name__}: {error}"
            engine = open_engine(url, catch_up=False)
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

            chain = audit.verify_chain(engine.app, on_event=seen)
        index = audit.compare_indexes(live, live_error, rebuilt, moment, decisions)
    finally:
        engine.close()
    head_ok = expect_head is None or expect_head.lower() == chain.head_link
    ok = chain.ok and index.ok and head_ok
    data = {"ok": ok, "chain": chain.to_json(), "index": index.to_json(),
            "expected_head": expect_head, "head_matches": head_ok if expect_head else None}
    if as_json:
        emit(data)
    else:
        _show_verify(chain, index, expect_head, head_ok)
    if not ok:
        first = chain.first
        sys.stderr.write("verify: FAILED: " + (
            f"position {first.position}: {first.problem}: {first.detail}" if first is not None
            else index.difference or "the chain head differs from --expect-head") + "\n")
        raise typer.Exit(1)


def _show_verify(chain: Any, index: Any, expect_head: str | None, head_ok: bool) -> None:
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
        out.print("[green]head: as expected[/]" if head_ok else
                  f"[red]head: FAILED[/] — expected {expect_head}, found {chain.head_link}")
    if index.ok:
        out.print(f"[green]index: ok[/] — rebuilt from scratch to position {index.position:,}; "
                  f"state digest {index.live_digest}; {index.decisions:,} decisions agree")
    else:
        out.print(f"[red]index: FAILED[/] — {index.difference}")


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
            view, directive, before=timedelta(minutes=before), after=timedelta(minutes=after),
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

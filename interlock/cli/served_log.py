"""`interlock decisions query|audit|prune`: the served-decision log of `serve --decision-log`.

`interlock.cli` adds this sub-app to its own as `decisions`.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from interlock.cli.shell import emit, engine_for, fail, out

if TYPE_CHECKING:  # imported by the commands that use them: `interlock --help` stays quick
    from projections.decision_log import DecisionLog, LogAudit, LogQuery

decisions_app = typer.Typer(
    help="The served-decision log (serve --decision-log DEST): query it, re-prove every "
    "decision against the store, prune it.",
    no_args_is_help=True,
)

LogOption = Annotated[
    str | None,
    typer.Option("--log", envvar="INTERLOCK_DECISION_LOG",
                 help="sqlite:///PATH, postgresql://... or kafka (with --kafka)."),
]
KafkaOption = Annotated[
    str | None,
    typer.Option("--kafka", envvar="INTERLOCK_KAFKA", help="Kafka bootstrap servers."),
]
PrefixOption = Annotated[str, typer.Option("--topic-prefix", help="Prefix of the topic name.")]
FromOption = Annotated[
    str | None, typer.Option("--from", help="Served at or after (ISO-8601 with offset).")
]
ToOption = Annotated[str | None, typer.Option("--to", help="Served before (ISO-8601 with offset).")]
JsonOption = Annotated[bool, typer.Option("--json", help="Machine-readable JSON output.")]
OPTIONS = {"from": "--from", "to": "--to", "subject": "--subject", "model": "--model",
           "effect": "--effect", "limit": "--limit"}



@contextmanager
def opened_log(given: str | None, kafka: str | None, prefix: str,
               durable: bool = False) -> Iterator[DecisionLog]:
    """The decision log at `--log`, refusing what cannot be opened with a reason."""
    import sqlite3

    from kafka.errors import KafkaError

    from interlock.decision_log import DecisionLogError, destination, open_decision_log

    dest = destination(given)
    if dest is None:
        raise fail("--log: give the decision log: sqlite:///PATH, postgresql://... or kafka "
                    "(or set INTERLOCK_DECISION_LOG)")
    try:
        log = open_decision_log(dest, kafka, prefix, durable=durable)
    except (DecisionLogError, ValueError) as error:
        raise fail(f"--log: {error}") from None
    except KafkaError as error:
        raise fail(f"--kafka: {type(error).__name__}: {error}") from None
    except (OSError, sqlite3.Error) as error:
        raise fail(f"--log: cannot open {dest}: {error}") from None
    except Exception as error:  # psycopg's OperationalError and kin: no server, bad login
        if type(error).__module__.startswith("psycopg"):
            raise fail(f"--log: cannot open {dest}: {error}") from None
        raise
    try:
        yield log
    finally:
        log.close()


def log_query(**given: Any) -> LogQuery:
    """Filters validated as `GET /v1/decisions` validates them, each refusal naming its option."""
    from pydantic import ValidationError

    from domain.commands import command_error_from
    from projections.decision_log import LogQuery

    try:
        return LogQuery.model_validate({"from" if k == "from_" else k: v
                                        for k, v in given.items() if v is not None})
    except ValidationError as error:
        problem = command_error_from(error)
        option = OPTIONS.get(problem.field, problem.field)
        raise fail(f"{option}: {problem.message}") from None


def _utc(moment: datetime | None, digits: int = 3) -> str:
    """A time as tables show it: UTC, to the millisecond (or `digits` of a second)."""
    if moment is None:
        return "—"
    text = moment.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    return (text[:digits - 6] if digits else text[:-7]) + "Z"


def _answer(effect: str, reasons: Any) -> str:
    from rich.markup import escape

    colour = {"allow": "green", "deny": "red", "route": "yellow"}.get(effect, "white")
    why = ", ".join(f"{r.code}={r.ref}" if r.ref else r.code for r in reasons)
    return f"[{colour}]{escape(effect)}[/] [dim]{escape(why)}[/]"


@decisions_app.command("query")
def query_command(
    log: LogOption = None,
    subject: Annotated[str | None, typer.Option(help="Only this subject.")] = None,
    model: Annotated[
        str | None, typer.Option(help="A model id, family:NAME or * (default: all).")
    ] = None,
    effect: Annotated[str | None, typer.Option(help="allow, deny or route.")] = None,
    from_: FromOption = None,
    to: ToOption = None,
    limit: Annotated[int, typer.Option(help="Decisions listed at most (≤ 10,000).")] = 1000,
    as_json: JsonOption = False,
    kafka: KafkaOption = None,
    topic_prefix: PrefixOption = "",
) -> None:
    """Served decisions, by served time: JSON lines with --json, a table otherwise."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from projections.decision_log import LogReadError, query

    asked = log_query(subject=subject, model=model, effect=effect, from_=from_, to=to,
                      limit=limit)
    with opened_log(log, kafka, topic_prefix) as opened:
        try:
            entries, more = query(opened, asked)
        except LogReadError as error:
            raise fail(f"decisions query: {error}; `interlock decisions audit` checks the "
                        "log", 1) from None
    if as_json:
        for entry in entries:
            emit(entry.to_json())
    else:
        table = Table(box=box.SIMPLE_HEAD, title=f"{len(entries):,} served decision(s), times "
                      "in UTC", title_justify="left", pad_edge=False)
        table.add_column("decision id, served", no_wrap=True, min_width=36)
        table.add_column("request", no_wrap=True)
        table.add_column("answer", overflow="fold", min_width=14)
        for entry in entries:
            assert entry.served is not None
            d = entry.served.decision
            routed = f" → {escape(d.route_to)}" if d.route_to else ""
            table.add_row(f"{escape(entry.entry_id)}\n[dim]{_utc(entry.served_at, 0)}\n"
                          f"by {escape(entry.replica)}[/]",
                          f"{escape(d.subject)} → {escape(d.model)}\n[dim]at {_utc(d.at, 0)}"
                          f"\nas of position {d.as_of:,}[/]",
                          _answer(d.effect, d.reasons).replace("[/] ", f"{routed}[/]\n", 1))
        out.print(table)
    if more:
        import sys

        sys.stderr.write(f"decisions query: more than {asked.limit:,} decisions match; narrow "
                         "the filters or page with --from\n")


@decisions_app.command("audit")
def audit_command(
    ctx: typer.Context,
    log: LogOption = None,
    from_: FromOption = None,
    to: ToOption = None,
    as_json: JsonOption = False,
    kafka: KafkaOption = None,
    topic_prefix: PrefixOption = "",
    store: Annotated[
        str | None,
        typer.Option("--store", envvar="INTERLOCK_STORE",
                     help="The event store the decisions were made from."),
    ] = None,
) -> None:
    """Re-decide every logged decision and check the log's hash chains.

    Each decision is decided again from the store at its as_of, valid time and context. Exits
    1 naming each decision the rule does not give (decision id and both answers) and each
    entry edited or removed."""
    from projections.decision_log import LogReadError, audit

    window = log_query(from_=from_, to=to)
    with opened_log(log, kafka, topic_prefix) as opened, engine_for(ctx, store) as engine:
        try:
            with engine.index.reading():
                report = audit(opened, engine.index.facts, window.from_, window.to)
        except LogReadError as error:
            raise fail(f"decisions audit: FAILED: unreadable entry: {error}", 1) from None
    if as_json:
        emit(report.to_json())
    else:
        _show_audit(report)
    if not report.ok:
        raise typer.Exit(1)


def _show_audit(report: LogAudit) -> None:
    from rich.markup import escape

    verdict = "[green]ok[/]" if report.ok else "[red]FAILED[/]"
    out.print(f"audit {verdict}: {report.decisions:,} decisions re-decided from the store at "
              f"their as_of (store at position {report.position:,}): {report.agreed:,} agree, "
              f"{len(report.differences):,} differ, {report.failed_closed:,} failed closed "
              f"(stale_index); {len(report.heads):,} chain(s), {len(report.problems):,} "
              "problem(s)")
    for difference in report.differences:
        entry, rule = difference.entry, difference.rule
        assert entry.served is not None
        d = entry.served.decision
        out.print(f"[red]differs[/] decision [bold]{escape(entry.entry_id)}[/] served "
                  f"{_utc(entry.served_at)} by {escape(entry.replica)}: {escape(d.subject)} → "
                  f"{escape(d.model)} at {_utc(d.at)} as of position {d.as_of:,}")
        out.print(f"    served:   {_answer(d.effect, d.reasons)}")
        out.print("    the rule: " + ("—" if rule is None else _answer(rule.effect, rule.reasons)))
        out.print(f"    [dim]{escape(difference.detail)}[/]")
    for problem in report.problems:
        named = f" decision [bold]{escape(problem.entry_id)}[/]" if problem.entry_id else ""
        out.print(f"[red]{problem.problem}[/] chain {escape(problem.chain)} seq "
                  f"{problem.seq:,}{named}: {escape(problem.detail)}")
    for entry in report.prunes:
        if entry.pruned is not None:
            out.print(f"[dim]pruned at {_utc(entry.served_at)} by {escape(entry.replica)}: "
                      f"{entry.pruned.removed:,} entries served before "
                      f"{_utc(entry.pruned.cutoff)}[/]")


@decisions_app.command("prune")
def prune_command(
    older_than: Annotated[
        str, typer.Option("--older-than", help="Remove entries served longer ago than this: "
                          "30d, 12h, 5y (a year counts 366 days).")
    ],
    log: LogOption = None,
    as_json: JsonOption = False,
    kafka: KafkaOption = None,
    topic_prefix: PrefixOption = "",
) -> None:
    """Remove entries older than a duration; the prune is recorded in the log.

    Each chain stays verifiable from its first kept entry."""
    from rich.markup import escape

    from interlock.decision_log import replica_id
    from projections.decision_log import parse_duration

    try:
        cutoff = datetime.now(UTC) - parse_duration(older_than)
    except ValueError as error:
        raise fail(f"--older-than: {error}") from None
    with opened_log(log, kafka, topic_prefix, durable=True) as opened:
        result = opened.prune(cutoff, replica_id())
    if as_json:
        emit(result.to_json())
        return
    record = "" if result.record is None else f"; recorded as {escape(result.record.entry_id)}"
    out.print(f"pruned {result.removed:,} entries served before {_utc(cutoff)}{record}")
    for chain, why in sorted(result.skipped.items()):
        out.print(f"[yellow]chain {escape(chain)} kept whole[/]: {escape(why)}")


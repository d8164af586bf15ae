"""A compliance officer's questions: `history`, `impact`, `diff`, `explain`, answered from the
same store and index as `decide` (projections.compliance)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any

import typer

from domain.limits import MAX_COMMAND_BYTES
from interlock.cli.decisions import request_of
from interlock.cli.shell import (
    DEFAULT_LIMIT,
    AsOfOption,
    JsonOption,
    KnownAtOption,
    LimitOption,
    LocationOption,
    PurposeOption,
    StoreOption,
    app,
    emit,
    engine_for,
    fail,
    indexed_view,
    literal,
    open_input,
    out,
    progress_bar,
    read_command,
    table,
    timestamp_option,
)

if TYPE_CHECKING:  # rich is imported where a table is printed
    from rich.table import Column, Table


def _utc(value: str | None) -> str:
    """An ISO timestamp as shown in tables: UTC, to the millisecond."""
    if value is None:
        return "—"
    moment = datetime.fromisoformat(value)
    return moment.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3] + "Z"


def _reasons(verdict: dict[str, Any], between: str = ", ") -> str:
    return between.join(f"{r['code']}={literal(r['ref'])}" if r["ref"] else r["code"]
                     for r in verdict["reasons"])


def _effect(verdict: dict[str, Any], cell: bool = False) -> str:
    """A verdict and its reasons; in a table `cell`, each reason on a line of its own, so that
    a narrow column breaks between reasons rather than inside one."""
    colour = {"allow": "green", "deny": "red", "route": "yellow"}[verdict["effect"]]
    routed = f" → {literal(verdict['route_to'])}" if verdict.get("route_to") else ""
    reasons = _reasons(verdict, "\n" if cell else ", ")
    return f"[{colour}]{verdict['effect']}{routed}[/]{chr(10) if cell else ' '}[dim]{reasons}[/]"


def time_column(header: str) -> Column:
    """A column of times, wide enough for a time's date and clock each on one line."""
    from rich.table import Column

    return Column(header, min_width=len("00:00:00.000Z"), overflow="fold")


def _valid(start: str | None, end: str | None) -> str:
    return f"{_utc(start)} → {_utc(end)}"


def _recorded(fact: dict[str, Any]) -> str:
    return f"{_utc(fact['recorded_at'])}\nposition {fact['position']:,}"


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
    limit: LimitOption = DEFAULT_LIMIT,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """SUBJECT's facts and every change of its decisions, as they were made.

    A change is listed where the decision at moment τ, with the facts known at τ, differs from
    the one just before: when a fact was recorded, or when a known fact took effect."""
    from rich.padding import Padding

    from projections import compliance

    start, end = timestamp_option(from_, "--from"), timestamp_option(to, "--to")
    with engine_for(ctx, store) as engine, engine.index.reading():
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
    # Validity and recording each in one column, a time over two lines: the tables fit 80
    # columns with every header whole.
    facts_table = table("kind", "values", time_column("valid"), time_column("recorded"),
                        "source, evidence", title="Attestations")
    for a in data["attestations"]:
        values = "; ".join(f"{k}: {', '.join(map(literal, v)) or '—'}"
                           for k, v in a["values"].items())
        facts_table.add_row(a["kind"], values, _valid(a["valid_from"], a["valid_until"]),
                            _recorded(a), literal(a["source"]) + (
                                f"\n{literal(a['evidence'])}" if a["evidence"] else ""))
    for r in data["revocations"]:
        facts_table.add_row(f"{r['kind']} revoked", "", f"from {_utc(r['effective_at'])}",
                            _recorded(r), "")
    out.print(facts_table)
    grants = table("entitlement", "grantee", "models", time_column("valid"),
                   time_column("recorded"), title="Entitlements")
    for e in data["entitlements"]:
        ((kind, grantee),) = e["grantee"].items()
        revoked = "".join(f"\nrevoked from {_utc(r['effective_at'])} at position "
                          f"{r['position']:,}" for r in e["revocations"])
        grants.add_row(literal(e["entitlement"]), f"{kind} {literal(grantee)}",
                       ", ".join(map(literal, e["models"])),
                       _valid(e["valid_from"], e["valid_until"]) + revoked, _recorded(e))
    out.print(grants)
    out.print("\n[bold]Decision changes, as decided at each moment[/]")
    for change in data["changes"][:limit]:
        cause = change["cause"]
        mark = {"lost": "[red]▼ lost[/]", "gained": "[green]▲ gained[/]"}.get(
            change["access"] or "", "· changed")
        out.print(f"{_utc(change['at'])}  [bold]{literal(change['model'])}[/]  {mark}")
        out.print(Padding(f"{_effect(change['before'])} → {_effect(change['after'])}\n"
                          f"[dim]{change['kind']}:[/] {cause['event']} {literal(cause['ref'])} "
                          f"at position {cause['position']:,}, recorded "
                          f"{_utc(cause['recorded_at'])}", (0, 0, 0, 4)))
    _more(limit, len(data["changes"]))
    now = table("model", "decision now", title="Now")
    for decision in data["decisions"]:
        now.add_row(literal(decision["model"]), _effect(decision, cell=True))
    out.print(now)


def _impact_table(data: dict[str, Any]) -> Table:
    models = data["compared"]["models"]
    by_reason = table("reason", *map(literal, models), "pairs", "subjects",
                      title="Changed decisions by reason")
    for group in data["groups"]:
        label = ("unknown " + ", ".join(group["unknown_attributes"])
                 if group["group"] == "unknown_attribute" else "meets the predicate")
        by_reason.add_row(label, *(f"{group['by_model'].get(m, 0):,}" for m in models),
                          f"{group['pairs']:,}", f"{group['subjects']:,}")
    changed = data["changed"]
    by_reason.add_row("[bold]total[/]", *(f"[bold]{changed['by_model'].get(m, 0):,}[/]"
                                          for m in models),
                      f"[bold]{changed['pairs']:,}[/]", f"[bold]{changed['subjects']:,}[/]")
    return by_reason


@app.command()
def impact(
    ctx: typer.Context,
    directive: Annotated[str | None, typer.Argument(help="Directive id.")] = None,
    what_if: Annotated[
        str | None, typer.Option("--what-if", help="An issue_directive command (JSON file, or "
                                 "- for stdin) to evaluate on current facts without storing it.")
    ] = None,
    limit: LimitOption = DEFAULT_LIMIT,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Every (subject, model) whose decision DIRECTIVE changed, grouped by reason.

    Decisions at its effective time, as known just before and just after its position."""
    from domain.commands import CommandError, IssueDirective
    from projections import compliance

    if (directive is None) == (what_if is None):
        raise fail("impact needs DIRECTIVE, or --what-if FILE")
    with engine_for(ctx, store, catch_up=what_if is None) as engine:
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
                with progress_bar("reading the store") as advance:
                    result = compliance.what_if(engine.app, command, progress=advance)
            except CommandError as error:
                raise fail(f"{what_if}: {error}") from None
        else:
            view = indexed_view(engine)
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
    rows = table("subject", "model", "why", "before", "after", title="Changes")
    for row in data["changes"][:limit]:
        why = ("unknown " + ", ".join(row["unknown_attributes"])
               if row["group"] == "unknown_attribute" else "meets the predicate")
        rows.add_row(literal(row["subject"]), literal(row["model"]), why,
                     _effect(row["before"], cell=True), _effect(row["after"], cell=True))
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
    limit: LimitOption = DEFAULT_LIMIT,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """Who gained and who lost access between two valid times, and why."""
    from projections import compliance

    start, end = timestamp_option(from_, "--from"), timestamp_option(to, "--to")
    assert start is not None and end is not None
    with engine_for(ctx, store) as engine:
        view = indexed_view(engine)
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
    counts = table("model", "lost", "gained", title="Access changes")
    for name in data["models"]:
        counts.add_row(literal(name), f"{data['counts']['lost'].get(name, 0):,}",
                       f"{data['counts']['gained'].get(name, 0):,}")
    out.print(counts)
    for label in ("lost", "gained"):
        rows = table("subject", "model", f"at {_utc(data['from'])}", f"at {_utc(data['to'])}",
                     title=label.capitalize())
        for row in data[label][:limit]:
            rows.add_row(literal(row["subject"]), literal(row["model"]),
                         _effect(row["before"], cell=True), _effect(row["after"], cell=True))
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
    as_of: AsOfOption = None,
    known_at: KnownAtOption = None,
    location: LocationOption = None,
    purpose: PurposeOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
) -> None:
    """The decision and the facts it used, each predicate evaluated node by node."""
    from datetime import UTC

    from rich.tree import Tree

    from projections import compliance

    request = request_of(subject, model, at, as_of, known_at, location, purpose)
    with engine_for(ctx, store) as engine, engine.index.reading():
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

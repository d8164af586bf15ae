"""An officer's orders: `sign` them before they are applied, `report` on one after."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from interlock.cli.shell import (
    TOO_LONG,
    JsonOption,
    KafkaOption,
    PrefixOption,
    StoreOption,
    app,
    emit,
    engine_for,
    fail,
    indexed_view,
    input_lines,
    line_error,
    open_input,
    out,
    timestamp_option,
)


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
    from domain.commands import CommandError, load_json
    from interlock.auth import ConfigError
    from interlock.signing import load_private_key, public_key_b64, sign_command, write_new_key

    if not key or not key_id:
        raise fail("sign needs --key FILE and --key-id ID")
    if generate_key:
        try:
            private = write_new_key(key)
        except ConfigError as error:
            raise fail(str(error)) from None
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
    with engine_for(ctx, store) as engine:
        view = indexed_view(engine)
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
        from interlock.cli.served_log import opened_log
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

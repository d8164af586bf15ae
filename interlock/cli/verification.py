"""An auditor's checks of the store: `replay`, `verify`, `checkpoint`, `seal`."""

from __future__ import annotations

import sys
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from interlock.cli.shell import (
    JsonOption,
    PrefixOption,
    StoreOption,
    app,
    emit,
    engine_for,
    fail,
    out,
    progress_bar,
    timestamp_option,
)
from interlock.config import StoreMissing, StoreURLError


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
    app.index_built = True
    with engine_for(ctx, store, catch_up=False) as engine:
        position = as_of if moment is None else audit.position_recorded_by(engine.app, moment)
        with progress_bar("replaying") as advance:
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

    from projections.gc_pause import gc_paused

    moment = timestamp_option(at, "--at") or datetime.now(UTC)
    expected = _expected_head(expect_head)
    anchors = _anchors(checkpoints, server_key)
    url = store or ctx.obj
    app.index_built = True
    with gc_paused():
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
    from interlock.engine import open_engine
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

        with progress_bar("verifying") as advance:
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
    from interlock.signing import load_private_key, write_new_key
    from projections import audit
    from projections.checkpoints import key_id

    if generate_key:
        try:
            private = write_new_key(key)
        except ConfigError as error:
            raise fail(str(error)) from None
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
    from interlock.persistence.sealing import ChainSealing

    with engine_for(ctx, store, catch_up=False) as engine:
        recorder = engine.app.recorder
        if not isinstance(recorder, ChainSealing):
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

"""The `interlock` application, its global options and the helpers every command shares:
reading input, refusing it, printing answers."""

from __future__ import annotations

import inspect
import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, BinaryIO, NoReturn

import typer
from typer.core import TyperGroup

from domain.limits import MAX_COMMAND_BYTES
from interlock.config import (
    SNAPSHOT_OFF,
    StoreMissing,
    StoreURLError,
    kept_snapshot,
    snapshot_path,
    start_snapshot,
    store_url,
)

if TYPE_CHECKING:  # imported where a command needs them: `import interlock.cli` stays quick
    import click
    from rich.console import Console
    from rich.table import Column, Table

    from domain.commands import Command
    from interlock.engine import Engine

SIGPIPE_EXIT = 141
"""The exit status of a command whose reader closed the pipe (128 + SIGPIPE, as the shell
reports a process the signal ended)."""

GLOBAL_OPTIONS = ("--store", "--snapshot", "--officer-keys")
"""The options of `interlock` itself, accepted after the subcommand too."""


def _options_of(command: click.Command) -> set[str]:
    found = {name for param in command.params for name in param.opts}
    if isinstance(command, TyperGroup):
        for sub in command.commands.values():
            found |= _options_of(sub)
    return found


def hoisted(group: click.Group, ctx: click.Context, args: list[str]) -> list[str]:
    """ARGS with each global option written after the subcommand moved before it, so that it
    means the same wherever it is written; a subcommand that takes the option itself (`--store`
    on most, `--officer-keys` on serve) keeps it, and uses it with that same meaning."""
    at = 0
    while at < len(args) and args[at].startswith("-"):
        at += 2 if args[at] in GLOBAL_OPTIONS else 1
    command = group.get_command(ctx, args[at]) if at < len(args) else None
    if command is None:
        return args
    own = _options_of(command)
    front, rest = args[:at], [args[at]]
    tail = iter(args[at + 1:])
    for arg in tail:
        if arg == "--":
            rest += [arg, *tail]
            break
        name = arg.split("=", 1)[0]
        if name not in GLOBAL_OPTIONS or name in own:
            rest.append(arg)
            continue
        front.append(arg)
        if "=" not in arg and (value := next(tail, None)) is not None:
            front.append(value)
    return front + rest


class InterlockGroup(TyperGroup):
    """The top-level command group: global options after the subcommand (see `hoisted`)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        return super().parse_args(ctx, hoisted(self, ctx, args))

    def invoke(self, ctx: click.Context) -> Any:
        """Runs the command; a reader that closed the pipe (`| head`) ends it quietly."""
        try:
            result = super().invoke(ctx)
            sys.stdout.flush()
            return result
        except BrokenPipeError:
            # Nothing more can be said, and the output still buffered would fail again at
            # exit: it goes to /dev/null (the recipe of Python's signal documentation).
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            raise typer.Exit(SIGPIPE_EXIT) from None


class Interlock(typer.Typer):
    """The console script, with a last guard: input errors are refused where they are read,
    naming the line or option (exit 2); anything that still escapes is a fault of ours, told
    in one line (exit 1) instead of a traceback."""

    index_built = False
    """Whether the command being run built an access index (`engine_for`, `indexed_view`,
    `snapshot`, `replay`, `verify`): the process then exits without freeing it object by
    object, which takes seconds at a million subjects; the operating system takes the memory
    back at once."""

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.index_built = False
        try:
            return super().__call__(*args, **kwargs)
        except SystemExit as done:
            if self.index_built:
                _exit_at_once(done.code)
            raise
        except Exception as error:
            sys.stderr.write(f"interlock: internal error: {type(error).__name__}: "
                             f"{str(error)[:500]}\n")
            sys.exit(1)


def _exit_at_once(code: object) -> NoReturn:
    """Ends the process as `sys.exit(code)` would, output flushed, without tearing down the
    interpreter's objects. Only after a command's engine is closed (nothing else is left to
    finish: no thread, no open transaction)."""
    if isinstance(code, str):
        sys.stderr.write(code + "\n")
    status = code if isinstance(code, int) else 0 if code is None else 1
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        status = SIGPIPE_EXIT
    sys.stderr.flush()
    os._exit(status)


app = Interlock(
    help="Interlock: event-sourced access control and export compliance for AI models.",
    no_args_is_help=True,
    add_completion=False,
    cls=InterlockGroup,
    pretty_exceptions_enable=False,
)


class _FirstUse:
    """rich's Console, made when a command first prints through it: a command that answers
    in JSON (or applies commands) never imports rich."""

    _console: Console | None = None

    def __getattr__(self, name: str) -> Any:
        if self._console is None:
            from rich.console import Console

            self._console = Console(emoji=False)
        return getattr(self._console, name)


out: Console = _FirstUse()  # type: ignore[assignment]
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
AsOfOption = Annotated[
    int | None, typer.Option(help="Use only facts up to this position.")
]
KnownAtOption = Annotated[str | None, typer.Option(help="Use only facts recorded by this time.")]
LocationOption = Annotated[str | None, typer.Option(help="Request location (country).")]
PurposeOption = Annotated[str | None, typer.Option(help="Request purpose.")]
"""The options of a decision request, shared by `decide` and `explain`."""
SnapshotOption = Annotated[
    str | None,
    typer.Option(
        "--snapshot",
        envvar="INTERLOCK_SNAPSHOT",
        help="Index snapshot to start from (see `interlock snapshot`); one that does not fit "
        "the store is ignored.",
    ),
]

def show_version(wanted: bool) -> None:
    """`--version`: the installed package's version, from its metadata."""
    if wanted:
        from importlib.metadata import version

        sys.stdout.write(f"interlock {version('interlock')}\n")
        raise typer.Exit()


def reflow(typer_app: typer.Typer) -> None:
    """Each command's help as paragraphs, for rich to wrap at the terminal's width, instead of
    lines broken where the docstring's source breaks them (mid-sentence at 80 columns)."""
    for info in typer_app.registered_commands:
        text = inspect.cleandoc(info.help or (info.callback and info.callback.__doc__) or "")
        info.help = "\n\n".join(" ".join(part.split()) for part in text.split("\n\n"))
    for group in typer_app.registered_groups:
        if group.typer_instance is not None:
            reflow(group.typer_instance)


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
    version: Annotated[
        bool, typer.Option("--version", is_eager=True, callback=show_version,
                           help="Print Interlock's version and exit.")
    ] = False,
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
    from rich.markup import escape

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
    store that does not exist stops with exit 2 rather than answer from an empty one.

    With `catch_up` (the commands that read the index) the index starts from the snapshot
    kept beside the store (`kept_snapshot`) and replays only the events after it; when that
    tail was long, or the file there could not be used, a fresh snapshot is written once the
    command has answered (`snapshot_due`)."""
    from interlock.auth import ConfigError
    from interlock.engine import open_engine, snapshot_due
    from projections.chain import ChainRefused

    url = store or ctx.obj
    kept = kept_snapshot(store_url(url)) if catch_up else None
    named = snapshot_path() is not None
    offered = (start_snapshot(store_url(url)) if catch_up else None) or SNAPSHOT_OFF
    try:
        engine = open_engine(url, catch_up=catch_up, create=create, snapshot=offered)
    except StoreMissing as error:
        raise fail(str(error)) from None
    except StoreURLError as error:
        raise fail(f"--store: {error}") from None
    except ConfigError as error:
        raise fail(str(error)) from None
    app.index_built = app.index_built or catch_up
    answered = False
    try:
        yield engine
        answered = True
    except ChainRefused as error:
        raise fail(f"write refused (its transaction stored nothing): {error}", 1) from None
    finally:
        if answered and kept is not None and snapshot_due(engine, kept, beside=not named):
            ctx.call_on_close(lambda: _keep_snapshot(engine, kept))
        else:
            engine.close()


def _keep_snapshot(engine: Engine, path: Path) -> None:
    """Writes the index the command answered from beside the store, after its answer was
    printed, then closes its engine."""
    from interlock.engine import keep_snapshot

    with suppress(BrokenPipeError):  # the answer first; a closed pipe is dealt with after
        sys.stdout.flush()
    try:
        problem = keep_snapshot(engine, path)
    finally:
        engine.close()
    if problem is not None:
        sys.stderr.write(f"note: {problem}\n")


@contextmanager
def open_input(path: str) -> Iterator[BinaryIO]:
    """FILE or - (stdin) as bytes: lines are decoded one by one (`input_lines`), so a bad byte
    is refused naming its line, after every line before it."""
    if path == "-":
        yield sys.stdin.buffer
        return
    try:
        stream = Path(path).open("rb")  # noqa: SIM115 (closed below; only opening is refused)
    except OSError as error:
        raise fail(f"{path}: {error.strerror}") from None
    with stream:  # an OSError while it is read (a closed stdout, say) is not the file's
        yield stream


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
    from domain.commands import CommandError, parse_command_json

    if line is None:
        raise CommandError("", TOO_LONG)
    return parse_command_json(line)


def line_error(number: int, problem: object) -> str:
    return f"line {number}: {problem}"


def timestamp_option(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    from pydantic import TypeAdapter, ValidationError

    from domain.commands import Timestamp, command_error_from

    try:
        return TypeAdapter(Timestamp).validate_python(value)
    except ValidationError as error:
        raise fail(f"{name}: {command_error_from(error).message}") from None


def table(*headers: str | Column, title: str | None = None) -> Table:
    """A table readable at 80 columns and in pipes: no header is cut (a column is at least as
    wide as its header's longest word), and a cell too long for its column folds onto the
    next line instead of losing its end, so that an id prints whole."""
    from rich.table import Column, Table

    columns = [header if isinstance(header, Column) else Column(
        header, min_width=max(map(len, header.split())), overflow="fold") for header in headers]
    return Table(*columns, title=title, title_justify="left")


def emit(data: Any) -> None:
    sys.stdout.write(json.dumps(data) + "\n")


KafkaOption = Annotated[
    str | None,
    typer.Option("--kafka", envvar="INTERLOCK_KAFKA", help="Kafka bootstrap servers."),
]
PrefixOption = Annotated[
    str, typer.Option("--topic-prefix", help="Prefix for the four topic names.")
]

DEFAULT_LIMIT = 20
"""Rows `history`, `impact` and `diff` print per table unless told otherwise: one default."""
LimitOption = Annotated[
    int, typer.Option("--limit", min=0, help="Rows to print per table (--json prints all).")
]


def indexed_view(engine: Engine) -> Any:
    """The engine's index (the snapshot kept beside the store and the events after it) with
    reach (candidate subjects) read from its facts."""
    from projections.compliance.views import View
    from projections.reach import Reach

    return View(engine.index, Reach.of(engine.index.facts))


@contextmanager
def progress_bar(label: str) -> Iterator[Any]:
    """A rich progress bar on stderr for a catch-up; yields the `progress` callback."""
    import time

    from rich.console import Console
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

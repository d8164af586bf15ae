"""The console script at 80 columns and in pipes: headers and help whole, one meaning for the
global options wherever they are written, one `--limit` default, `--version`, and a reader that
closes the pipe early ending the command quietly."""

from __future__ import annotations

import inspect
import json
import os
import re
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.http.http_support import AFTER_ORDER, ORDER, SETUP

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


def run(*args: str, columns: int = 80, stdin: str | None = None
        ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERLOCK, *args], input=stdin, capture_output=True, text=True,
                          timeout=120, check=False,
                          env={**os.environ, "COLUMNS": str(columns), "TERM": "dumb"})


@pytest.fixture
def store(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path}/store.db"
    lines = "".join(json.dumps(command) + "\n" for command in (*SETUP, ORDER))
    assert run("apply", "-", "--store", url, stdin=lines).returncode == 0
    return url


def commands() -> dict[str, object]:
    """Every command and sub-command of the console script, by its name on the command line."""
    import typer

    from interlock.cli import app

    group = typer.main.get_command(app)
    found: dict[str, object] = {}
    for name, command in group.commands.items():  # type: ignore[attr-defined]
        found[name] = command
        for sub, inner in getattr(command, "commands", {}).items():
            found[f"{name} {sub}"] = inner
    return found


def test_version_comes_from_the_package_metadata() -> None:
    result = run("--version")
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"interlock {version('interlock')}\n"


@pytest.mark.parametrize("name", sorted(commands()))
def test_help_fits_80_columns_and_keeps_sentences_whole(name: str) -> None:
    narrow = run(*name.split(), "--help")
    assert narrow.returncode == 0, narrow.stderr
    assert all(len(line) <= 80 for line in narrow.stdout.splitlines()), narrow.stdout
    # Wide enough for any paragraph: each one of the command's help is on a line of its own,
    # not broken where its source line ends.
    wide = run(*name.split(), "--help", columns=1000).stdout
    command = commands()[name]
    for paragraph in inspect.cleandoc(command.help or "").split("\n\n"):  # type: ignore[attr-defined]
        assert " ".join(paragraph.split()) in wide, (paragraph, wide)


def test_history_headers_are_whole_at_80_columns(store: str) -> None:
    result = run("history", "u-us", "--store", store)
    assert result.returncode == 0, result.stderr
    assert "…" not in result.stdout, result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines()), result.stdout
    for header in ("recorded", "position", "evidence", "entitlement", "valid", "source"):
        assert re.search(rf"\b{header}\b", result.stdout), (header, result.stdout)


def test_the_demo_wraps_beside_its_times_at_80_columns(tmp_path: Path) -> None:
    result = run("demo", "--subjects", "200", "--store", f"sqlite:///{tmp_path}/demo.db")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    # The command to try is one line however narrow, to be copied as it is; the rest fits.
    assert all(len(line) <= 80 for line in lines if not line.startswith("interlock ")), \
        result.stdout
    # A line that starts at the margin is a time, a title, a rule or the command to try:
    # never the rest of a sentence wrapped back under the times.
    starts = ("09:00 ET", "17:21 ET", "17:40 ET", "Officer", "Who lost access", "Ask it",
              "interlock decide", "─", "━", "┏", "┃", "┡", "│", "└")
    stray = [line for line in lines if line and not line.startswith((" ", *starts))]
    assert not stray, result.stdout
    command = next(line for line in lines if line.startswith("interlock decide"))
    assert "--known-at" in command and command.rstrip().endswith("demo.db")


@pytest.mark.parametrize("option", ["--snapshot", "--officer-keys"])
def test_global_options_mean_the_same_after_the_subcommand(
        option: str, store: str, tmp_path: Path) -> None:
    if option == "--snapshot":
        value = str(tmp_path / "index.snapshot")
        assert run("snapshot", value, "--store", store).returncode == 0
        args = ["decide", "u-de", "fable-5", "--at", AFTER_ORDER, "--json", "--store", store]
    else:
        keys = run("sign", "--generate-key", "--key", str(tmp_path / "o.pem"), "--key-id", "o-1")
        value = str(tmp_path / "keys.json")
        Path(value).write_text(keys.stdout)
        order = tmp_path / "order.jsonl"
        order.write_text(json.dumps({**ORDER, "directive": "unsigned"}) + "\n")
        args = ["apply", str(order), "--store", store]
    before = run(option, value, *args)
    after = run(*args, option, value)
    joined = run(*args, f"{option}={value}")
    assert before.returncode == after.returncode == joined.returncode
    assert before.stdout == after.stdout == joined.stdout
    assert before.stderr == after.stderr == joined.stderr
    if option == "--officer-keys":
        assert before.returncode == 2 and "signature" in after.stderr, after.stderr


def test_a_subcommands_own_store_wins_with_the_same_meaning(store: str, tmp_path: Path) -> None:
    elsewhere = f"sqlite:///{tmp_path}/missing.db"
    assert run("--store", elsewhere, "position", "--store", store).stdout == \
        run("position", "--store", store).stdout


@pytest.mark.parametrize("name", ["history", "impact", "diff"])
def test_one_limit_default(name: str) -> None:
    (limit,) = [p for p in commands()[name].params if p.name == "limit"]  # type: ignore[attr-defined]
    assert limit.default == 20
    assert re.search(r"--limit\b.*\[default: 20\]", run(name, "--help", columns=1000).stdout)


def test_a_closed_pipe_ends_the_batch_quietly(store: str, tmp_path: Path) -> None:
    requests = tmp_path / "big.jsonl"
    line = json.dumps({"subject": "u-de", "model": "fable-5", "at": AFTER_ORDER}) + "\n"
    requests.write_text(line * 20_000)
    batch = subprocess.Popen([INTERLOCK, "decide", "--batch", str(requests), "--store", store],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert batch.stdout is not None and batch.stderr is not None
    first = json.loads(batch.stdout.readline())
    batch.stdout.close()  # as `| head -1` does
    errors = batch.stderr.read().decode()
    assert batch.wait(timeout=120) == 141  # 128 + SIGPIPE, as the shell reports it
    assert first["effect"] == "deny"
    assert errors == "", errors

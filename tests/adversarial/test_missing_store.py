"""A mistyped or missing store: read-only commands refuse it instead of answering from an
empty one, and leave no file or directory behind; writers create it."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from typer.testing import CliRunner

from interlock.cli import app
from interlock.config import DEFAULT_STORE

READ_ONLY = [
    ["decide", "u-1", "fable-5"],
    ["decide", "--batch", "-"],
    ["explain", "u-1", "fable-5"],
    ["history", "u-1"],
    ["impact", "d-1"],
    ["diff", "--from", "2026-11-26T22:00:00Z", "--to", "2026-11-26T23:00:00Z"],
    ["position"],
    ["replay"],
    ["verify"],
    ["report", "--html", "report.html"],
    ["snapshot", "index.snapshot"],
]


def listing(root: Path) -> list[str]:
    return sorted(str(p.relative_to(root)) for p in root.rglob("*"))


@pytest.mark.parametrize("command", READ_ONLY, ids=lambda c: " ".join(c[:2]))
def test_a_read_only_command_refuses_a_store_that_does_not_exist(
    command: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    store = f"sqlite:///{tmp_path}/no/such/dir/x.db"
    result = CliRunner().invoke(app, ["--store", store, *command], input='{"subject": "u"}\n')
    assert result.exit_code == 2, result.output
    assert f"store {store} does not exist" in result.stderr
    assert DEFAULT_STORE in result.stderr, "names the default"
    assert result.stdout == ""
    assert listing(tmp_path) == [], "nothing created"


def test_the_default_store_is_not_created_either(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("INTERLOCK_STORE", raising=False)
    result = CliRunner().invoke(app, ["decide", "u-00002", "fable-5"])
    assert result.exit_code == 2
    assert result.stderr.startswith(f"store {DEFAULT_STORE} (the default) does not exist")
    assert "interlock demo` writes sqlite:///.interlock/demo.db" in result.stderr
    assert not (tmp_path / ".interlock").exists()


def test_decide_on_a_store_without_events_says_so(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    store = f"sqlite:///{path}"
    created = CliRunner().invoke(app, ["--store", store, "apply", "-"], input="")
    assert json.loads(created.stdout) == {"applied": 0, "repeated": 0, "position": 0}
    result = CliRunner().invoke(app, ["--store", store, "decide", "u-1", "fable-5", "--json"])
    assert result.exit_code == 0
    assert json.loads(result.stdout)["reasons"] == [{"code": "unknown_model", "ref": None}]
    assert f"store {store} holds no events" in result.stderr
    batch = CliRunner().invoke(app, ["--store", store, "decide", "--batch", "-"],
                               input='{"subject": "u-1", "model": "fable-5"}\n')
    assert "holds no events" in batch.stderr and batch.exit_code == 0


def test_decide_on_a_store_with_events_adds_no_note(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/s.db"
    CliRunner().invoke(app, ["--store", store, "apply", "-"],
                       input='{"type": "register_model", "model": "fable-5", "family": "f"}\n')
    result = CliRunner().invoke(app, ["--store", store, "decide", "u-1", "fable-5"])
    assert result.exit_code == 0 and result.stderr == ""


def test_writers_create_the_store_and_its_directory(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "x.db"
    result = CliRunner().invoke(app, ["--store", f"sqlite:///{path}", "apply", "-"], input="")
    assert result.exit_code == 0, result.output
    assert path.is_file()
    assert CliRunner().invoke(app, ["--store", f"sqlite:///{path}", "position"]).stdout == "0\n"


def test_a_missing_store_named_in_the_environment_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = f"sqlite:///{tmp_path}/typo.db"
    monkeypatch.setenv("INTERLOCK_STORE", store)
    result = CliRunner().invoke(app, ["history", "u-1"], env={**os.environ})
    assert result.exit_code == 2 and f"store {store} does not exist" in result.stderr
    assert listing(tmp_path) == []

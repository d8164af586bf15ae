"""The `interlock` console script attacked: bad bytes, long lines, ambiguous JSON, reused ids,
unsigned directives and ids that look like markup. Every bad input ends in exit 2 with one
line naming the line (or option) and field, the lines before it kept; never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from domain.limits import MAX_COMMAND_BYTES
from interlock.cli import Interlock
from interlock.signing import public_key_b64

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
OUT_OF_RANGE = "9999-12-31T23:59:59-05:00"
MODEL = {"type": "register_model", "model": "fable-5", "family": "fable"}
ORDER = {"type": "issue_directive", "directive": "bis-2026-0417", "received_at":
         "2026-11-26T17:21:00-05:00", "models": ["fable-5"],
         "subjects": {"citizenship": {"none_of": ["US"]}}, "effect": "deny"}


def deep_predicate(depth: int) -> dict:
    predicate: dict = {"everyone": True}
    for _ in range(depth):
        predicate = {"not": predicate}
    return predicate


def run(*args: str, stdin: bytes = b"", store: str) -> subprocess.CompletedProcess[str]:
    """The console script; wide columns, so that rich wraps no id of the human output."""
    result = subprocess.run([INTERLOCK, "--store", store, *args], input=stdin,
                            capture_output=True, timeout=120, check=False,
                            env={**os.environ, "COLUMNS": "400"})
    return subprocess.CompletedProcess(result.args, result.returncode,
                                       result.stdout.decode(), result.stderr.decode())


def line(document: dict) -> bytes:
    return json.dumps(document).encode() + b"\n"


def refused(result: subprocess.CompletedProcess[str], *expected: str) -> None:
    """Exit 2, one line on stderr holding each expected part, no traceback."""
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    for part in expected:
        assert part in result.stderr, result.stderr


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path}/store.db"


def position(store: str) -> int:
    return int(run("position", store=store).stdout)


# --- apply ----------------------------------------------------------------------------------

BAD_LINES: list[tuple[str, bytes, str]] = [
    ("invalid UTF-8", b'{"type": "register_model", "model": "m-\xff", "family": "m"}\n',
     "not valid UTF-8"),
    ("invalid UTF-8 outside a string", b'{"type": "register_model"\xff}\n', "not valid UTF-8"),
    ("unpaired surrogate", b'{"type": "register_model", "model": "m-\\ud800", "family": "m"}\n',
     "model"),
    ("repeated key", b'{"type": "register_model", "model": "a", "model": "b", "family": "m"}\n',
     "model: duplicate key"),
    ("not JSON", b'{"type": \n', "not valid JSON"),
    ("NaN", b'{"type": "register_model", "model": NaN, "family": "m"}\n', "NaN"),
    ("nested past any parser", b"[" * 60_000 + b"\n", "nested too deeply"),
    ("out-of-range time", line({"type": "withdraw_model", "model": "fable-5",
                                "effective_at": OUT_OF_RANGE}), "effective_at"),
    ("deep predicate", line({**ORDER, "subjects": deep_predicate(300)}), "subjects"),
    ("string for a boolean", line({**ORDER, "disclose": "yes"}), "disclose"),
    ("three-letter country", line({**ORDER, "subjects": {"citizenship": {"any_of": ["DEU"]}}}),
     "subjects"),
    ("line over the limit", b'{"type": "' + b"x" * MAX_COMMAND_BYTES + b'"}\n', "limit"),
]


@pytest.mark.parametrize(("bad", "named"), [(b, n) for _, b, n in BAD_LINES],
                         ids=[name for name, _, _ in BAD_LINES])
def test_a_bad_line_is_refused_naming_it_and_the_lines_before_it_are_kept(
    store: str, bad: bytes, named: str
) -> None:
    result = run("apply", "-", stdin=line(MODEL) + bad + line(
        {"type": "register_model", "model": "never", "family": "m"}), store=store)
    refused(result, "line 2: ", named)
    assert json.loads(result.stdout) == {"applied": 1, "repeated": 0, "position": 1}
    assert position(store) == 1


def test_continue_reads_past_an_overlong_line(store: str) -> None:
    overlong = b'{"evidence": "' + b"e" * (3 * MAX_COMMAND_BYTES) + b'"}\n'
    after = line({"type": "register_model", "model": "opus-4.8", "family": "opus"})
    result = run("apply", "--continue", "-", stdin=line(MODEL) + overlong + after, store=store)
    assert result.returncode == 2
    assert result.stderr.startswith("line 2: longer than the limit")
    assert json.loads(result.stdout)["applied"] == 2


def test_an_endless_line_is_refused_in_bounded_memory(tmp_path: Path, store: str) -> None:
    """256 MiB without a newline: apply reads it in MAX_COMMAND_BYTES pieces, so its peak
    memory stays far below the line's size (measured by the kernel, not by a clock)."""
    probe = tmp_path / "probe.py"
    probe.write_text(
        "import resource, subprocess, sys\n"
        f"process = subprocess.Popen([{INTERLOCK!r}, '--store', {store!r}, 'apply', '-'],\n"
        "                           stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,\n"
        "                           stderr=subprocess.PIPE)\n"
        "chunk = b'x' * (1 << 20)\n"
        "try:\n"
        "    for _ in range(256):\n"
        "        process.stdin.write(chunk)\n"
        "    process.stdin.close()\n"
        "except BrokenPipeError:\n"
        "    pass\n"
        "error = process.stderr.read().decode()\n"
        "process.wait()\n"
        "peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024\n"
        "print(process.returncode, peak, error.strip())\n"
    )
    result = subprocess.run([sys.executable, str(probe)], capture_output=True, text=True,
                            timeout=300, check=True)
    code, peak, message = result.stdout.split(" ", 2)
    assert (int(code), message.strip()) == (2, f"line 1: longer than the limit of "
                                               f"{MAX_COMMAND_BYTES:,} bytes")
    assert int(peak) < 200 * 2**20, f"peak RSS {int(peak) / 2**20:.0f} MiB"


def test_a_reused_command_id_is_counted_or_refused_naming_line_and_id(store: str) -> None:
    first = {**MODEL, "command_id": "c-1"}
    assert json.loads(run("apply", "-", stdin=line(first), store=store).stdout)["applied"] == 1
    again = run("apply", "-", stdin=line(first), store=store)
    assert json.loads(again.stdout) == {"applied": 0, "repeated": 1, "position": 2}
    other = {"type": "register_model", "model": "opus-4.8", "family": "opus",
             "command_id": "c-1"}
    result = run("apply", "-", stdin=line({"type": "register_model", "model": "m-2",
                                           "family": "m"}) + line(other), store=store)
    refused(result, "line 2: ", "command_id", "'c-1'")
    assert json.loads(result.stdout)["applied"] == 1
    decision = json.loads(run("decide", "u-1", "opus-4.8", "--json", store=store).stdout)
    assert decision["reasons"] == [{"code": "unknown_model", "ref": None}], "nothing stored"


def test_an_unsigned_directive_is_refused_naming_the_line_and_signature(
    tmp_path: Path, store: str
) -> None:
    keys = tmp_path / "officers.json"
    keys.write_text(json.dumps({"officer-1": public_key_b64(Ed25519PrivateKey.generate())}))
    result = subprocess.run(
        [INTERLOCK, "--officer-keys", str(keys), "--store", store, "apply", "-"],
        input=line(MODEL) + line(ORDER), capture_output=True, timeout=120, check=False)
    stderr = result.stderr.decode()
    assert result.returncode == 2, stderr
    assert stderr.startswith("line 2: signature: "), stderr
    assert json.loads(result.stdout)["applied"] == 1


# --- every other command's input ------------------------------------------------------------

@pytest.mark.parametrize(("args", "stdin", "named"), [
    (["decide", "u-1", "fable-5", "--at", OUT_OF_RANGE], b"", "--at"),
    (["decide", "u-1", "fable-5", "--known-at", "yesterday"], b"", "--known-at"),
    (["decide", "--batch", "-"], b'{"subject": "u-\xff", "model": "fable-5"}\n', "line 1: "),
    (["decide", "--batch", "-"], b'{"subject": "a", "subject": "b", "model": "m"}\n',
     "line 1: subject: duplicate key"),
    (["decide", "--batch", "-"], b'{"subject": "u-1", "model": "fable-5", "as_of": true}\n',
     "line 1: as_of"),
    (["decide", "--batch", "-"], b'{"subject": "u-1", "model": "m"}\n' + b"[" * 60_000 + b"\n",
     "line 2: not valid JSON: nested too deeply"),
    (["decide", "--batch", "-"], b'{"subject": "u-1", "model": "m", "at": "%s"}\n'
     % OUT_OF_RANGE.encode(), "line 1: at"),
    (["diff", "--from", OUT_OF_RANGE, "--to", "2026-01-01T00:00:00Z"], b"", "--from"),
    (["history", "u-1", "--to", "2026-01-01T00:00:00"], b"", "--to"),
    (["explain", "u-1", "fable-5", "--at", OUT_OF_RANGE], b"", "--at"),
    (["impact", "--what-if", "-"], b'{"type": "issue_directive", "directive": "\xff"}',
     "not valid UTF-8"),
    (["impact", "--what-if", "-"], b'{"type": "issue_directive", "directive": "d", '
     b'"directive": "e", "models": ["*"], "subjects": {"everyone": true}}',
     "directive: duplicate key"),
    (["impact", "--what-if", "-"], b" " * (MAX_COMMAND_BYTES + 1), "limit"),
], ids=["decide-at", "decide-known-at", "batch-utf8", "batch-repeated-key", "batch-bool",
        "batch-deep", "batch-time", "diff-from", "history-to", "explain-at", "what-if-utf8",
        "what-if-repeated-key", "what-if-size"])
def test_bad_input_on_any_command_is_named_without_a_traceback(
    store: str, args: list[str], stdin: bytes, named: str
) -> None:
    run("apply", "-", stdin=line(MODEL), store=store)
    refused(run(*args, stdin=stdin, store=store), named)


# --- human output -----------------------------------------------------------------------------

NASTY_IDS = ["[/]", "[bold]x", "[red]", ":thumbs_up:", "a\\", "[link=http://x]y[/link]"]


def model_named(nasty: str) -> str:
    return "m" + nasty.replace(":", "")  # model ids and families have no selector syntax


def test_human_output_prints_ids_as_they_are(store: str) -> None:
    commands = [MODEL]
    for number, nasty in enumerate(NASTY_IDS):
        commands += [
            {"type": "register_model", "model": model_named(nasty), "family": model_named(nasty)},
            {"type": "grant_entitlement", "entitlement": f"e{number}{nasty}",
             "grantee": {"org": nasty}, "models": ["*"], "valid_from": "2026-01-01T00:00:00Z"},
            {"type": "attest_employer", "subject": nasty, "org": nasty, "source": nasty,
             "valid_from": "2026-01-01T00:00:00Z"},
            {"type": "attest_nationality", "subject": nasty, "citizenships": ["DE"],
             "source": nasty, "evidence": nasty, "valid_from": "2026-01-01T00:00:00Z"},
        ]
    commands.append({**ORDER, "directive": "d[/]", "authority": "[/]", "reference": "[bold]",
                     "models": ["*"], "subjects": {"employer": {"any_of": NASTY_IDS}},
                     "received_at": "2026-06-01T00:00:00Z"})
    applied = run("apply", "-", stdin=b"".join(map(line, commands)), store=store)
    assert applied.returncode == 0, applied.stderr
    for nasty in NASTY_IDS:
        model = model_named(nasty)
        for args in (["history", nasty], ["decide", nasty, model], ["explain", nasty, model]):
            result = run(*args, store=store)
            assert result.returncode == 0, (args, result.stderr)
            assert nasty in result.stdout and model in result.stdout, (args, result.stdout)
            assert "d[/]" in result.stdout, (args, result.stdout)
    for args in (["diff", "--from", "2026-01-01T00:00:00Z", "--to", "2026-07-01T00:00:00Z"],
                 ["impact", "d[/]"]):
        result = run(*args, "--limit", "1000", store=store)
        assert result.returncode == 0, (args, result.stderr)
        for nasty in NASTY_IDS:
            assert nasty in result.stdout and model_named(nasty) in result.stdout, (args, nasty)


def test_invisible_characters_in_stored_ids_are_shown_as_escapes() -> None:
    from interlock.cli import literal

    assert literal("u\u202eevil") == "u\\u202eevil"
    assert literal("a\u200bb\x1b[31m") == "a\\u200bb\\x1b[31m"
    assert literal("[/]") == "\\[/]"


# --- the last guard ---------------------------------------------------------------------------

def test_an_unexpected_fault_is_one_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    broken = Interlock(add_completion=False)

    @broken.command()
    def fault() -> None:
        raise RuntimeError("the store vanished")

    with pytest.raises(SystemExit) as stopped:
        broken(args=[], prog_name="interlock")
    assert stopped.value.code == 1
    assert capsys.readouterr().err == (
        "interlock: internal error: RuntimeError: the store vanished\n")


def test_a_refusal_passes_the_guard_unchanged(capsys: pytest.CaptureFixture[str]) -> None:
    refusing = Interlock(add_completion=False)

    @refusing.command()
    def refuse() -> None:
        sys.stderr.write("line 3: model: unknown model\n")
        raise typer.Exit(2)

    with pytest.raises(SystemExit) as stopped:
        refusing(args=[], prog_name="interlock")
    assert stopped.value.code == 2
    assert capsys.readouterr().err == "line 3: model: unknown model\n"

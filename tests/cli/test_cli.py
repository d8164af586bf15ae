"""The `interlock` console script, driven as a user would: files, stdin, exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

INTERLOCK = str(Path(sys.executable).with_name("interlock"))

SETUP = [
    {"type": "register_model", "model": "fable-5", "family": "fable"},
    {"type": "register_model", "model": "opus-4.8", "family": "opus"},
    {"type": "grant_entitlement", "entitlement": "e-acme", "grantee": {"org": "acme"},
     "models": ["*"], "valid_from": "2026-01-01T00:00:00Z", "valid_until": None},
    {"type": "attest_employer", "subject": "u-1", "org": "acme",
     "valid_from": "2026-01-01T00:00:00Z", "valid_until": None, "source": "hr-feed"},
    {"type": "attest_employer", "subject": "u-2", "org": "acme",
     "valid_from": "2026-01-01T00:00:00Z", "valid_until": None, "source": "hr-feed"},
    {"type": "attest_nationality", "subject": "u-1", "citizenships": ["US"], "residencies": [],
     "valid_from": "1990-01-01T00:00:00Z", "valid_until": None, "source": "passport-kyc",
     "evidence": "doc-1"},
]
ORDER = {
    "type": "issue_directive", "directive": "bis-2026-0417",
    "authority": "US Dept. of Commerce (BIS)", "reference": "letter of 2026-11-26",
    "received_at": "2026-11-26T17:21:00-05:00", "effective_at": None, "expires_at": None,
    "models": ["fable-5"], "subjects": {"citizenship": {"none_of": ["US"]}}, "effect": "deny",
    "route_to": None, "disclose": True, "exempt": {"subjects": [], "orgs": []},
    "on_unknown": "apply",
}
AFTER_ORDER = "2026-11-26T22:30:00+00:00"


def run(*args: str, stdin: str | None = None, store: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [INTERLOCK, *args, "--store", store], input=stdin, capture_output=True,
        text=True, timeout=120, check=False,
    )


def jsonl(*commands: dict) -> str:
    return "".join(json.dumps(command) + "\n" for command in commands)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """Every CLI test runs on an SQLite file and on a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("fresh_postgres_db"))


@pytest.fixture
def commands_file(tmp_path: Path) -> Path:
    path = tmp_path / "commands.jsonl"
    path.write_text(jsonl(*SETUP, ORDER))
    return path


def test_apply_prints_count_and_position(store: str, commands_file: Path) -> None:
    result = run("apply", str(commands_file), store=store)
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["applied"] == 7
    assert report["position"] == int(run("position", store=store).stdout)


def test_decide_json_is_the_normative_decision(store: str, commands_file: Path) -> None:
    run("apply", str(commands_file), store=store)
    denied = json.loads(run("decide", "u-2", "fable-5", "--at", AFTER_ORDER, "--json",
                            store=store).stdout)
    position = int(run("position", store=store).stdout)
    assert denied == {
        "subject": "u-2", "model": "fable-5", "effect": "deny", "route_to": None,
        "disclosed": False,
        "reasons": [{"code": "directive", "ref": "bis-2026-0417"},
                    {"code": "unknown_attribute", "ref": "citizenship"}],
        "at": AFTER_ORDER, "as_of": position,
    }
    allowed = json.loads(run("decide", "u-1", "fable-5", "--at", AFTER_ORDER, "--json",
                             store=store).stdout)
    assert allowed["effect"] == "allow"
    assert allowed["reasons"] == [{"code": "entitled", "ref": "e-acme"}]


def test_decide_as_of_an_earlier_position_ignores_later_facts(
    store: str, commands_file: Path
) -> None:
    run("apply", str(commands_file), store=store)
    before_order = int(run("position", store=store).stdout) - 1
    decision = json.loads(run("decide", "u-2", "fable-5", "--at", AFTER_ORDER, "--as-of",
                              str(before_order), "--json", store=store).stdout)
    assert decision["effect"] == "allow"
    assert decision["as_of"] == before_order


def test_decide_prints_a_readable_verdict(store: str, commands_file: Path) -> None:
    run("apply", str(commands_file), store=store)
    result = run("decide", "u-2", "fable-5", "--at", AFTER_ORDER, store=store)
    assert result.returncode == 0
    assert "DENY" in result.stdout
    assert "bis-2026-0417" in result.stdout


def test_apply_reads_stdin(store: str) -> None:
    result = run("apply", "-", stdin=jsonl(*SETUP), store=store)
    assert json.loads(result.stdout)["applied"] == len(SETUP)


def test_bad_line_exits_2_naming_it_and_keeps_the_lines_before(store: str) -> None:
    bad = dict(SETUP[3], valid_from="2026-01-01T00:00:00")
    result = run("apply", "-", stdin=jsonl(*SETUP[:3], bad, SETUP[4]), store=store)
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "line 4: valid_from: timestamp needs a UTC offset (e.g. +00:00 or Z)"
    )
    assert json.loads(result.stdout)["applied"] == 3
    decision = json.loads(run("decide", "u-2", "opus-4.8", "--json", store=store).stdout)
    assert decision["reasons"] == [{"code": "no_entitlement", "ref": None}]
    assert run("decide", "u-1", "fable-5", "--json", store=store).returncode == 0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"type": "register_model", "model": "m", "family": "f", "colour": "red"}',
         "line 1: colour: unknown field"),
        ('{"type": "delete_everything"}', "line 1: type: unknown command type"),
        ("{not json", "line 1: not valid JSON"),
        ('{"type": "revoke_entitlement", "entitlement": "e-404"}',
         "line 1: entitlement: unknown entitlement"),
        ('{"type": "grant_entitlement", "entitlement": "e", "grantee": {"org": "o"}, '
         '"models": ["ghost-1"]}', "line 1: models: unknown model 'ghost-1'"),
    ],
)
def test_bad_input_is_named(store: str, line: str, message: str) -> None:
    result = run("apply", "-", stdin=line + "\n", store=store)
    assert result.returncode == 2
    assert result.stderr.startswith(message), result.stderr
    assert run("position", store=store).stdout.strip() == "0"


def test_continue_applies_good_lines_and_lists_bad_ones(store: str) -> None:
    lines = jsonl(SETUP[0], {"type": "nope"}, SETUP[1], {"type": "register_model"})
    result = run("apply", "--continue", "-", stdin=lines, store=store)
    assert result.returncode == 2
    assert json.loads(result.stdout)["applied"] == 2
    assert [line.split(":")[0] for line in result.stderr.splitlines()] == ["line 2", "line 4"]


def test_reapplying_commands_with_ids_stores_nothing_new(store: str) -> None:
    lines = jsonl(*(dict(command, command_id=f"c-{i}") for i, command in enumerate(SETUP)))
    first = json.loads(run("apply", "-", stdin=lines, store=store).stdout)
    second = json.loads(run("apply", "-", stdin=lines, store=store).stdout)
    assert second == {"applied": 0, "repeated": len(SETUP), "position": first["position"]}


def test_decide_batch_answers_each_request_in_order(store: str, commands_file: Path) -> None:
    run("apply", str(commands_file), store=store)
    requests = jsonl(
        {"subject": "u-1", "model": "fable-5", "at": AFTER_ORDER},
        {"subject": "u-2", "model": "fable-5", "at": AFTER_ORDER},
        {"subject": "u-2", "model": "opus-4.8", "at": AFTER_ORDER, "location": "fr"},
        {"subject": "u-9", "model": "mythos-5"},
    )
    result = run("decide", "--batch", "-", stdin=requests, store=store)
    assert result.returncode == 0, result.stderr
    effects = [(d["subject"], d["model"], d["effect"]) for d in map(json.loads,
                                                                   result.stdout.splitlines())]
    assert effects == [("u-1", "fable-5", "allow"), ("u-2", "fable-5", "deny"),
                       ("u-2", "opus-4.8", "allow"), ("u-9", "mythos-5", "deny")]


def test_decide_batch_names_a_bad_request_line(store: str) -> None:
    run("apply", "-", stdin=jsonl(*SETUP), store=store)  # read-only commands need a store
    requests = jsonl({"subject": "u-1", "model": "fable-5"},
                     {"subject": "u-1", "model": "fable-5", "at": "2026-11-26T17:00:00"})
    result = run("decide", "--batch", "-", stdin=requests, store=store)
    assert result.returncode == 2
    assert result.stderr.startswith("line 2: at: timestamp needs a UTC offset")
    assert len(result.stdout.splitlines()) == 1


def test_decide_rejects_a_timestamp_without_offset(store: str) -> None:
    result = run("decide", "u-1", "fable-5", "--at", "2026-11-26T17:25:00", store=store)
    assert result.returncode == 2
    assert result.stderr.startswith("--at: timestamp needs a UTC offset")


def test_known_at_answers_as_known_at_a_recorded_time(store: str, commands_file: Path) -> None:
    run("apply", str(commands_file), store=store)
    before_anything = "2000-01-01T00:00:00+00:00"
    decision = json.loads(run("decide", "u-1", "fable-5", "--known-at", before_anything,
                              "--json", store=store).stdout)
    assert decision["as_of"] == 0
    assert decision["reasons"] == [{"code": "unknown_model", "ref": None}]


def test_demo_tells_the_order_timeline(store: str) -> None:
    result = subprocess.run(
        [INTERLOCK, "demo", "--subjects", "400", "--store", store],
        capture_output=True, text=True, timeout=120, check=False,
        env={"COLUMNS": "200", "PATH": ""},
    )
    assert result.returncode == 0, result.stderr
    text = result.stdout
    assert "17:21 ET" in text and "bis-2026-0417" in text
    assert "opus-4.8 still serves" in text and "0 changes" in text
    assert "17:40 ET" in text
    assert "as known at 17:25" in text and "deny" in text and "as known now" in text

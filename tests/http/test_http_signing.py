"""Signed directives: with officer keys configured, only verified directive commands are stored,
and the signer's key id is kept in the event's `signed_by`."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from domain.aggregates import Directive
from domain.commands import CommandError, parse_command
from interlock.auth import ConfigError
from interlock.engine import open_engine
from interlock.signing import OfficerKeys, public_key_b64

from .conftest import Serve
from .http_support import AFTER_ORDER, ORDER, SETUP, jsonl, signed

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
AMEND = {"type": "amend_directive", "directive": "bis-2026-0417",
         "exempt": {"subjects": ["u-de"], "orgs": []}, "effective_at": AFTER_ORDER}
LIFT = {"type": "lift_directive", "directive": "bis-2026-0417",
        "effective_at": "2026-12-01T00:00:00Z"}


@pytest.fixture
def officer(serve: Serve, officer_keys: dict[str, str]) -> TestClient:
    client = serve(officer_keys=officer_keys)
    assert client.post("/v1/commands", json={"commands": SETUP}).status_code == 200
    return client


def signers(store: str) -> list[tuple[str, str | None]]:
    """(event type, signed_by) of every directive event in the store."""
    engine = open_engine(store, catch_up=False)
    try:
        events = [engine.app.mapper.to_domain_event(n)
                  for n in engine.app.recorder.select_notifications(start=1, limit=10_000)]
    finally:
        engine.close()
    return [(type(e).__name__, e.signed_by) for e in events
            if isinstance(e, Directive.Issued | Directive.Amended | Directive.Lifted)]


def refused(client: TestClient, command: dict[str, Any], message: str) -> None:
    before = client.get("/v1/position").json()["position"]
    answer = client.post("/v1/commands", json=command)
    assert answer.status_code == 422, answer.text
    assert answer.json()["field"] == "signature"
    assert message in answer.json()["error"]
    assert answer.json()["applied"] == 0
    assert client.get("/v1/position").json()["position"] == before


def test_signed_directives_are_stored_with_their_signer(
    officer: TestClient, officer_key: Ed25519PrivateKey, store: str
) -> None:
    for command in (ORDER, AMEND, LIFT):
        answer = officer.post("/v1/commands", json=signed(command, officer_key))
        assert answer.status_code == 200, answer.text
    assert signers(store) == [("Issued", "officer-1"), ("Amended", "officer-1"),
                              ("Lifted", "officer-1")]
    decision = officer.post("/v1/decide", json={"subject": "u-anon", "model": "fable-5",
                                                "at": AFTER_ORDER}).json()
    assert decision["reasons"][0] == {"code": "directive", "ref": "bis-2026-0417"}


def test_unsigned_directives_are_refused_and_nothing_is_stored(
    officer: TestClient, officer_key: Ed25519PrivateKey, store: str
) -> None:
    refused(officer, ORDER, "must be signed")
    assert officer.post("/v1/commands", json=signed(ORDER, officer_key)).status_code == 200
    refused(officer, AMEND, "must be signed")
    refused(officer, LIFT, "must be signed")
    assert signers(store) == [("Issued", "officer-1")]


def test_altered_forged_and_unknown_signatures_are_refused(
    officer: TestClient, officer_key: Ed25519PrivateKey, store: str
) -> None:
    altered = {**signed(ORDER, officer_key), "models": ["fable-5", "opus-4.8"]}
    refused(officer, altered, "does not verify")
    forged = signed(ORDER, Ed25519PrivateKey.generate())
    refused(officer, forged, "does not verify")
    unknown = signed(ORDER, officer_key, key_id="officer-9")
    refused(officer, unknown, "unknown officer key id 'officer-9'")
    garbled = {**signed(ORDER, officer_key)}
    garbled["signature"] = {"key_id": "officer-1", "value": "not base64!"}
    refused(officer, garbled, "not base64")
    short = {**signed(ORDER, officer_key)}
    short["signature"] = {"key_id": "officer-1", "value": base64.b64encode(b"x" * 10).decode()}
    refused(officer, short, "does not verify")
    assert signers(store) == []
    decision = officer.post("/v1/decide", json={"subject": "u-anon", "model": "fable-5",
                                                "at": AFTER_ORDER}).json()
    assert decision["effect"] == "allow"


def test_a_refused_signature_keeps_the_commands_before_it(
    officer: TestClient, officer_key: Ed25519PrivateKey
) -> None:
    start = officer.get("/v1/position").json()["position"]
    answer = officer.post("/v1/commands", json={"commands": [
        {"type": "register_model", "model": "m-1", "family": "m"}, ORDER,
    ]})
    assert answer.status_code == 422
    assert (answer.json()["index"], answer.json()["field"], answer.json()["applied"]) == (
        1, "signature", 1
    )
    assert officer.get("/v1/position").json()["position"] == start + 1


def test_signatures_survive_reformatting_but_not_changes(officer_key: Ed25519PrivateKey) -> None:
    keys = OfficerKeys({"officer-1": officer_key.public_key()})
    document = signed(ORDER, officer_key)
    reformatted = {**document, "received_at": "2026-11-26T22:21:00Z", "route_to": None}
    assert keys(parse_command(reformatted)) == "officer-1"
    with pytest.raises(CommandError, match="signature"):
        keys(parse_command({**document, "disclose": False}))
    # the signature covers command_id (issue 9): a signed command cannot be re-sent as new
    with pytest.raises(CommandError, match="signature"):
        keys(parse_command({**document, "command_id": "c-7"}))


def test_officer_keys_tables(tmp_path: Path, officer_key: Ed25519PrivateKey,
                             monkeypatch: pytest.MonkeyPatch) -> None:
    public = public_key_b64(officer_key)
    as_toml = tmp_path / "keys.toml"
    as_toml.write_text(f'officer-1 = "{public}"\n')
    keys = OfficerKeys.configured(str(as_toml))
    assert keys is not None and keys.table() == {"officer-1": public}
    monkeypatch.setenv("INTERLOCK_OFFICER_KEYS", json.dumps({"officer-2": public}))
    assert OfficerKeys.configured().table() == {"officer-2": public}  # type: ignore[union-attr]
    with pytest.raises(ConfigError, match="officer-3"):
        OfficerKeys.parse(json.dumps({"officer-3": "c2hvcnQ="}), "keys.json")


def test_the_sign_command_signs_directives_for_the_service(
    tmp_path: Path, serve: Serve
) -> None:
    key = tmp_path / "officer.pem"
    made = subprocess.run(
        [INTERLOCK, "sign", "--generate-key", "--key", str(key), "--key-id", "k-1"],
        capture_output=True, text=True, timeout=60, check=True,
    )
    table = json.loads(made.stdout)
    assert list(table) == ["k-1"]
    assert key.stat().st_mode & 0o777 == 0o600
    again = subprocess.run(
        [INTERLOCK, "sign", "--generate-key", "--key", str(key), "--key-id", "k-1"],
        capture_output=True, text=True, timeout=60, check=False,
    )
    assert again.returncode == 2
    result = subprocess.run(
        [INTERLOCK, "sign", "--key", str(key), "--key-id", "k-1", "-"],
        input=jsonl(*SETUP, ORDER), capture_output=True, text=True, timeout=60, check=True,
    )
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert lines[:-1] == SETUP
    assert lines[-1]["signature"]["key_id"] == "k-1"
    assert lines[-1]["command_id"]  # added by sign, since the signature covers it
    client = serve(officer_keys=table)
    answer = client.post("/v1/commands", json={"commands": lines})
    assert answer.status_code == 200, answer.text
    bad = subprocess.run(
        [INTERLOCK, "sign", "--key", str(key), "--key-id", "k-1", "-"],
        input=jsonl(SETUP[0], {"type": "issue_directive"}), capture_output=True, text=True,
        timeout=60, check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("line 2: ")


@pytest.mark.parametrize("command", [["sign"], ["checkpoint"]])
def test_a_new_key_never_overwrites_a_file(tmp_path: Path, command: list[str]) -> None:
    """`--generate-key` onto an existing file is refused naming it, and the file is kept."""
    from typer.testing import CliRunner

    from interlock.cli import app

    existing = tmp_path / "key.pem"
    existing.write_text("kept")
    extra = ["--key-id", "officer-1"] if command == ["sign"] else []
    result = CliRunner().invoke(app, [*command, "--generate-key", "--key", str(existing),
                                      *extra, "--store", f"sqlite:///{tmp_path / 's.db'}"])
    assert result.exit_code == 2, result.output
    assert str(existing) in result.output and "exists" in result.output
    assert existing.read_text() == "kept"

"""Roles at every boundary: 401 without a known token, 403 without the role; token tables."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from interlock.auth import ConfigError, Tokens, hash_token

from .conftest import Serve
from .http_support import AFTER_ORDER, BEFORE_ORDER, ORDER, SETUP, TOKEN_TABLE, bearer

INTERLOCK = str(Path(sys.executable).with_name("interlock"))

ROUTES: list[tuple[str, str, str, dict[str, Any]]] = [
    ("decide", "POST", "/v1/decide", {"json": {"subject": "u-us", "model": "fable-5"}}),
    ("decide", "POST", "/v1/decide/batch",
     {"json": {"requests": [{"subject": "u-us", "model": "fable-5"}]}}),
    ("officer", "POST", "/v1/commands",
     {"json": {"type": "register_model", "model": "m-1", "family": "m"}}),
    ("auditor", "GET", "/v1/subjects/u-de/history", {}),
    ("auditor", "GET", "/v1/directives/bis-2026-0417/impact", {}),
    ("auditor", "GET", "/v1/diff", {"params": {"from": BEFORE_ORDER, "to": AFTER_ORDER}}),
]
ROLES = ("decide", "officer", "auditor")


@pytest.fixture
def guarded(serve: Serve) -> TestClient:
    client = serve(tokens=TOKEN_TABLE)
    answer = client.post("/v1/commands", json={"commands": [*SETUP, ORDER]},
                         headers=bearer("officer"))
    assert answer.status_code == 200
    return client


@pytest.mark.parametrize(("role", "method", "path", "request_args"), ROUTES,
                         ids=[f"{m} {p}" for _, m, p, _ in ROUTES])
def test_each_route_needs_its_role(
    guarded: TestClient, role: str, method: str, path: str, request_args: dict[str, Any]
) -> None:
    missing = guarded.request(method, path, **request_args)
    assert missing.status_code == 401
    assert missing.headers["www-authenticate"] == "Bearer"
    assert "bearer token" in missing.json()["error"]
    wrong = guarded.request(method, path, headers={"Authorization": "Bearer nope"},
                            **request_args)
    assert wrong.status_code == 401
    not_bearer = guarded.request(method, path, headers={"Authorization": "Basic Zm9vOmJhcg=="},
                                 **request_args)
    assert not_bearer.status_code == 401
    for other in ROLES:
        if other != role:
            forbidden = guarded.request(method, path, headers=bearer(other), **request_args)
            assert forbidden.status_code == 403, other
            assert f"lacks the '{role}' role" in forbidden.json()["error"]
    allowed = guarded.request(method, path, headers=bearer(role), **request_args)
    assert allowed.status_code == 200, allowed.text
    everything = guarded.request(method, path, headers=bearer("all"), **request_args)
    assert everything.status_code not in (401, 403)


def test_position_takes_any_role_and_probes_take_none(guarded: TestClient) -> None:
    assert guarded.get("/v1/position").status_code == 401
    for role in ROLES:
        assert guarded.get("/v1/position", headers=bearer(role)).status_code == 200
    for path in ("/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"):
        assert guarded.get(path).status_code == 200, path


def test_nothing_is_stored_for_a_refused_officer_request(guarded: TestClient) -> None:
    before = guarded.get("/v1/position", headers=bearer("decide")).json()["position"]
    command = {"type": "register_model", "model": "m-1", "family": "m"}
    assert guarded.post("/v1/commands", json=command).status_code == 401
    assert guarded.post("/v1/commands", json=command, headers=bearer("decide")).status_code == 403
    assert guarded.get("/v1/position", headers=bearer("decide")).json()["position"] == before


def test_tokens_are_read_from_json_toml_or_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    digest = hash_token("s3cret")
    as_json = tmp_path / "tokens.json"
    as_json.write_text(json.dumps({digest: {"name": "gateway", "roles": ["decide"]}}))
    as_toml = tmp_path / "tokens.toml"
    as_toml.write_text(f'[{digest.upper()}]\nname = "gateway"\nroles = ["decide", "auditor"]\n')
    principal = Tokens.configured(str(as_json)).authenticate("s3cret")  # type: ignore[union-attr]
    assert principal is not None and principal.roles == {"decide"}
    from_toml = Tokens.configured(str(as_toml))
    assert from_toml is not None
    assert from_toml.authenticate("s3cret").roles == {"decide", "auditor"}  # type: ignore[union-attr]
    assert from_toml.authenticate("s3cret ") is None
    assert digest in from_toml.table
    monkeypatch.delenv("INTERLOCK_TOKENS", raising=False)
    assert Tokens.configured() is None
    monkeypatch.setenv("INTERLOCK_TOKENS", as_json.read_text())
    assert Tokens.configured() is not None


@pytest.mark.parametrize(("text", "problem"), [
    ('{"abc": {"name": "x", "roles": ["decide"]}}', "abc"),
    (json.dumps({hash_token("t"): {"name": "x", "roles": ["root"]}}), "roles"),
    (json.dumps({hash_token("t"): {"name": "x", "roles": []}}), "roles"),
    ("{}", "no tokens"),
    ("[[not toml", "neither"),
])
def test_bad_token_tables_are_refused(text: str, problem: str) -> None:
    with pytest.raises(ConfigError, match=problem):
        Tokens.parse(text, "tokens.json")


def test_serve_refuses_a_public_address_without_tokens(tmp_path: Path) -> None:
    result = subprocess.run(
        [INTERLOCK, "serve", "--host", "0.0.0.0", "--store", f"sqlite:///{tmp_path}/s.db"],
        capture_output=True, text=True, timeout=60, check=False,
        env={"PATH": "/usr/bin:/bin"},
    )
    assert result.returncode == 2
    assert "refusing to serve on 0.0.0.0 without tokens" in result.stderr


def test_token_helpers_print_a_digest_and_an_entry() -> None:
    hashed = subprocess.run([INTERLOCK, "token", "hash", "s3cret"], capture_output=True,
                            text=True, timeout=60, check=True)
    assert hashed.stdout.strip() == hash_token("s3cret")
    made = subprocess.run([INTERLOCK, "token", "new", "--name", "gw", "--role", "decide"],
                          capture_output=True, text=True, timeout=60, check=True)
    answer = json.loads(made.stdout)
    assert answer["entry"] == {hash_token(answer["token"]): {"name": "gw", "roles": ["decide"]}}
    assert Tokens.parse(json.dumps(answer["entry"]), "-").authenticate(answer["token"])

"""One serializer per answer: on the same store, `GET` over HTTP and the CLI's `--json` give
the same JSON for a subject's history, a directive's impact and a diff; and query-string times
are read in their encoded form, with an unencoded `+` named as the fault."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from .http_support import AFTER_ORDER, BEFORE_ORDER, ORDER

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
LIFTED = "2026-11-27T00:00:00+00:00"


def cli_json(store: str, *args: str) -> Any:
    done = subprocess.run([INTERLOCK, *args, "--json", "--store", store], capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def _story(client: TestClient) -> None:
    for command in (ORDER, {"type": "lift_directive", "directive": "bis-2026-0417",
                            "effective_at": LIFTED}):
        assert client.post("/v1/commands", json=command).status_code == 200


def _without_now(history: dict[str, Any]) -> dict[str, Any]:
    """The current decisions are at the moment each answer was made, which differs."""
    for decision in history["decisions"]:
        assert decision.pop("at")
    return history


def test_impact_is_the_same_json_over_http_and_cli(client: TestClient, store: str) -> None:
    _story(client)
    answer = client.get("/v1/directives/bis-2026-0417/impact")
    assert answer.status_code == 200
    assert answer.json() == cli_json(store, "impact", "bis-2026-0417")
    assert {group["group"] for group in answer.json()["groups"]} == {"predicate",
                                                                     "unknown_attribute"}


def test_diff_is_the_same_json_over_http_and_cli(client: TestClient, store: str) -> None:
    _story(client)
    for window, model in (((BEFORE_ORDER, AFTER_ORDER), None),
                          ((AFTER_ORDER, "2026-11-27T01:00:00+00:00"), "family:fable")):
        params = {"from": window[0], "to": window[1], **({"model": model} if model else {})}
        answer = client.get("/v1/diff", params=params)
        assert answer.status_code == 200
        options = ["--from", window[0], "--to", window[1], *(["--model", model] if model else [])]
        assert answer.json() == cli_json(store, "diff", *options)
        assert answer.json()["counts"] and answer.json()["compared"]["subjects"] > 0


def test_history_is_the_same_json_over_http_and_cli(client: TestClient, store: str) -> None:
    _story(client)
    for params, options in (({}, []), ({"model": "fable-5", "from": AFTER_ORDER},
                                       ["--model", "fable-5", "--from", AFTER_ORDER])):
        answer = client.get("/v1/subjects/u-de/history", params=params)
        assert answer.status_code == 200
        assert answer.json()["changes"], "the order and its lift changed u-de's decisions"
        assert _without_now(answer.json()) == _without_now(
            cli_json(store, "history", "u-de", *options))


def test_query_times_read_encoded_and_name_an_unencoded_plus(client: TestClient) -> None:
    encoded = client.get("/v1/diff?from=2026-11-26T22:00:00%2B00:00&to=2026-11-26T22:30:00Z")
    assert encoded.status_code == 200
    assert encoded.json()["from"] == BEFORE_ORDER
    for path in ("/v1/diff?from=2026-11-26T22:00:00+00:00&to=2026-11-26T22:30:00Z",
                 "/v1/subjects/u-de/history?to=2026-11-26T22:30:00+00:00",
                 "/v1/decisions?from=2026-11-26T22:00:00+00:00"):
        refused = client.get(path)
        assert refused.status_code == 422, path
        body = refused.json()
        assert body["field"] in ("from", "to"), body
        assert "%2B" in body["error"] and "Z" in body["error"], body

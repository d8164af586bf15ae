"""Attacks on the decision log's inputs and on its store: every filter refused with a reason
naming it (never a 500), and a log damaged under the server or the tools named, not a
traceback."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from interlock.http.app import create_app
from interlock.http.settings import ServeSettings
from projections.decision_store import TABLE
from tests.decision_log_support import sql, world
from tests.http.http_support import AFTER_ORDER

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


@pytest.fixture
def paths(tmp_path: Path) -> tuple[str, Path]:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    world(store).close()
    return store, tmp_path / "decisions.db"


@pytest.fixture
def client(paths: tuple[str, Path]) -> Iterator[TestClient]:
    store, log = paths
    with TestClient(create_app(ServeSettings(store=store, decision_log=f"sqlite:///{log}"))
                    ) as client:
        for subject in ("u-de", "u-us"):
            assert client.post("/v1/decide", json={"subject": subject, "model": "fable-5",
                                                   "at": AFTER_ORDER}).status_code == 200
        yield client


@pytest.mark.parametrize(("params", "field"), [
    ({"limit": "0"}, "limit"), ({"limit": "10001"}, "limit"), ({"limit": "1e9"}, "limit"),
    ({"limit": "-1"}, "limit"), ({"limit": "ten"}, "limit"),
    ({"subject": ""}, "subject"), ({"subject": "s" * 5000}, "subject"),
    ({"model": "family:"}, "model"), ({"model": "*x"}, "model"), ({"model": "a:b:c"}, "model"),
    ({"model": "m" * 300}, "model"), ({"effect": "ALLOW"}, "effect"),
    ({"from": "2026-11-26T17:21:00"}, "from"), ({"from": "1796000000"}, "from"),
    ({"from": "yesterday"}, "from"), ({"to": "2026-13-40T00:00:00Z"}, "to"),
    ({"from": "2026-11-27T00:00:00Z", "to": "2026-11-26T00:00:00Z"}, "to"),
    ({"since": "2026-11-27T00:00:00Z"}, "since"), ({"from_": "2026-11-27T00:00:00Z"}, "from_"),
])
def test_every_filter_is_refused_with_a_reason(client: TestClient, params: dict,
                                               field: str) -> None:
    answer = client.get("/v1/decisions", params=params)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["field"] == field and body["error"]


def test_a_repeated_filter_is_not_a_500(client: TestClient) -> None:
    answer = client.get("/v1/decisions?subject=u-de&subject=u-us")
    assert answer.status_code in (200, 422)


def test_a_damaged_row_is_named_by_the_api_and_the_tools(client: TestClient,
                                                        paths: tuple[str, Path]) -> None:
    store, log = paths
    sql(log, f"UPDATE {TABLE} SET reasons = 'not json' WHERE seq = 2")
    answer = client.get("/v1/decisions")
    assert answer.status_code == 503 and "seq 2" in answer.json()["error"]
    for args in (["query"], ["audit", "--store", store]):
        done = subprocess.run([INTERLOCK, "decisions", *args, "--log", f"sqlite:///{log}"],
                              capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 1, done.stderr
        assert "seq 2" in done.stderr and "Traceback" not in done.stderr


def test_an_entry_moved_to_another_chain_is_named(client: TestClient,
                                                  paths: tuple[str, Path]) -> None:
    store, log = paths
    sql(log, f"UPDATE {TABLE} SET chain = 'elsewhere/0' WHERE seq = 1")
    done = subprocess.run([INTERLOCK, "decisions", "audit", "--log", f"sqlite:///{log}",
                           "--store", store], capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 1
    assert "edited" in done.stdout and "removed" in done.stdout

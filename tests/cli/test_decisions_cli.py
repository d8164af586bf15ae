"""`interlock decisions query|audit|prune`, driven as an investigator would: the question
"every allow for fable-5 served after the order" is one command, and its answer is the one
`GET /v1/decisions` gives."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from interlock.engine import open_engine
from interlock.http.app import create_app
from interlock.http.settings import ServeSettings
from projections.access_index import AccessIndex
from projections.audit import notifications
from projections.decision_store import SQLiteDecisionLog
from tests.decision_log_support import Replica
from tests.http.http_support import ORDER, SETUP

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
ID_HEADER = "x-interlock-decision-id"


def run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([INTERLOCK, *args], capture_output=True, text=True, timeout=120,
                          check=False)


class Day:
    """A served day: decisions before the order, the order, decisions after it from an up to
    date replica, a replica behind it and one that lost the order's event."""

    def __init__(self, tmp_path: Path) -> None:
        self.store = f"sqlite:///{tmp_path / 'store.db'}"
        self.log = f"sqlite:///{tmp_path / 'decisions.db'}"
        app = create_app(ServeSettings(store=self.store, decision_log=self.log))
        with TestClient(app) as client:
            assert client.post("/v1/commands", json={"commands": SETUP}).status_code == 200
            self.before = [self.decide(client, "u-de"), self.decide(client, "u-us")]
            self.order_time = datetime.now(UTC).isoformat()
            order = client.post("/v1/commands", json={**ORDER, "received_at": self.order_time})
            self.position = order.json()["position"]
            client.post("/v1/commands", json={"type": "register_model", "model": "haiku-1",
                                              "family": "haiku"})
            self.denied = self.decide(client, "u-de")
            self.allowed = self.decide(client, "u-us")
            self.opus = self.decide(client, "u-de", "opus-4.8")
            self.odd = self.decide(client, "[bold]u-x[/]")
        engine = open_engine(self.store)
        log = SQLiteDecisionLog(str(tmp_path / "decisions.db"))
        try:
            behind = Replica(engine.index, log, replica="replica-2:1")
            now = datetime.now(UTC)
            self.behind = behind.serve(("u-de", "fable-5"), at=now,
                                       as_of=self.position - 1)[0].entry_id
            lost = AccessIndex()
            for notification in notifications(engine.app):
                if notification.id != self.position:
                    lost.apply(engine.app.mapper.to_domain_event(notification), notification.id)
            self.lost = Replica(lost, log, replica="replica-3:1").serve(
                ("u-de", "fable-5"), at=now)[0].entry_id
        finally:
            log.close()
            engine.close()

    @staticmethod
    def decide(client: TestClient, subject: str, model: str = "fable-5") -> str:
        answer = client.post("/v1/decide", json={"subject": subject, "model": model})
        assert answer.status_code == 200
        return answer.headers[ID_HEADER]


@pytest.fixture(scope="module")
def day(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Day]:
    yield Day(tmp_path_factory.mktemp("day"))


def test_the_investigators_question_is_one_command(day: Day) -> None:
    done = run("decisions", "query", "--log", day.log, "--model", "fable-5", "--effect",
               "allow", "--from", day.order_time, "--json")
    assert done.returncode == 0, done.stderr
    lines = [json.loads(line) for line in done.stdout.splitlines()]
    assert [d["decision_id"] for d in lines] == [day.allowed, day.behind, day.lost]
    assert {(d["subject"], d["replica"].split(":")[0]) for d in lines} >= {
        ("u-de", "replica-2"), ("u-de", "replica-3")}
    assert all(d["served_at"] >= day.order_time and d["effect"] == "allow" for d in lines)
    app = create_app(ServeSettings(store=day.store, decision_log=day.log))
    with TestClient(app) as client:
        answer = client.get("/v1/decisions", params={"model": "fable-5", "effect": "allow",
                                                     "from": day.order_time})
    assert answer.status_code == 200
    assert answer.json()["decisions"] == lines


def test_the_table_shows_ids_as_they_are(day: Day) -> None:
    done = run("decisions", "query", "--log", day.log, "--from", day.order_time)
    assert done.returncode == 0, done.stderr
    assert day.denied in done.stdout and day.opus in done.stdout
    assert "[bold]u-x[/]" in done.stdout, "markup in an id is printed, not applied"
    assert day.before[0] not in done.stdout


def test_audit_names_the_replica_that_served_from_old_facts(day: Day) -> None:
    done = run("decisions", "audit", "--log", day.log, "--store", day.store, "--json")
    assert done.returncode == 1, done.stderr
    report = json.loads(done.stdout)
    assert [d["decision_id"] for d in report["differences"]] == [day.lost]
    (difference,) = report["differences"]
    assert (difference["served"]["effect"], difference["rule"]["effect"]) == ("allow", "deny")
    assert difference["replica"] == "replica-3:1"
    assert report["decisions"] == 8 and report["agreed"] == 7 and not report["chain_problems"]
    human = run("decisions", "audit", "--log", day.log, "--store", day.store)
    assert human.returncode == 1 and day.lost in human.stdout and "differs" in human.stdout


def test_prune_reports_what_it_removed(day: Day, tmp_path: Path) -> None:
    done = run("decisions", "prune", "--log", day.log, "--older-than", "30d", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["removed"] == 0


@pytest.mark.parametrize(("args", "message"), [
    (["query", "--log", "sqlite:///x.db", "--from", "2026-11-26T17:21:00"], "--from: "),
    (["query", "--log", "sqlite:///x.db", "--effect", "permit"], "--effect: "),
    (["query", "--log", "sqlite:///x.db", "--model", "family:"], "--model: "),
    (["query", "--log", "sqlite:///x.db", "--subject", "s" * 201], "--subject: "),
    (["query", "--log", "sqlite:///x.db", "--limit", "10001"], "--limit: "),
    (["query", "--log", "sqlite:///x.db", "--from", "2026-11-27T00:00:00Z", "--to",
      "2026-11-26T00:00:00Z"], "--to: must be later than from"),
    (["query", "--log", "memory:"], "--log: memory:"),
    (["query", "--log", "ftp://x"], "--log: 'ftp://x': unknown decision log"),
    (["query", "--log", "kafka"], "--log: kafka needs --kafka"),
    (["query"], "--log: give the decision log"),
    (["prune", "--log", "sqlite:///x.db", "--older-than", "30 days"], "--older-than: "),
    (["prune", "--log", "sqlite:///x.db", "--older-than", "0d"], "--older-than: "),
])
def test_bad_options_are_refused_with_a_reason(args: list[str], message: str,
                                               tmp_path: Path) -> None:
    done = subprocess.run([INTERLOCK, "decisions", *args], capture_output=True, text=True,
                          timeout=60, check=False, cwd=tmp_path,
                          env={"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)})
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert done.stderr.startswith(message), done.stderr
    assert "Traceback" not in done.stderr

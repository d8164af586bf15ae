"""`serve --decision-log`: decision ids on every answer, `GET /v1/decisions`, strict and
best-effort logging."""

from __future__ import annotations

import re
import sqlite3
import uuid
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from projections.decision_log import LogQuery
from projections.decision_store import TABLE, SQLiteDecisionLog

from .conftest import Serve
from .http_support import AFTER_ORDER, ORDER, SETUP, TOKEN_TABLE, bearer

ID_HEADER = "x-interlock-decision-id"


@pytest.fixture
def log_path(tmp_path: Path) -> Path:
    return tmp_path / "decisions.db"


def logged(serve: Serve, log_path: Path, **settings: object) -> TestClient:
    client = serve(decision_log=f"sqlite:///{log_path}", **settings)
    assert client.post("/v1/commands", json={"commands": [*SETUP, ORDER]}).status_code == 200
    return client


def metric(client: TestClient, name: str) -> float:
    found = re.search(rf"^{re.escape(name)} (\S+)$", client.get("/metrics").text, re.M)
    assert found, name
    return float(found[1])


def test_each_answer_carries_the_id_it_is_logged_under(serve: Serve, log_path: Path) -> None:
    client = logged(serve, log_path)
    single = client.post("/v1/decide", json={"subject": "u-de", "model": "fable-5",
                                             "at": AFTER_ORDER, "location": "fr"})
    assert single.status_code == 200
    decision_id = single.headers[ID_HEADER]
    assert single.json()["decision_id"] == decision_id and uuid.UUID(decision_id)
    batch = client.post("/v1/decide/batch", json={"requests": [
        {"subject": "u-us", "model": "fable-5"}, {"subject": "u-de", "model": "opus-4.8"}]})
    ids = [d["decision_id"] for d in batch.json()["decisions"]]
    assert len({decision_id, *ids}) == 3
    # strict (the default): each is in the log by the time it is answered
    reader = SQLiteDecisionLog(str(log_path))
    try:
        entries = {e.entry_id: e for e in reader.select(LogQuery())}
    finally:
        reader.close()
    assert set(entries) == {decision_id, *ids}
    first = entries[decision_id]
    assert first.served.decision.to_json() == {
        k: v for k, v in single.json().items() if k != "decision_id"}
    assert (first.served.location, first.served.family, first.seq) == ("FR", "fable", 1)
    assert metric(client, "interlock_decision_log_written_total") == 3


def test_without_a_log_answers_are_as_before(client: TestClient) -> None:
    answer = client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5"})
    assert ID_HEADER not in answer.headers and "decision_id" not in answer.json()
    refused = client.get("/v1/decisions")
    assert refused.status_code == 404 and "--decision-log" in refused.json()["error"]


def test_get_decisions_filters_by_subject_model_effect_and_served_time(
    serve: Serve, log_path: Path
) -> None:
    client = logged(serve, log_path)
    asks = [("u-de", "fable-5"), ("u-us", "fable-5"), ("u-de", "opus-4.8"),
            ("u-anon", "fable-5")]
    ids = [client.post("/v1/decide", json={"subject": s, "model": m, "at": AFTER_ORDER}
                       ).headers[ID_HEADER] for s, m in asks]
    every = client.get("/v1/decisions").json()
    assert [d["decision_id"] for d in every["decisions"]] == ids and not every["more"]
    served_at = [d["served_at"] for d in every["decisions"]]

    def listed(**params: object) -> list[str]:
        answer = client.get("/v1/decisions", params=params)
        assert answer.status_code == 200, answer.json()
        return [d["decision_id"] for d in answer.json()["decisions"]]

    assert listed(subject="u-de") == [ids[0], ids[2]]
    assert listed(model="fable-5", effect="allow") == [ids[1]]
    assert listed(model="family:opus") == [ids[2]]
    assert listed(model="*", effect="deny") == [ids[0], ids[3]]
    assert listed(**{"from": served_at[1], "to": served_at[3]}) == ids[1:3]
    page = client.get("/v1/decisions", params={"limit": 2}).json()
    assert [d["decision_id"] for d in page["decisions"]] == ids[:2] and page["more"]


def test_the_log_is_read_by_auditors_only(serve: Serve, log_path: Path) -> None:
    client = serve(decision_log=f"sqlite:///{log_path}", tokens=TOKEN_TABLE)
    assert client.get("/v1/decisions").status_code == 401
    assert client.get("/v1/decisions", headers=bearer("decide")).status_code == 403
    assert client.get("/v1/decisions", headers=bearer("auditor")).status_code == 200


def test_strict_refuses_to_answer_what_it_cannot_log(serve: Serve, log_path: Path) -> None:
    client = logged(serve, log_path)
    connection = sqlite3.connect(log_path)
    connection.execute(f"DROP TABLE {TABLE}")  # the log's store breaks under the server
    connection.commit()
    connection.close()
    single = client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5"})
    assert single.status_code == 503 and "not served" in single.json()["error"]
    batch = client.post("/v1/decide/batch", json={"requests": [
        {"subject": "u-us", "model": "fable-5"}] * 3})
    assert batch.status_code == 503 and "decisions" not in batch.json()
    assert metric(client, "interlock_decision_log_refused_total") == 4
    assert metric(client, 'interlock_decisions_total{effect="allow"}') == 0


def test_best_effort_answers_and_counts_what_it_drops(serve: Serve, log_path: Path) -> None:
    client = logged(serve, log_path, decision_log_mode="best-effort", decision_log_queue=2)
    too_many = client.post("/v1/decide/batch", json={"requests": [
        {"subject": "u-us", "model": "fable-5"}] * 3})
    assert too_many.status_code == 200 and len(too_many.json()["decisions"]) == 3
    assert metric(client, 'interlock_decision_log_dropped_total{reason="queue_full"}') == 3
    connection = sqlite3.connect(log_path)
    connection.execute(f"DROP TABLE {TABLE}")
    connection.commit()
    connection.close()
    answer = client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5"})
    assert answer.status_code == 200 and answer.headers[ID_HEADER]
    client.app.state.service.decision_log.writer.close()  # waits for the write to fail
    assert metric(client, 'interlock_decision_log_dropped_total{reason="write_failed"}') == 1
    assert metric(client, "interlock_decision_log_written_total") == 0


def test_metrics_show_the_log_before_anything_is_dropped(serve: Serve, log_path: Path) -> None:
    client = logged(serve, log_path, decision_log_mode="best-effort")
    for reason in ("queue_full", "write_failed", "stopped"):
        assert metric(client, f'interlock_decision_log_dropped_total{{reason="{reason}"}}') == 0
    assert metric(client, "interlock_decision_log_queued") == 0


def test_an_empty_batch_logs_nothing(serve: Serve, log_path: Path) -> None:
    client = logged(serve, log_path)
    answer = client.post("/v1/decide/batch", json={"requests": []})
    assert answer.status_code == 200 and answer.json() == {"decisions": []}
    assert metric(client, "interlock_decision_log_written_total") == 0

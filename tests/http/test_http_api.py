"""Every endpoint, without authentication: decisions, commands, compliance queries, operations."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import orjson
from fastapi.testclient import TestClient

from domain.decision import Decision, Reason
from interlock.http.decide import DecisionJSON

from .http_support import AFTER_ORDER, BEFORE_ORDER, ORDER, SETUP


def test_decide_answers_the_normative_decision_json(client: TestClient) -> None:
    client.post("/v1/commands", json=ORDER)
    answer = client.post("/v1/decide", json={"subject": "u-anon", "model": "fable-5",
                                             "at": "2026-11-26T17:25:00-05:00"})
    assert answer.status_code == 200
    assert answer.json() == {
        "subject": "u-anon", "model": "fable-5", "effect": "deny", "route_to": None,
        "disclosed": False,
        "reasons": [{"code": "directive", "ref": "bis-2026-0417"},
                    {"code": "unknown_attribute", "ref": "citizenship"}],
        "at": "2026-11-26T22:25:00+00:00", "as_of": len(SETUP) + 3 + 1,
    }


def test_decide_allows_and_carries_as_of(client: TestClient) -> None:
    position = client.get("/v1/position").json()["position"]
    answer = client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5"}).json()
    assert answer["effect"] == "allow"
    assert answer["reasons"] == [{"code": "entitled", "ref": "e-acme"}]
    assert answer["as_of"] == position


def test_decide_as_of_an_earlier_position_answers_as_known_then(client: TestClient) -> None:
    before = client.get("/v1/position").json()["position"]
    client.post("/v1/commands", json=ORDER)
    then = client.post("/v1/decide", json={"subject": "u-de", "model": "fable-5",
                                           "at": AFTER_ORDER, "as_of": before}).json()
    now = client.post("/v1/decide", json={"subject": "u-de", "model": "fable-5",
                                          "at": AFTER_ORDER}).json()
    assert (then["effect"], then["as_of"]) == ("allow", before)
    assert now["effect"] == "deny"


def test_decide_refuses_malformed_requests_naming_the_field(client: TestClient) -> None:
    no_offset = client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5",
                                                "at": "2026-11-26T17:25:00"})
    assert no_offset.status_code == 422
    assert no_offset.json()["field"] == "at"
    assert "offset" in no_offset.json()["error"]
    unknown = client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5", "x": 1})
    assert (unknown.status_code, unknown.json()["field"]) == (422, "x")
    broken = client.post("/v1/decide", content=b"{not json")
    assert broken.status_code == 422


def test_batch_answers_in_order_at_one_position(client: TestClient) -> None:
    client.post("/v1/commands", json=ORDER)
    requests = [{"subject": s, "model": m, "at": AFTER_ORDER}
                for s in ("u-us", "u-de", "u-anon") for m in ("fable-5", "opus-4.8")]
    answer = client.post("/v1/decide/batch", json={"requests": requests})
    assert answer.status_code == 200
    decisions = answer.json()["decisions"]
    assert [(d["subject"], d["model"]) for d in decisions] == [
        (r["subject"], r["model"]) for r in requests
    ]
    assert [d["effect"] for d in decisions] == ["allow", "allow", "deny", "allow", "deny",
                                                "allow"]
    assert len({d["as_of"] for d in decisions}) == 1
    single = client.post("/v1/decide", json=requests[2]).json()
    assert decisions[2] == single


def test_batch_refuses_a_bad_item_naming_its_index(client: TestClient) -> None:
    answer = client.post("/v1/decide/batch", json={"requests": [
        {"subject": "u-us", "model": "fable-5"},
        {"subject": "u-us", "model": "fable-5", "known_at": "yesterday"},
    ]})
    assert answer.status_code == 422
    assert answer.json()["index"] == 1
    assert answer.json()["field"] == "requests.1.known_at"
    assert client.post("/v1/decide/batch", json={"requests": []}).json() == {"decisions": []}


def test_fast_encoding_equals_the_normative_to_json() -> None:
    moments = [datetime(2026, 11, 26, 22, 21, tzinfo=UTC), datetime.now(UTC),
               datetime(2026, 11, 26, 17, 21, tzinfo=timezone(timedelta(hours=-5)))]
    shared = (Reason("directive", "bis"), Reason("unknown_attribute", "citizenship"))
    decisions = [
        Decision("u-1", "fable-5", "deny", None, False, shared, moments[0], 17),
        Decision("u-2", "fable-5", "deny", None, False, shared, moments[0], 17),
        Decision("u-2", "fable-5", "route", "opus-4.8", True, (Reason("route", "r-1"),),
                 moments[1], 0),
        Decision("u-3", "x", "deny", None, False, (Reason("unknown_model"),), moments[2], 3),
        Decision("u-4", "fable-5", "deny", None, False, shared, moments[1], 18),
    ]
    encode = DecisionJSON(max_cached=2)
    for _ in range(2):
        assert orjson.dumps(encode.many(decisions)) == orjson.dumps(
            [decision.to_json() for decision in decisions]
        )


def test_commands_apply_one_or_a_list_and_answer_the_position(client: TestClient) -> None:
    start = client.get("/v1/position").json()["position"]
    one = client.post("/v1/commands", json={"type": "register_model", "model": "mythos-5",
                                            "family": "mythos"})
    assert one.status_code == 200
    assert one.json() == {"applied": 1, "repeated": 0, "position": start + 1}
    many = client.post("/v1/commands", json={"commands": [
        {"type": "register_model", "model": "m-1", "family": "m"},
        {"type": "register_model", "model": "m-2", "family": "m"},
    ]})
    assert many.json() == {"applied": 2, "repeated": 0, "position": start + 3}
    assert client.post("/v1/commands", json={"commands": []}).json() == {
        "applied": 0, "repeated": 0, "position": start + 3
    }


def test_a_bad_command_stops_the_list_keeping_the_ones_before_it(client: TestClient) -> None:
    start = client.get("/v1/position").json()["position"]
    answer = client.post("/v1/commands", json={"commands": [
        {"type": "register_model", "model": "m-1", "family": "m"},
        {"type": "revoke_entitlement", "entitlement": "no-such-thing"},
        {"type": "register_model", "model": "m-2", "family": "m"},
    ]})
    assert answer.status_code == 422
    body = answer.json()
    assert (body["index"], body["field"], body["applied"], body["position"]) == (
        1, "entitlement", 1, start + 1
    )
    assert "unknown entitlement" in body["error"]
    assert client.get("/v1/position").json()["position"] == start + 1
    kept = client.post("/v1/decide", json={"subject": "u-us", "model": "m-1"}).json()
    assert kept["effect"] == "allow"
    dropped = client.post("/v1/decide", json={"subject": "u-us", "model": "m-2"}).json()
    assert dropped["reasons"] == [{"code": "unknown_model", "ref": None}]


def test_malformed_commands_are_refused_naming_the_field(client: TestClient) -> None:
    start = client.get("/v1/position").json()["position"]
    cases = [
        ({"type": "attest_location", "subject": "u-1", "country": "FR", "source": "geo",
          "valid_from": "2026-01-01T00:00:00"}, "valid_from"),
        ({"type": "launch_missiles"}, "type"),
        ({"commands": "all of them"}, "commands"),
        ({"commands": [], "dry_run": True}, "dry_run"),
    ]
    for document, field in cases:
        answer = client.post("/v1/commands", json=document)
        assert answer.status_code == 422, document
        assert answer.json()["field"] == field
    assert client.post("/v1/commands", content=b"[1, 2").status_code == 422
    assert client.get("/v1/position").json()["position"] == start


def test_a_repeated_command_id_is_applied_once(client: TestClient) -> None:
    command = {"type": "register_model", "model": "m-1", "family": "m", "command_id": "c-1"}
    first = client.post("/v1/commands", json=command).json()
    again = client.post("/v1/commands", json=command).json()
    assert first["applied"] == 1
    assert again == {"applied": 0, "repeated": 1, "position": first["position"]}


def test_position_names_store_index_and_kill_switch(client: TestClient) -> None:
    assert client.get("/v1/position").json() == {
        "position": len(SETUP) + 3, "index_position": len(SETUP) + 3,
        "enforced_position": len(SETUP) + 3,
    }
    assert f"interlock_enforced_position {len(SETUP) + 3}.0" in client.get("/metrics").text


def test_history_lists_facts_with_times_and_positions(client: TestClient) -> None:
    client.post("/v1/commands", json=ORDER)
    client.post("/v1/commands", json={"type": "revoke_attestation", "subject": "u-de",
                                      "kind": "nationality",
                                      "effective_at": "2026-12-01T00:00:00Z"})
    answer = client.get("/v1/subjects/u-de/history")
    assert answer.status_code == 200
    history = answer.json()
    assert [(a["kind"], a["values"]) for a in history["attestations"]] == [
        ("employer", {"employer": ["acme"]}),
        ("nationality", {"citizenship": ["DE"], "residency": []}),
    ]
    nationality = history["attestations"][1]
    assert nationality["valid_from"] == "1990-01-01T00:00:00+00:00"
    assert nationality["position"] > history["attestations"][0]["position"]
    assert nationality["recorded_at"].endswith("+00:00")
    assert [r["kind"] for r in history["revocations"]] == ["nationality"]
    assert history["revocations"][0]["effective_at"] == "2026-12-01T00:00:00+00:00"
    assert [e["entitlement"] for e in history["entitlements"]] == ["e-acme"]
    assert {d["model"]: d["effect"] for d in history["decisions"]} == {
        "fable-5": "deny", "opus-4.8": "allow"
    }
    only = client.get("/v1/subjects/u-de/history", params={"model": "opus-4.8"}).json()
    assert [d["model"] for d in only["decisions"]] == ["opus-4.8"]
    assert client.get("/v1/subjects/nobody/history").status_code == 404


def test_impact_names_the_pairs_the_directive_changed(client: TestClient) -> None:
    issued = client.post("/v1/commands", json=ORDER).json()["position"]
    answer = client.get("/v1/directives/bis-2026-0417/impact")
    assert answer.status_code == 200
    impact = answer.json()
    assert impact["position"] == issued
    assert impact["effective_at"] == "2026-11-26T22:21:00+00:00"
    assert impact["compared"]["models"] == ["fable-5"]
    assert impact["compared"]["subjects"] == 2, (
        "compared: u-us is a settled US citizen, out of reach")
    changed = {(c["subject"], c["model"]): (c["before"]["effect"], c["after"]["effect"])
               for c in impact["changes"]}
    assert changed == {("u-de", "fable-5"): ("allow", "deny"),
                       ("u-anon", "fable-5"): ("allow", "deny")}
    assert client.get("/v1/directives/nope/impact").status_code == 404


def test_diff_names_who_gained_and_lost_access(client: TestClient) -> None:
    client.post("/v1/commands", json=ORDER)
    client.post("/v1/commands", json={
        "type": "lift_directive", "directive": "bis-2026-0417",
        "effective_at": "2026-11-27T00:00:00Z"})
    lost = client.get("/v1/diff", params={"from": BEFORE_ORDER, "to": AFTER_ORDER}).json()
    assert lost["from"] == BEFORE_ORDER and lost["to"] == AFTER_ORDER
    assert {(c["subject"], c["model"]) for c in lost["lost"]} == {
        ("u-de", "fable-5"), ("u-anon", "fable-5")
    }
    assert lost["gained"] == []
    regained = client.get("/v1/diff", params={
        "from": AFTER_ORDER, "to": "2026-11-27T01:00:00Z", "model": "family:fable"}).json()
    assert regained["models"] == ["fable-5"]
    assert {c["subject"] for c in regained["gained"]} == {"u-de", "u-anon"}
    no_offset = client.get("/v1/diff", params={"from": "2026-11-26T00:00:00",
                                               "to": AFTER_ORDER})
    assert (no_offset.status_code, no_offset.json()["field"]) == (422, "from")
    assert client.get("/v1/diff", params={"to": AFTER_ORDER}).status_code == 422


def test_operations_endpoints(client: TestClient) -> None:
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["ready"] is True
    assert ready.json()["lag_positions"] == 0
    client.post("/v1/decide", json={"subject": "u-us", "model": "fable-5"})
    client.post("/v1/decide/batch", json={"requests": [{"subject": "nobody", "model": "x"}]})
    client.post("/v1/commands", json={"type": "launch_missiles"})
    metrics = client.get("/metrics")
    assert metrics.headers["content-type"].startswith("text/plain")
    text = metrics.text
    assert 'interlock_decisions_total{effect="allow"} 1.0' in text
    assert 'interlock_decisions_total{effect="deny"} 1.0' in text
    assert 'interlock_decide_latency_seconds_count{endpoint="decide"} 1.0' in text
    assert f"interlock_commands_applied_total {float(len(SETUP))}" in text
    assert "interlock_commands_rejected_total 1.0" in text
    assert "interlock_projection_lag_seconds" in text


def test_openapi_documents_every_route_and_docs_render(client: TestClient) -> None:
    document = client.get("/openapi.json").json()
    assert set(document["paths"]) == {
        "/v1/decide", "/v1/decide/batch", "/v1/commands", "/v1/subjects/{subject}/history",
        "/v1/directives/{directive}/impact", "/v1/diff", "/v1/position", "/healthz",
        "/readyz", "/metrics", "/v1/enforcement/stream", "/v1/decisions",
    }
    schemas = document["components"]["schemas"]
    for name in ("DecideIn", "BatchIn", "CommandsIn", "DecisionOut", "Predicate",
                 "IssueDirective"):
        assert name in schemas
    assert schemas["AllOf"]["required"] == ["all"]
    decide = document["paths"]["/v1/decide"]["post"]
    assert decide["security"] == [{"bearer": []}]
    assert set(decide["responses"]) >= {"200", "401", "403", "409", "422"}
    assert "bearer" in document["components"]["securitySchemes"]
    assert client.get("/docs").status_code == 200

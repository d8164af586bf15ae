"""The HTTP service attacked: every malformed, oversized or ambiguous request ends in a 4xx that
names what is wrong (never a 500), a refused list of commands still says what it applied, and
idle event streams can neither exhaust the server nor keep their slots after they leave."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from domain.limits import (
    MAX_BATCH_COMMANDS,
    MAX_DECISION_BATCH,
    MAX_REQUEST_BYTES,
    MAX_STREAM_CONNECTIONS,
)
from interlock.http import app as http_app
from interlock.http.app import create_app
from interlock.http.settings import ServeSettings
from tests.http.http_support import AFTER_ORDER, ORDER, SETUP
from tests.http.test_http_server import free_port

GOOD = {"type": "register_model", "model": "m-good", "family": "m"}
GOOD_JSON = json.dumps(GOOD).encode()
OUT_OF_RANGE = "9999-12-31T23:59:59-05:00"
"""Valid ISO-8601 with an offset, but past the last representable UTC time."""


def deep_predicate(depth: int) -> dict[str, Any]:
    predicate: dict[str, Any] = {"everyone": True}
    for _ in range(depth):
        predicate = {"not": predicate}
    return predicate


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def client(store: str) -> Iterator[TestClient]:
    """The app on SETUP; server errors come back as responses, so a 500 fails an assertion."""
    app = create_app(ServeSettings(store=store))
    with TestClient(app, raise_server_exceptions=False) as client:
        assert client.post("/v1/commands", json={"commands": SETUP}).status_code == 200
        yield client


def position(client: TestClient | httpx.Client) -> int:
    return client.get("/v1/position").json()["position"]


def metric(client: TestClient | httpx.Client, line_start: str) -> float:
    for line in client.get("/metrics").text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


# --- a refused command in a list ---------------------------------------------------------------

BAD_COMMANDS: list[tuple[str, bytes, str]] = [
    ("out-of-range time", json.dumps({"type": "withdraw_model", "model": "fable-5",
                                      "effective_at": OUT_OF_RANGE}).encode(), "effective_at"),
    ("deep predicate", json.dumps({**ORDER, "subjects": deep_predicate(300)}).encode(),
     "subjects"),
    ("string for a boolean", json.dumps({**ORDER, "disclose": "yes"}).encode(), "disclose"),
    ("string for a list", json.dumps({**ORDER, "models": "fable-5"}).encode(), "models"),
    ("three-letter country", json.dumps({"type": "attest_location", "subject": "u-us",
                                         "country": "DEU", "source": "geo",
                                         "valid_from": AFTER_ORDER}).encode(), "country"),
]
"""Commands the domain refuses: the ones before them in a list are kept."""
UNREADABLE: list[tuple[str, bytes, str]] = [
    ("repeated key", b'{"type": "register_model", "model": "m-a", "model": "m-b", '
                     b'"family": "m"}', "model"),
    ("invalid UTF-8", b'{"type": "register_model", "model": "m-\xff", "family": "m"}', "model"),
    ("unpaired surrogate", b'{"type": "register_model", "model": "m-\\ud800", "family": "m"}',
     "model"),
]
"""Commands that make the whole body ambiguous JSON: it is refused before any is applied."""


@pytest.mark.parametrize(("bad", "field", "kept"),
                         [(b, f, 1) for _, b, f in BAD_COMMANDS]
                         + [(b, f, 0) for _, b, f in UNREADABLE],
                         ids=[name for name, _, _ in [*BAD_COMMANDS, *UNREADABLE]])
def test_a_bad_command_after_a_good_one_is_422_with_what_was_applied(
    client: TestClient, bad: bytes, field: str, kept: int
) -> None:
    start = position(client)
    rejected = metric(client, "interlock_commands_rejected_total")
    answer = client.post("/v1/commands", content=b'{"commands": [%s, %s]}' % (GOOD_JSON, bad))
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert (body["index"], body["applied"], body["repeated"], body["position"]) == (
        1, kept, 0, start + kept)
    assert (body["field"] or "").split(".")[0] == field, body
    assert position(client) == start + kept, "nothing of the bad command is stored"
    assert metric(client, "interlock_commands_rejected_total") == rejected + 1
    assert metric(client, 'interlock_http_errors_total{status="422"}') >= 1


@pytest.mark.parametrize(("bad", "field"), [(b, f) for _, b, f in [*BAD_COMMANDS, *UNREADABLE]],
                         ids=[name for name, _, _ in [*BAD_COMMANDS, *UNREADABLE]])
def test_a_bad_command_alone_is_422_naming_the_field(
    client: TestClient, bad: bytes, field: str
) -> None:
    start = position(client)
    answer = client.post("/v1/commands", content=bad)
    assert answer.status_code == 422, answer.text
    assert (answer.json()["field"] or "").split(".")[0] == field, answer.text
    assert (answer.json()["applied"], answer.json()["position"]) == (0, start)


def test_a_reused_command_id_with_another_command_is_409_and_a_repeat_is_counted(
    client: TestClient,
) -> None:
    first = {"type": "register_model", "model": "m-1", "family": "m", "command_id": "c-1"}
    assert client.post("/v1/commands", json=first).json()["applied"] == 1
    start = position(client)
    repeat = client.post("/v1/commands", json={"commands": [GOOD, first]})
    assert repeat.json() == {"applied": 1, "repeated": 1, "position": start + 1}
    other = {"type": "register_model", "model": "m-2", "family": "m", "command_id": "c-1"}
    answer = client.post("/v1/commands", json={"commands": [
        {"type": "register_model", "model": "m-3", "family": "m"}, other]})
    assert answer.status_code == 409, answer.text
    body = answer.json()
    assert (body["field"], body["index"], body["applied"]) == ("command_id", 1, 1)
    assert "c-1" in body["error"]
    decision = client.post("/v1/decide", json={"subject": "u-us", "model": "m-2"}).json()
    assert decision["reasons"] == [{"code": "unknown_model", "ref": None}], "nothing stored"


def test_a_list_over_the_batch_limit_is_refused_whole(client: TestClient) -> None:
    start = position(client)
    commands = [{"type": "register_model", "model": f"m-{i}", "family": "m"}
                for i in range(MAX_BATCH_COMMANDS + 1)]
    answer = client.post("/v1/commands", json={"commands": commands})
    assert answer.status_code == 422
    assert (answer.json()["field"], answer.json()["applied"]) == ("commands", 0)
    assert position(client) == start


def test_a_command_over_the_command_limit_is_refused(client: TestClient) -> None:
    huge = {"type": "issue_directive", "directive": "d-huge", "received_at": AFTER_ORDER,
            "models": ["fable-5"], "subjects": {"everyone": True},
            "exempt": {"subjects": [f"s-{i:0190d}" for i in range(256)],
                       "orgs": [f"o-{i:0190d}" for i in range(256)]}}
    answer = client.post("/v1/commands", json={"commands": [GOOD, huge]})
    assert answer.status_code == 422, answer.text
    assert (answer.json()["index"], answer.json()["applied"]) == (1, 1)
    assert "limit" in answer.json()["error"]


# --- decision requests ----------------------------------------------------------------------

DECIDE_BODIES: list[tuple[str, bytes, str]] = [
    ("repeated key", b'{"subject": "u-us", "subject": "u-de", "model": "fable-5"}', "subject"),
    ("invalid UTF-8", b'{"subject": "u-\xff", "model": "fable-5"}', "subject"),
    ("unpaired surrogate", b'{"subject": "u-\\udc00", "model": "fable-5"}', "subject"),
    ("out-of-range time", b'{"subject": "u-us", "model": "fable-5", "at": "%s"}'
     % OUT_OF_RANGE.encode(), "at"),
    ("boolean for a position", b'{"subject": "u-us", "model": "fable-5", "as_of": true}',
     "as_of"),
    ("string for a position", b'{"subject": "u-us", "model": "fable-5", "min_position": "5"}',
     "min_position"),
    ("NaN", b'{"subject": "u-us", "model": "fable-5", "as_of": NaN}', "as_of"),
    ("nested past any parser", b"[" * 100_000, ""),
    ("three-letter country", b'{"subject": "u-us", "model": "fable-5", "location": "DEU"}',
     "location"),
]


@pytest.mark.parametrize(("body", "field"), [(b, f) for _, b, f in DECIDE_BODIES],
                         ids=[name for name, _, _ in DECIDE_BODIES])
def test_decide_refuses_each_malformed_request_naming_the_field(
    client: TestClient, body: bytes, field: str
) -> None:
    answer = client.post("/v1/decide", content=body)
    assert answer.status_code == 422, answer.text
    assert (answer.json()["field"] or "") == field


def test_a_batch_names_the_bad_item(client: TestClient) -> None:
    item = b'{"subject": "u-us", "model": "fable-5"}'
    body = b'{"requests": [%s, %s, %s, {"subject": "a", "subject": "b", "model": "m"}]}' % (
        item, item, item)
    answer = client.post("/v1/decide/batch", content=body)
    assert answer.status_code == 422
    assert (answer.json()["field"], answer.json()["index"]) == ("requests.3.subject", 3)


def test_a_batch_over_the_decision_limit_is_refused(client: TestClient) -> None:
    requests = [{"subject": "u-us", "model": "fable-5"}] * (MAX_DECISION_BATCH + 1)
    answer = client.post("/v1/decide/batch", json={"requests": requests})
    assert answer.status_code == 422
    assert answer.json()["field"] == "requests"


def test_audit_queries_refuse_out_of_range_times(client: TestClient) -> None:
    answer = client.get("/v1/diff", params={"from": OUT_OF_RANGE, "to": AFTER_ORDER})
    assert answer.status_code == 422
    assert answer.json()["field"] == "from"


# --- random and mutated bodies --------------------------------------------------------------

FIELD_NAMES = ["type", "model", "family", "subject", "subjects", "models", "effective_at",
               "received_at", "valid_from", "citizenships", "commands", "requests", "as_of",
               "min_position", "at", "known_at", "location", "directive", "exempt", "not",
               "all", "any", "citizenship", "any_of", "none_of", "disclose", "command_id"]
NASTY = st.sampled_from([
    OUT_OF_RANGE, "0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00", "1795734060", 1795734060,
    deep_predicate(300), {"citizenship": {"any_of": ["DEU"]}}, "DEU", "xx", "[/]", "\u202e",
    "a\u200bb", "\x00", "yes", 1, True, None, 1e308, 2**64, -1, [], {}, "", " ", "x" * 2000,
])
"""Values that have broken parsers, validators or encoders before."""
JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=20) | NASTY,
    lambda children: st.lists(children, max_size=5)
    | st.dictionaries(st.sampled_from(FIELD_NAMES) | st.text(max_size=5), children, max_size=6),
    max_leaves=30,
)
VALID = [*SETUP, ORDER, {"subject": "u-us", "model": "fable-5", "at": AFTER_ORDER}]


@st.composite
def bodies(draw: st.DrawFn) -> bytes:
    """Random bytes, random JSON, or a valid document with one field replaced (most often by
    a nasty value) or one byte changed."""
    kind = draw(st.sampled_from(["bytes", "json", "field", "field", "field", "byte"]))
    if kind == "bytes":
        return draw(st.binary(max_size=200))
    if kind == "json":
        return json.dumps(draw(JSON_VALUES)).encode()
    document = dict(draw(st.sampled_from(VALID)))
    if kind == "field":
        field = draw(st.sampled_from(list(document)) | st.sampled_from(FIELD_NAMES))
        document[field] = draw(NASTY | JSON_VALUES)
        return json.dumps(document).encode()
    data = bytearray(json.dumps(document).encode())
    data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    return bytes(data)


@given(body=bodies(), route=st.sampled_from(["/v1/decide", "/v1/decide/batch", "/v1/commands"]),
       wrap=st.booleans())
@settings(max_examples=300, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
def test_no_malformed_body_gets_a_server_error(
    client: TestClient, body: bytes, route: str, wrap: bool
) -> None:
    if wrap:  # inside the list a route takes, to reach the per-item checks
        key = b"requests" if route == "/v1/decide/batch" else b"commands"
        body = b'{"%s": [%s]}' % (key, body)
    answer = client.post(route, content=body)
    assert answer.status_code < 500, (body, answer.text)
    if answer.status_code >= 400:
        assert answer.json()["error"]


# --- against a real server: body bounds and event streams -----------------------------------

@pytest.fixture
def server(store: str) -> Iterator[str]:
    """The app on a real uvicorn (in a thread) with SETUP applied."""
    app = create_app(ServeSettings(store=store))
    port = free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                            log_level="error"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not running.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    url = f"http://127.0.0.1:{port}"
    assert httpx.post(f"{url}/v1/commands", json={"commands": SETUP}).status_code == 200
    yield url
    running.should_exit = True
    thread.join(timeout=20)


@pytest.mark.parametrize("route", ["/v1/commands", "/v1/decide", "/v1/decide/batch"])
def test_a_body_over_the_limit_is_refused_declared_or_chunked(server: str, route: str) -> None:
    oversized = b" " * (MAX_REQUEST_BYTES + 1)

    def chunked() -> Iterator[bytes]:
        for start in range(0, len(oversized), 64 * 1024):
            yield oversized[start:start + 64 * 1024]

    with httpx.Client(base_url=server, timeout=30) as client:
        before = position(client)
        for content in (oversized, chunked()):
            answer = client.post(route, content=content)
            assert answer.status_code == 413, answer.text
            assert f"{MAX_REQUEST_BYTES:,} bytes" in answer.json()["error"]
        assert metric(client, 'interlock_http_errors_total{status="413"}') == 2
        assert position(client) == before
        fits = client.post("/v1/commands", content=GOOD_JSON + b" " * 1000)
        assert fits.status_code == 200


def open_streams(stack: ExitStack, client: httpx.Client, count: int) -> list[httpx.Response]:
    return [stack.enter_context(client.stream("GET", "/v1/enforcement/stream"))
            for _ in range(count)]


def slots_released(client: httpx.Client) -> None:
    deadline = time.monotonic() + 20
    while metric(client, "interlock_enforcement_streams") != 0:
        assert time.monotonic() < deadline, "stream slots were not given back"
        time.sleep(0.05)


def test_streams_are_capped_and_give_their_slots_back(server: str) -> None:
    limits = httpx.Limits(max_connections=MAX_STREAM_CONNECTIONS + 20)
    with httpx.Client(base_url=server, timeout=5, limits=limits) as probe:
        for _ in range(2):  # the second round finds every slot of the first given back
            with ExitStack() as stack, httpx.Client(base_url=server, timeout=5,
                                                     limits=limits) as streams:
                answers = open_streams(stack, streams, MAX_STREAM_CONNECTIONS + 10)
                statuses = [answer.status_code for answer in answers]
                assert statuses.count(200) == MAX_STREAM_CONNECTIONS
                assert statuses.count(503) == 10
                refused = next(a for a in answers if a.status_code == 503)
                assert refused.headers["Retry-After"].isdigit()
                assert metric(probe, "interlock_enforcement_streams") == MAX_STREAM_CONNECTIONS
                assert probe.get("/healthz").status_code == 200
                assert probe.get("/readyz").status_code == 200
                decision = probe.post("/v1/decide", json={"subject": "u-de", "model": "fable-5"})
                assert decision.json()["effect"] == "allow"
            slots_released(probe)
        assert metric(probe, 'interlock_http_errors_total{status="503"}') == 20


def test_open_streams_take_no_thread_from_the_pool(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More open streams than the thread pool has threads (40): routes that run in the pool
    (position, history) still answer, as do health and decisions."""
    monkeypatch.setattr(http_app, "MAX_STREAM_CONNECTIONS", 60)
    app = create_app(ServeSettings(store=store))
    port = free_port()
    running = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                            log_level="error"))
    thread = threading.Thread(target=running.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 20
        while not running.started:
            assert time.monotonic() < deadline, "server did not start"
            time.sleep(0.05)
        limits = httpx.Limits(max_connections=80)
        with ExitStack() as stack, httpx.Client(base_url=url, timeout=5, limits=limits) as c:
            assert c.post("/v1/commands", json={"commands": SETUP}).status_code == 200
            answers = open_streams(stack, c, 50)
            assert {answer.status_code for answer in answers} == {200}
            with httpx.Client(base_url=url, timeout=5) as probe:
                assert probe.get("/healthz").status_code == 200
                assert probe.get("/v1/position").status_code == 200
                assert probe.get("/v1/subjects/u-de/history").status_code == 200
                assert probe.post("/v1/commands", json=ORDER).status_code == 200
                decision = probe.post("/v1/decide", json={"subject": "u-de", "model": "fable-5",
                                                          "at": AFTER_ORDER})
                assert decision.json()["effect"] == "deny"
    finally:
        running.should_exit = True
        thread.join(timeout=20)


def test_a_write_onto_a_rewritten_log_is_503_and_stores_nothing(
    client: TestClient, store: str
) -> None:
    """A row slipped into the events table is not chained over by the next write: HTTP says
    so (not a 500), like `interlock apply`."""
    start = position(client)
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        db.execute("INSERT INTO stored_events (originator_id, originator_version, topic, state)"
                   " SELECT originator_id, originator_version + 1000, topic, state"
                   " FROM stored_events ORDER BY rowid DESC LIMIT 1")
    answer = client.post("/v1/commands", json={"type": "register_model", "model": "haiku-9",
                                               "family": "haiku"})
    assert answer.status_code == 503, answer.text
    assert answer.json()["error"].startswith("write refused"), answer.text
    assert (answer.json()["applied"], answer.json()["position"]) == (0, start)
    with sqlite3.connect(store.removeprefix("sqlite:///")) as db:
        assert db.execute("SELECT count(*) FROM stored_events WHERE topic LIKE '%Registered'"
                          " AND state LIKE '%haiku-9%'").fetchone() == (0,)

"""Gateways without Kafka follow revocations as server-sent events from a real server."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import uvicorn

from interlock.http.app import create_app
from interlock.http.settings import ServeSettings

from .http_support import ORDER, SETUP
from .test_http_server import free_port


@pytest.fixture
def base_url(tmp_path: Path) -> Iterator[str]:
    app = create_app(ServeSettings(store=f"sqlite:///{tmp_path / 'store.db'}"))
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="error"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.05)
    yield url
    server.should_exit = True
    thread.join(timeout=20)


def events(lines: Iterator[str]) -> Iterator[dict[str, str]]:
    """Parses a server-sent event stream into {id, event, data} dicts (comments skipped)."""
    current: dict[str, str] = {}
    for line in lines:
        if not line:
            if current:
                yield current
            current = {}
        elif not line.startswith(":"):
            field, _, value = line.partition(": ")
            current[field] = value


def test_the_stream_delivers_a_revocation_within_a_second_of_the_order(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        assert client.post("/v1/commands", json={"commands": SETUP}).status_code == 200
        with client.stream("GET", "/v1/enforcement/stream", params={"heartbeat": 0.5}) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            ordered = time.monotonic()
            answer = client.post("/v1/commands", json=ORDER).json()
            received = {}
            for event in events(stream.iter_lines()):  # packed: a record lists its subjects
                received.update(dict.fromkeys(json.loads(event["data"])["subjects"], event))
                if len(received) == 2:
                    break
            elapsed = time.monotonic() - ordered
    assert set(received) == {"u-de", "u-anon"}, "foreign national and unknown nationality"
    record = json.loads(received["u-de"]["data"])
    assert received["u-de"]["event"] == "access_revoked"
    assert record["model"] == "fable-5" and record["position"] == answer["position"]
    assert record["reasons"] == [{"code": "directive", "ref": "bis-2026-0417"}]
    assert elapsed < 1.0


def test_a_client_resumes_after_the_last_event_it_saw(base_url: str) -> None:
    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.post("/v1/commands", json={"commands": SETUP})
        with client.stream("GET", "/v1/enforcement/stream", params={"after": 0}) as stream:
            client.post("/v1/commands", json=ORDER)
            first = next(events(stream.iter_lines()))
        with client.stream("GET", "/v1/enforcement/stream",
                           headers={"Last-Event-ID": first["id"]}) as stream:
            second = next(events(stream.iter_lines()))
    assert int(second["id"]) == int(first["id"]) + 1
    assert second["data"] != first["data"]


def test_the_stream_carries_the_packed_records_of_the_enforcement_topic(base_url: str) -> None:
    """One event per packed record: a verdict and the subjects it applies to, all of one
    partition of a 3-partition interlock.enforcement, its fields those of the Avro record."""
    from consumers.packing import ENFORCEMENT_PARTITIONS, Partitioner
    from schemas.codec import default_registry

    with httpx.Client(base_url=base_url, timeout=10) as client:
        client.post("/v1/commands", json={"commands": SETUP})
        with client.stream("GET", "/v1/enforcement/stream", params={"after": 0}) as stream:
            answer = client.post("/v1/commands", json=ORDER).json()
            found: list[dict] = []
            for event in events(stream.iter_lines()):
                data = json.loads(event["data"])
                assert event["event"] == data["type"]
                if data["position"] == answer["position"]:
                    found.append(data)
                if sum(len(d["subjects"]) for d in found) == 2:
                    break
    partition_of = Partitioner(ENFORCEMENT_PARTITIONS)
    fields = {f["name"] for f in default_registry().current("access_revoked").schema["fields"]}
    for data in found:
        assert set(data) == fields | {"type"}
        assert data["subject"] == data["subjects"][0]
        assert len({partition_of(s) for s in data["subjects"]}) == 1
    assert sorted(s for d in found for s in d["subjects"]) == ["u-anon", "u-de"]

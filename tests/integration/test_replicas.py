"""Scale out for real: two decision replicas following `interlock.events`, the relay and the
enforcer, as separate processes on PostgreSQL and Kafka. An order recorded through one replica
is enforced by both within a second, and losing one replica leaves the other serving."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from consumers.kafka import Topics, ensure_topics
from domain.commands import parse_command
from interlock.demo import ORDER_COMMAND, synthetic_population
from interlock.engine import open_engine

from ..http.test_http_server import free_port

pytestmark = [pytest.mark.kafka, pytest.mark.postgres]

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


@pytest.fixture
def deployment(kafka_bootstrap: str, fresh_postgres_db: str) -> Iterator[dict]:
    prefix = f"rep{uuid.uuid4().hex[:6]}."
    ensure_topics(kafka_bootstrap, Topics.prefixed(prefix))
    engine = open_engine(fresh_postgres_db, catch_up=False)
    engine.app.apply_all(parse_command(c) for c in synthetic_population(200).commands)
    engine.close()
    common = ["--kafka", kafka_bootstrap, "--topic-prefix", prefix]
    processes: dict[str, subprocess.Popen[bytes]] = {
        "relay": subprocess.Popen([INTERLOCK, "relay", *common, "--store", fresh_postgres_db]),
        "enforce": subprocess.Popen([INTERLOCK, "enforce", *common]),
    }
    urls = []
    for name in ("replica-1", "replica-2"):
        port = free_port()
        processes[name] = subprocess.Popen([
            INTERLOCK, "serve", "--follow", "kafka", "--port", str(port), *common,
            "--store", fresh_postgres_db,
        ])
        urls.append(f"http://127.0.0.1:{port}")
    try:
        for url in urls:
            wait_ready(url)
        yield {"urls": urls, "processes": processes}
    finally:
        for process in processes.values():
            process.terminate()
        for process in processes.values():
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()


def wait_ready(url: str, timeout: float = 90.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"{url}/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    pytest.fail(f"{url} not ready after {timeout}s")


def effect(url: str, subject: str, model: str) -> str:
    answer = httpx.post(f"{url}/v1/decide", json={"subject": subject, "model": model},
                        timeout=5)
    assert answer.status_code == 200, answer.text
    return answer.json()["effect"]


def test_both_replicas_enforce_an_order_recorded_through_one(deployment: dict) -> None:
    first, second = deployment["urls"]
    foreign = next(
        c["subject"] for c in synthetic_population(200).commands
        if c["type"] == "attest_nationality" and "US" not in c["citizenships"]
        and "US" not in c["residencies"]
        and effect(first, c["subject"], "fable-5") == "allow"
    )
    recorded = time.monotonic()
    answer = httpx.post(f"{first}/v1/commands", json=ORDER_COMMAND, timeout=10)
    assert answer.status_code == 200, answer.text
    waited = {}
    for url in (first, second):
        while effect(url, foreign, "fable-5") != "deny":
            assert time.monotonic() - recorded < 5, f"{url} still allows"
            time.sleep(0.02)
        waited[url] = time.monotonic() - recorded
    assert max(waited.values()) < 1.0, waited
    position = answer.json()["position"]
    for url in (first, second):
        decision = httpx.post(f"{url}/v1/decide", json={
            "subject": foreign, "model": "fable-5", "min_position": position}).json()
        assert decision["as_of"] >= position
        assert decision["reasons"][0] == {"code": "directive", "ref": ORDER_COMMAND["directive"]}

    deployment["processes"]["replica-1"].send_signal(signal.SIGKILL)
    deployment["processes"]["replica-1"].wait(timeout=10)
    assert effect(second, foreign, "fable-5") == "deny"
    assert effect(second, foreign, "opus-4.8") == "allow"

"""Read-your-writes (`min_position`, `as_of`) and failing closed when the index lags the store.

A lagging index is made real: the server's follower polls once an hour, and a second
application on the same SQLite file writes behind its back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable

import pytest
from fastapi.testclient import TestClient

from domain.commands import parse_command
from interlock.engine import open_engine
from interlock.http.freshness import Freshness
from projections.access_index import AccessIndex

from .conftest import Serve
from .http_support import AFTER_ORDER, BEFORE_ORDER, ORDER, SETUP

SLOW_FOLLOWER = {"follow_interval": 3600.0, "refresh_interval": 0.05, "max_lag_seconds": 0.3,
                 "wait_seconds": 0.3}


@pytest.fixture
def lagging(serve: Serve) -> TestClient:
    client = serve(**SLOW_FOLLOWER)
    answer = client.post("/v1/commands", json={"commands": [*SETUP, ORDER]})
    assert answer.status_code == 200
    return client


def write_behind(store: str, *commands: dict) -> int:
    """Applies commands through another application on the same store; the new position."""
    engine = open_engine(store, catch_up=False)
    try:
        return engine.app.apply_all(parse_command(c) for c in commands).position
    finally:
        engine.close()


def wait_for(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def decide(client: TestClient, subject: str, model: str, **more: object) -> dict:
    answer = client.post("/v1/decide", json={"subject": subject, "model": model, **more})
    assert answer.status_code == 200, answer.text
    return answer.json()


def test_a_position_not_reached_in_time_answers_409(lagging: TestClient) -> None:
    position = lagging.get("/v1/position").json()["position"]
    started = time.monotonic()
    answer = lagging.post("/v1/decide", json={"subject": "u-us", "model": "fable-5",
                                              "min_position": position + 5})
    assert time.monotonic() - started >= 0.3
    assert answer.status_code == 409
    assert answer.json()["position"] == position
    assert answer.json()["required"] == position + 5
    assert answer.json()["field"] == "min_position"
    beyond = lagging.post("/v1/decide", json={"subject": "u-us", "model": "fable-5",
                                              "as_of": position + 1})
    assert beyond.status_code == 409
    batch = lagging.post("/v1/decide/batch", json={"requests": [
        {"subject": "u-us", "model": "fable-5"},
        {"subject": "u-us", "model": "fable-5", "min_position": position + 1},
    ]})
    assert batch.status_code == 409


def test_min_position_catches_up_to_a_write_made_elsewhere(
    lagging: TestClient, store: str
) -> None:
    written = write_behind(store, {"type": "attest_nationality", "subject": "u-anon",
                                   "citizenships": ["US"], "valid_from": "1990-01-01T00:00:00Z",
                                   "source": "passport-kyc"})
    stale = decide(lagging, "u-anon", "fable-5", at=AFTER_ORDER)
    assert stale["as_of"] < written
    fresh = decide(lagging, "u-anon", "fable-5", at=AFTER_ORDER, min_position=written)
    assert fresh["as_of"] >= written
    assert fresh["effect"] == "allow"


def test_a_lagging_index_fails_closed_for_directive_scoped_models(
    lagging: TestClient, store: str
) -> None:
    assert lagging.get("/readyz").status_code == 200
    known = lagging.get("/v1/position").json()["position"]
    written = write_behind(store, {"type": "attest_location", "subject": "u-us",
                                   "country": "US", "source": "ip-geo"})
    wait_for(lambda: lagging.get("/readyz").status_code == 503)

    ready = lagging.get("/readyz").json()
    assert ready["ready"] is False
    assert (ready["index_position"], ready["store_position"]) == (known, written)
    assert ready["lag_positions"] == written - known
    assert ready["lag_seconds"] > 0.3
    scoped = decide(lagging, "u-us", "fable-5", at=AFTER_ORDER)
    assert (scoped["effect"], scoped["reasons"]) == (
        "deny", [{"code": "stale_index", "ref": None}]
    )
    assert scoped["as_of"] == known
    assert decide(lagging, "u-us", "opus-4.8", at=AFTER_ORDER)["effect"] == "allow"
    before_the_order = decide(lagging, "u-us", "fable-5", at=BEFORE_ORDER)
    assert before_the_order["effect"] == "allow"
    as_known_then = decide(lagging, "u-us", "fable-5", at=AFTER_ORDER, as_of=known - 1)
    assert as_known_then["effect"] == "allow"
    batch = lagging.post("/v1/decide/batch", json={"requests": [
        {"subject": "u-us", "model": "fable-5", "at": AFTER_ORDER},
        {"subject": "u-us", "model": "opus-4.8", "at": AFTER_ORDER},
    ]}).json()["decisions"]
    assert [d["effect"] for d in batch] == ["deny", "allow"]
    assert batch[0]["reasons"] == [{"code": "stale_index", "ref": None}]
    metrics = lagging.get("/metrics").text
    assert f"interlock_projection_lag_positions {float(written - known)}" in metrics
    lag = re.search(r"^interlock_projection_lag_seconds (\S+)$", metrics, re.MULTILINE)
    assert lag is not None and float(lag.group(1)) > 0.3

    caught_up = decide(lagging, "u-us", "fable-5", at=AFTER_ORDER, min_position=written)
    assert (caught_up["effect"], caught_up["as_of"]) == ("allow", written)
    assert lagging.get("/readyz").status_code == 200


def test_an_unreadable_store_counts_as_stale_once_the_bound_passes() -> None:
    now = [0.0]
    failing = [False]

    def store_position() -> int:
        if failing[0]:
            raise OSError("store unreachable")
        return 0

    freshness = Freshness(AccessIndex(), store_position, 1.0, clock=lambda: now[0])
    freshness.refresh()
    assert not freshness.stale()
    failing[0] = True
    now[0] = 0.9
    freshness.refresh()
    assert not freshness.stale()
    now[0] = 1.2
    assert freshness.stale()
    assert freshness.lag().store_checked_seconds_ago == pytest.approx(1.2)
    failing[0] = False
    freshness.refresh()
    assert not freshness.stale()

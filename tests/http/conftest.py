"""Fixtures: the HTTP service on a real SQLite store, driven through FastAPI's TestClient.

`serve(...)` builds the app from `ServeSettings` as `interlock serve` does and runs its lifespan
(follower and refresher threads included).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from interlock.http.app import create_app
from interlock.http.settings import ServeSettings
from interlock.signing import public_key_b64

from .http_support import SETUP

Serve = Callable[..., TestClient]


@pytest.fixture
def store(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'store.db'}"


@pytest.fixture
def serve(store: str) -> Iterator[Serve]:
    """Starts apps on `store` (settings as keyword arguments); all stop after the test."""
    with ExitStack() as stack:

        def start(**settings: Any) -> TestClient:
            app = create_app(ServeSettings(store=store, **settings))
            return stack.enter_context(TestClient(app))

        yield start


@pytest.fixture
def client(serve: Serve) -> TestClient:
    """No tokens, no officer keys, SETUP applied."""
    client = serve()
    assert client.post("/v1/commands", json={"commands": SETUP}).status_code == 200
    return client


@pytest.fixture(scope="session")
def officer_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture(scope="session")
def officer_keys(officer_key: Ed25519PrivateKey) -> dict[str, str]:
    return {"officer-1": public_key_b64(officer_key)}

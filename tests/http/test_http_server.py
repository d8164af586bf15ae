"""`interlock serve` as operators run it: a real uvicorn with two worker processes on a free
loopback port, configured from files. Each worker has its own index, so read-your-writes
across them goes through `min_position`."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from .http_support import AFTER_ORDER, ORDER, SETUP, TOKEN_TABLE, bearer, signed

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def server(tmp_path: Path, officer_keys: dict[str, str]) -> Iterator[str]:
    tokens = tmp_path / "tokens.json"
    tokens.write_text(json.dumps(TOKEN_TABLE))
    keys = tmp_path / "officers.json"
    keys.write_text(json.dumps(officer_keys))
    port = free_port()
    process = subprocess.Popen(
        [INTERLOCK, "serve", "--port", str(port), "--workers", "2", "--tokens", str(tokens),
         "--officer-keys", str(keys), "--store", f"sqlite:///{tmp_path / 'store.db'}"],
        stderr=subprocess.PIPE, text=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, process.stderr.read() if process.stderr else ""
            try:
                if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "serve did not become ready"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        process.wait(timeout=30)
        if process.stderr is not None:
            process.stderr.close()


def test_serve_reads_its_own_writes_across_workers(
    server: str, officer_key: Ed25519PrivateKey
) -> None:
    with httpx.Client(base_url=server, timeout=10) as client:
        commands = {"commands": [*SETUP, signed(ORDER, officer_key)]}
        assert client.post("/v1/commands", json=commands).status_code == 401
        applied = client.post("/v1/commands", json=commands, headers=bearer("officer"))
        assert applied.status_code == 200, applied.text
        position = applied.json()["position"]
        ask = {"subject": "u-de", "model": "fable-5", "at": AFTER_ORDER,
               "min_position": position}
        for _ in range(8):  # connections land on either worker
            with httpx.Client(base_url=server, timeout=10) as fresh:
                decision = fresh.post("/v1/decide", json=ask, headers=bearer("decide")).json()
            assert decision["as_of"] >= position
            assert decision["reasons"] == [{"code": "directive", "ref": "bis-2026-0417"}]
        unsigned = client.post("/v1/commands", headers=bearer("officer"), json={
            **ORDER, "directive": "other-order"})
        assert (unsigned.status_code, unsigned.json()["field"]) == (422, "signature")
        assert client.get("/metrics").status_code == 200

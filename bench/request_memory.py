# ruff: noqa: E402
"""Peak memory of `interlock serve` while it refuses bodies over the request limit.

Starts `serve` on loopback over an empty SQLite store, then posts a 50 MB decision batch three
ways: with its `Content-Length` declared, chunked, and chunked to POST /v1/commands. After each,
it prints the answer and the server's peak resident memory (VmHWM, from /proc), so that the
cost of a refused body can be read against MAX_REQUEST_BYTES.

    .venv/bin/python bench/request_memory.py
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's directory comes first on sys.path, where bench/http.py would
# shadow the standard library's `http` for httpx.
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

import json
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator

import httpx

from domain.limits import MAX_REQUEST_BYTES

INTERLOCK = str(Path(sys.executable).with_name("interlock"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def peak_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError("no VmHWM in /proc (Linux only)")


def main() -> None:
    port = free_port()
    with tempfile.TemporaryDirectory() as directory:
        server = subprocess.Popen(
            [INTERLOCK, "serve", "--port", str(port), "--store",
             f"sqlite:///{directory}/store.db"], stderr=subprocess.DEVNULL)
        url = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    if httpx.get(f"{url}/healthz").status_code == 200:
                        break
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
            requests = [{"subject": f"u-{i:09d}", "model": "fable-5",
                         "at": "2026-11-26T22:30:00+00:00"} for i in range(600_000)]
            body = json.dumps({"requests": requests}).encode()

            def chunked() -> Iterator[bytes]:
                for start in range(0, len(body), 64 * 1024):
                    yield body[start:start + 64 * 1024]

            print(f"limit {MAX_REQUEST_BYTES / 2**20:.0f} MiB, body {len(body) / 2**20:.1f} MiB; "
                  f"server peak RSS at start {peak_mib(server.pid):.1f} MiB")
            for label, route, content in (
                ("declared", "/v1/decide/batch", body),
                ("chunked", "/v1/decide/batch", chunked()),
                ("chunked", "/v1/commands", chunked()),
            ):
                answer = httpx.post(url + route, content=content, timeout=120)
                print(f"{label:8} {route:17} {answer.status_code}  server peak RSS "
                      f"{peak_mib(server.pid):.1f} MiB")
        finally:
            server.terminate()
            server.wait(timeout=30)


if __name__ == "__main__":
    main()

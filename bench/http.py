# ruff: noqa: E402
"""HTTP decide benchmark: `interlock serve` on loopback over an embedded SQLite store holding the
demo population and the 5:21 p.m. order.

Single decisions: C keep-alive connections, each sending one POST /v1/decide after another
(closed loop), spread over P client processes; throughput and latency p50/p99 as the client
sees them. Batch: POST /v1/decide/batch with B requests per call over a few connections.

The client is a minimal HTTP/1.1 keep-alive client on asyncio streams (httpx costs far more
client CPU per request than the server spends), and the machine's cores are shared by server
and client, so the table reports both processes' CPU use: whichever is saturated bounds the
figure.

    .venv/bin/python bench/http.py                       # 1 and 2 workers, 10,000 subjects
    .venv/bin/python bench/http.py --workers 1 --seconds 10 --connections 32
    .venv/bin/python bench/http.py --workers "" --log-modes off,best-effort,strict

Then single decisions on 1 worker with the decision log off, best-effort and strict (an SQLite
log file beside the store), each as a ratio of the rate with it off (target ≥ 80%).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
# Run as a script, this file's directory comes first on sys.path, and this file would then
# shadow the standard library's `http` for every import below.
sys.path[:] = [str(HERE.parent), *(p for p in sys.path if Path(p or ".").resolve() != HERE)]

import argparse
import asyncio
import json
import multiprocessing
import os
import random
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from typing import Any

from domain.commands import parse_command
from interlock.demo import MODELS, ORDER_COMMAND, synthetic_population
from interlock.engine import open_engine

INTERLOCK = str(Path(sys.executable).with_name("interlock"))
SINGLE_TARGET = 5_000
P99_TARGET_MS = 10.0
BATCH_TARGET = 100_000
LOG_RATIO_TARGET = 0.80
TICKS = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def cpu_seconds(pids: list[int]) -> float:
    """User + system CPU of processes (Linux /proc), to see which side is saturated."""
    total = 0
    for pid in pids:
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / TICKS


def machine_busy() -> tuple[float, float]:
    """(busy, interrupt) CPU seconds of the whole machine so far, from /proc/stat; interrupt
    time (loopback traffic is mostly softirq work) belongs to no process."""
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    busy = sum(fields[:8]) - fields[3] - fields[4]
    return busy / TICKS, (fields[5] + fields[6]) / TICKS


def server_pids(root: int) -> list[int]:
    """The server process and its uvicorn worker processes."""
    pids = [root]
    for path in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = path.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[1]) == root:
            pids.append(int(path.parent.name))
    return pids


def build_store(path: Path, subjects: int) -> int:
    engine = open_engine(f"sqlite:///{path}", catch_up=False)
    try:
        population = synthetic_population(subjects)
        engine.app.apply_all(parse_command(c) for c in population.commands)
        return engine.app.apply(parse_command(ORDER_COMMAND)).position
    finally:
        engine.close()


class Server:
    def __init__(self, store: Path, workers: int, *options: str) -> None:
        self.port = free_port()
        self.process = subprocess.Popen(
            [INTERLOCK, "serve", "--store", f"sqlite:///{store}", "--port", str(self.port),
             "--workers", str(workers), *options],
            stderr=subprocess.DEVNULL,
        )
        self.wait_ready()

    def wait_ready(self, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status, _ = asyncio.run(_one(self.port, "GET", "/readyz", b""))
                if status == 200:
                    return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError("the server did not become ready")

    def cpu(self) -> float:
        return cpu_seconds(server_pids(self.process.pid))

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(timeout=30)


def _request(method: str, path: str, body: bytes) -> bytes:
    return (f"{method} {path} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode() + body


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    length = 0
    for line in head.split(b"\r\n"):
        if line[:15].lower() == b"content-length:":
            length = int(line[15:])
    return status, await reader.readexactly(length)


async def _one(port: int, method: str, path: str, body: bytes) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(_request(method, path, body))
        return await _read_response(reader)
    finally:
        writer.close()


@dataclass
class Load:
    port: int
    path: str
    bodies: list[bytes]
    connections: int
    warmup: float
    seconds: float


async def _drive(load: Load) -> tuple[int, list[float], int]:
    """(requests completed in the measured window, their latencies, non-200 answers)."""
    requests = [_request("POST", load.path, body) for body in load.bodies]
    latencies: list[float] = []
    errors = 0
    start = time.perf_counter() + load.warmup
    stop = start + load.seconds

    async def connection(seed: int) -> None:
        nonlocal errors
        rng = random.Random(seed)
        reader, writer = await asyncio.open_connection("127.0.0.1", load.port)
        try:
            while True:
                sent = time.perf_counter()
                if sent >= stop:
                    return
                writer.write(requests[rng.randrange(len(requests))])
                status, _ = await _read_response(reader)
                done = time.perf_counter()
                if sent >= start:
                    latencies.append(done - sent)
                    errors += status != 200
        finally:
            writer.close()

    await asyncio.gather(*(connection(n) for n in range(load.connections)))
    return len(latencies), latencies, errors


def _client(load: Load, results: Any) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    try:
        results.put(asyncio.run(_drive(load)))
    except Exception as error:  # reported by the parent, which would otherwise wait forever
        results.put(error)


@dataclass
class Figures:
    rate: float
    p50_ms: float
    p99_ms: float
    errors: int
    server_cpu: float
    client_cpu: float
    machine_cpu: float
    """Every process on the machine, this benchmark's and any other's, and the kernel."""
    interrupt_cpu: float


def measure(server: Server, load: Load, processes: int) -> Figures:
    """Runs `processes` client processes sharing `load.connections`; CPU is per wall second."""
    results: Any = multiprocessing.Queue()
    share = Load(load.port, load.path, load.bodies, max(1, load.connections // processes),
                 load.warmup, load.seconds)
    clients = [multiprocessing.Process(target=_client, args=(share, results))
               for _ in range(processes)]
    for client in clients:
        client.start()
    time.sleep(load.warmup)
    server_before = server.cpu()
    client_before = cpu_seconds([c.pid for c in clients if c.pid])
    machine_before, interrupt_before = machine_busy()
    time.sleep(load.seconds)
    server_after = server.cpu()
    client_after = cpu_seconds([c.pid for c in clients if c.pid])
    machine_after, interrupt_after = machine_busy()
    outcomes = [results.get(timeout=60) for _ in clients]
    for client in clients:
        client.join()
    for outcome in outcomes:
        if isinstance(outcome, Exception):
            raise RuntimeError("a client process failed") from outcome
    count = sum(o[0] for o in outcomes)
    latencies = sorted(lat for o in outcomes for lat in o[1])
    errors = sum(o[2] for o in outcomes)

    def quantile(q: float) -> float:
        return latencies[min(len(latencies) - 1, int(q * len(latencies)))] * 1000 if latencies \
            else float("nan")

    return Figures(count / load.seconds, quantile(0.5), quantile(0.99), errors,
                   (server_after - server_before) / load.seconds,
                   (client_after - client_before) / load.seconds,
                   (machine_after - machine_before) / load.seconds,
                   (interrupt_after - interrupt_before) / load.seconds)


def request_bodies(subjects: int, count: int = 4096) -> list[dict[str, str]]:
    rng = random.Random(7)
    return [{"subject": f"u-{rng.randrange(subjects):05d}", "model": rng.choice(list(MODELS))}
            for _ in range(count)]


def bound(figures: Figures, server_cores: float, client_processes: int) -> str:
    """Which side was saturated: the server's usable cores, the client's, or the machine
    (server, client and whatever else runs there share its cores)."""
    cores = os.cpu_count() or 1
    if figures.server_cpu >= 0.9 * server_cores:
        return "server CPU"
    if figures.client_cpu >= 0.9 * min(client_processes, cores):
        return "client CPU"
    if figures.machine_cpu >= 0.9 * cores:
        others = (figures.machine_cpu - figures.server_cpu - figures.client_cpu
                  - figures.interrupt_cpu)
        return f"machine ({others:.0%} other procs)" if others >= 0.1 else "machine CPU"
    return "latency (connections)"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subjects", type=int, default=10_000)
    parser.add_argument("--workers", default="1,2", help="server worker counts to compare")
    parser.add_argument("--connections", type=int, default=16)
    parser.add_argument("--clients", type=int, default=1, help="client processes")
    parser.add_argument("--batch", type=int, default=1000, help="requests per batch call")
    parser.add_argument("--batch-connections", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--warmup", type=float, default=1.0)
    parser.add_argument("--log-modes", default="off,best-effort,strict",
                        help="decision log modes compared on 1 worker ('' to skip)")
    parser.add_argument("--log-rounds", type=int, default=3,
                        help="turns each decision log mode takes")
    args = parser.parse_args()

    cores = os.cpu_count() or 1
    with tempfile.TemporaryDirectory() as directory:
        store = Path(directory) / "bench.db"
        started = time.perf_counter()
        position = build_store(store, args.subjects)
        print(f"store: {args.subjects:,} subjects, {position:,} events, built in "
              f"{time.perf_counter() - started:.1f} s; {cores} cores shared by server and client")
        singles = [json.dumps(b).encode() for b in request_bodies(args.subjects)]
        everyone = request_bodies(args.subjects, args.batch * 16)
        batches = [json.dumps({"requests": everyone[i:i + args.batch]}).encode()
                   for i in range(0, len(everyone), args.batch)]
        rows = []
        for workers in (int(w) for w in args.workers.split(",") if w):
            server = Server(store, workers)
            try:
                single = measure(server, Load(server.port, "/v1/decide", singles,
                                              args.connections, args.warmup, args.seconds),
                                 args.clients)
                batch = measure(server, Load(server.port, "/v1/decide/batch", batches,
                                             args.batch_connections, args.warmup, args.seconds),
                                1)
            finally:
                server.stop()
            server_cores = min(workers, cores)
            rows.append((
                f"decide, {workers} worker(s), {args.connections} conns", single.rate,
                SINGLE_TARGET, single, f"p50 {single.p50_ms:.2f} ms, p99 {single.p99_ms:.2f} ms "
                f"(target ≤ {P99_TARGET_MS:g})",
                single.rate >= SINGLE_TARGET and single.p99_ms <= P99_TARGET_MS,
                bound(single, server_cores, args.clients),
            ))
            rows.append((
                f"batch of {args.batch}, {workers} worker(s)", batch.rate * args.batch,
                BATCH_TARGET, batch, f"p50 {batch.p50_ms:.1f} ms per call",
                batch.rate * args.batch >= BATCH_TARGET, bound(batch, server_cores, 1),
            ))
        print()
        print(f"{'what':<34} {'decisions/s':>11} {'target':>8}  {'ok':<3} {'server':>6} "
              f"{'client':>6} {'irq':>5} {'machine':>7}  {'bound by':<28} latency")
        for what, rate, target, figures, latency, ok, limit in rows:
            errors = f", {figures.errors} errors" if figures.errors else ""
            print(f"{what:<34} {rate:>11,.0f} {target:>8,}  {'yes' if ok else 'NO':<3} "
                  f"{figures.server_cpu:>6.0%} {figures.client_cpu:>6.0%} "
                  f"{figures.interrupt_cpu:>5.0%} {figures.machine_cpu:>7.0%}  {limit:<28} "
                  f"{latency}{errors}")
        print(f"\nCPU per wall second (100% = one core; the machine has {cores}): server and "
              "client processes, interrupts (loopback traffic, charged to no process), the whole\n"
              "machine; what is left of it went to other processes. 'bound by': the first at "
              "≥ 90% of what it can use.")
        modes = [mode for mode in args.log_modes.split(",") if mode]
        if modes:
            compare_log_modes(store, Path(directory), singles, modes, args)


def compare_log_modes(store: Path, directory: Path, singles: list[bytes], modes: list[str],
                      args: argparse.Namespace) -> None:
    """Single decisions on 1 worker with the decision log off and on, in one run: the modes
    take turns for `--log-rounds` rounds (so that other load on the machine hits them alike),
    and each mode's median round is reported."""
    rounds: dict[str, list[Figures]] = {mode: [] for mode in modes}
    for turn in range(args.log_rounds):
        for mode in modes:
            options = () if mode == "off" else (
                "--decision-log", f"sqlite:///{directory / f'decisions-{mode}-{turn}.db'}",
                "--decision-log-mode", mode)
            server = Server(store, 1, *options)
            try:
                rounds[mode].append(measure(server, Load(
                    server.port, "/v1/decide", singles, args.connections, args.warmup,
                    args.seconds), args.clients))
            finally:
                server.stop()
    figures = {mode: sorted(found, key=lambda f: f.rate)[len(found) // 2]
               for mode, found in rounds.items()}
    base = figures.get("off")
    print(f"\ndecision log, 1 worker, {args.connections} conns, single decisions, median of "
          f"{args.log_rounds} round(s) (target: ≥ {LOG_RATIO_TARGET:.0%} of the rate with it off)")
    print(f"{'log':<12} {'decisions/s':>11} {'of off':>7}  {'ok':<3} {'server':>6} "
          f"{'client':>6} {'machine':>7}  {'latency':<30} every round")
    for mode, f in figures.items():
        ratio = f.rate / base.rate if base is not None and base.rate else float("nan")
        ok = "" if mode == "off" or base is None else (
            "yes" if ratio >= LOG_RATIO_TARGET else "NO")
        errors = f", {f.errors} errors" if f.errors else ""
        latency = f"p50 {f.p50_ms:.2f} ms, p99 {f.p99_ms:.2f} ms{errors}"
        every = ", ".join(f"{r.rate:,.0f}" for r in rounds[mode])
        print(f"{mode:<12} {f.rate:>11,.0f} {ratio:>7.0%}  {ok:<3} {f.server_cpu:>6.0%} "
              f"{f.client_cpu:>6.0%} {f.machine_cpu:>7.0%}  {latency:<30} {every}")

if __name__ == "__main__":
    main()

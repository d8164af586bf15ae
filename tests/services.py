"""Real Kafka and PostgreSQL for the tests that need them (README.md, "Tests").

Each service is found in this order, once per test session:

1. ``INTERLOCK_KAFKA`` (``host:port``) / ``INTERLOCK_POSTGRES`` (a ``postgresql://`` URL);
2. testcontainers, when a Docker engine answers (set ``INTERLOCK_TESTCONTAINERS=0`` to skip);
3. a local server this run starts itself with ``scripts/kafka-local.sh`` (Apache Kafka in KRaft
   mode from the Maven Central jars, needs Java 17+ and Maven or cached jars) or
   ``scripts/postgres-local.sh`` (the OS PostgreSQL packages), stopped at session end.

When none works the tests skip with the reason, except under ``INTERLOCK_REQUIRE_SERVICES=1``
(CI), where they fail: a missing service must never turn into a green run.

Per-test isolation: ``kafka_topic`` / ``new_kafka_topic`` make fresh topics and
``fresh_postgres_db`` a fresh database, so tests sharing one server don't see each other's data.

Knobs: ``KAFKA_VERSION`` (local broker version), ``INTERLOCK_KAFKA_IMAGE`` /
``INTERLOCK_POSTGRES_IMAGE`` (container images), ``INTERLOCK_KEEP_SERVICE_DIRS=1`` (keep the
local servers' directories, with their logs, after the run).
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest

REPO = Path(__file__).resolve().parents[1]
SCRIPTS = REPO / "scripts"
KAFKA_IMAGE = os.environ.get("INTERLOCK_KAFKA_IMAGE", "confluentinc/cp-kafka:7.9.0")
POSTGRES_IMAGE = os.environ.get("INTERLOCK_POSTGRES_IMAGE", "postgres:16-alpine")
# Fetching the jars the first time downloads ~45 MB; starting takes seconds once cached.
FETCH_TIMEOUT_S = 900
START_TIMEOUT_S = 240

__all__ = [
    "fresh_postgres_db",
    "kafka_bootstrap",
    "kafka_topic",
    "new_kafka_topic",
    "postgres_url",
    "with_database",
]


class ServiceUnavailable(Exception):
    """A way of providing a service did not work; the message says why."""


def services_required() -> bool:
    """CI sets INTERLOCK_REQUIRE_SERVICES=1 so that a missing service fails the run."""
    return os.environ.get("INTERLOCK_REQUIRE_SERVICES", "") == "1"


def _unavailable(service: str, reasons: list[str]) -> NoReturn:
    """Skip (locally) or fail (CI) with every reason the service could not be provided."""
    message = f"no {service} for the tests: " + "; ".join(reasons)
    if services_required():
        pytest.fail(message + " (INTERLOCK_REQUIRE_SERVICES=1)", pytrace=False)
    pytest.skip(message)


@cache
def docker_engine() -> str | None:
    """Return None when a Docker engine answers a ping, else why not (cheap: 3 s timeout)."""
    if os.environ.get("INTERLOCK_TESTCONTAINERS", "1") == "0":
        return "testcontainers disabled by INTERLOCK_TESTCONTAINERS=0"
    try:
        import docker  # type: ignore[import-untyped]
    except ImportError:
        return "the docker Python package is not installed"
    try:
        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:
        return f"no Docker engine answers ({type(exc).__name__})"
    return None


# --------------------------------------------------------------------------- local servers


@dataclass
class LocalServer:
    """A server started by one of our scripts; stop() is idempotent and also runs at exit."""

    script: Path
    directory: Path
    stopped: bool = field(default=False)

    def stop(self) -> None:
        if self.stopped:
            return
        self.stopped = True
        with contextlib.suppress(Exception):
            subprocess.run(
                [str(self.script), "stop", str(self.directory)],
                capture_output=True,
                timeout=90,
                check=False,
            )
        if os.environ.get("INTERLOCK_KEEP_SERVICE_DIRS") != "1":
            shutil.rmtree(self.directory, ignore_errors=True)


def _tail(text: str, lines: int = 25) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])


def _run_script(script: Path, *args: str, timeout: float) -> str:
    """Run a service script and return its last stdout line; raise ServiceUnavailable on error.

    The scripts get this interpreter (it has kafka-python for the readiness probe) and our pid,
    so the servers stop even if this process is killed before its fixtures tear down.
    """
    env = dict(
        os.environ,
        INTERLOCK_PYTHON=sys.executable,
        INTERLOCK_WATCH_PID=str(os.getpid()),
        INTERLOCK_WATCH_REMOVE="0" if os.environ.get("INTERLOCK_KEEP_SERVICE_DIRS") == "1" else "1",
    )
    command = [str(script), *args]
    try:
        done = subprocess.run(
            command,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=env,
            stdin=subprocess.DEVNULL,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise ServiceUnavailable(
            f"`{script.name} {' '.join(args)}` timed out after {timeout:.0f}s\n{_tail(err)}"
        ) from exc
    except OSError as exc:
        raise ServiceUnavailable(f"cannot run {script}: {exc}") from exc
    if done.returncode != 0:
        raise ServiceUnavailable(
            f"`{script.name} {' '.join(args)}` failed (exit {done.returncode}):\n"
            f"{_tail(done.stderr)}"
        )
    out = done.stdout.strip().splitlines()
    if not out:
        raise ServiceUnavailable(f"`{script.name} {' '.join(args)}` printed nothing")
    return out[-1]


def _start_local(script: Path, prefix: str, tmp_root: str | None) -> tuple[LocalServer, str]:
    """Start a server in a fresh temp dir; retry once, since a free port can be taken meanwhile."""
    error: ServiceUnavailable | None = None
    for _attempt in range(2):
        directory = Path(tempfile.mkdtemp(prefix=prefix, dir=tmp_root))
        server = LocalServer(script, directory)
        atexit.register(server.stop)
        try:
            address = _run_script(script, "start", str(directory), "0", timeout=START_TIMEOUT_S)
        except ServiceUnavailable as exc:
            server.stop()
            error = exc
            continue
        return server, address
    assert error is not None
    raise error


def start_local_kafka() -> tuple[LocalServer, str]:
    """Fetch (cached) the broker jars from Maven Central and start a KRaft broker."""
    script = SCRIPTS / "kafka-local.sh"
    if shutil.which("java") is None:
        raise ServiceUnavailable("local Kafka needs Java 17+ (no `java` on PATH)")
    _run_script(script, "fetch", timeout=FETCH_TIMEOUT_S)
    return _start_local(script, "interlock-kafka-", None)


def start_local_postgres() -> tuple[LocalServer, str]:
    """Start PostgreSQL from the OS packages (as user `postgres` when we are root)."""
    script = SCRIPTS / "postgres-local.sh"
    # The server's OS user must reach the directory and the socket path must stay short,
    # so use /tmp rather than pytest's private (0700, long) temp root.
    tmp_root = "/tmp" if os.path.isdir("/tmp") else None
    return _start_local(script, "ilpg-", tmp_root)


# --------------------------------------------------------------------------- testcontainers


def _kafka_container() -> Any:
    """Import KafkaContainer from wherever this testcontainers version keeps it."""
    try:
        from testcontainers.community.kafka import KafkaContainer
    except ImportError:  # testcontainers before the community/ split
        from testcontainers.kafka import KafkaContainer
    return KafkaContainer(KAFKA_IMAGE).with_kraft()


def _postgres_container() -> Any:
    """A PostgreSQL container with the same user/db names as the local server."""
    try:
        from testcontainers.community.postgres import PostgresContainer
    except ImportError:  # testcontainers before the community/ split
        from testcontainers.postgres import PostgresContainer
    return PostgresContainer(
        POSTGRES_IMAGE, username="postgres", password="interlock", dbname="interlock", driver=None
    )


# --------------------------------------------------------------------------- fixtures


def _provide(
    service: str,
    env_var: str,
    container: Callable[[], Any],
    address: Callable[[Any], str],
    start_local: Callable[[], tuple[LocalServer, str]],
) -> Iterator[str]:
    """Yield the address of `service` from the first source that works (see module doc)."""
    configured = os.environ.get(env_var)
    if configured:
        yield configured
        return
    reasons: list[str] = []
    why_not_docker = docker_engine()
    if why_not_docker is None:
        started = None
        try:
            started = container()
            started.start()
            found = address(started)
        except Exception as exc:
            reasons.append(f"testcontainers {service} failed: {exc}")
            if started is not None:
                with contextlib.suppress(Exception):
                    started.stop()
        else:
            try:
                yield found
            finally:
                started.stop()
            return
    else:
        reasons.append(why_not_docker)
    server: LocalServer | None = None
    try:
        server, found = start_local()
    except ServiceUnavailable as exc:
        reasons.append(f"local {service}: {exc}")
    if server is None:
        _unavailable(service, reasons)
    try:
        yield found
    finally:
        server.stop()


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """Bootstrap servers ("host:port") of a real Kafka broker for this session."""
    yield from _provide(
        "Kafka",
        "INTERLOCK_KAFKA",
        _kafka_container,
        lambda c: str(c.get_bootstrap_server()),
        start_local_kafka,
    )


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """URL (postgresql://user:pass@host:port/interlock) of a real PostgreSQL for this session."""
    yield from _provide(
        "PostgreSQL",
        "INTERLOCK_POSTGRES",
        _postgres_container,
        lambda c: str(c.get_connection_url()),
        start_local_postgres,
    )


def _slug(text: str, limit: int, sep: str) -> str:
    """Shorten a test name to characters every service accepts in a name."""
    return re.sub(r"[^a-z0-9]+", sep, text.lower()).strip(sep)[:limit].strip(sep) or "t"


def with_database(url: str, database: str) -> str:
    """The same server URL, pointing at another database."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path="/" + database))


@pytest.fixture
def fresh_postgres_db(postgres_url: str, request: pytest.FixtureRequest) -> Iterator[str]:
    """URL of a new, empty database for this test only (dropped afterwards)."""
    import psycopg
    from psycopg import sql

    name = f"t_{_slug(request.node.name, 40, '_')}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield with_database(postgres_url, name)
    finally:
        with psycopg.connect(postgres_url, autocommit=True) as conn:
            # FORCE (PostgreSQL 13+) ends connections a failed test may have leaked.
            drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            conn.execute(drop)


@pytest.fixture
def new_kafka_topic(
    kafka_bootstrap: str, request: pytest.FixtureRequest
) -> Iterator[Callable[..., str]]:
    """Factory: ``new_kafka_topic(prefix="t", partitions=1, **configs)`` creates a fresh topic
    named after the test and waits until it has a leader, so a test never reads another's data.
    """
    from kafka import KafkaAdminClient  # type: ignore[import-untyped]

    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap, request_timeout_ms=30000)
    # Dashes only: Kafka refuses a topic whose name collides with another after '.' -> '_'.
    base = _slug(request.node.name, 60, "-")

    def make(prefix: str = "t", partitions: int = 1, **configs: str) -> str:
        name = f"{prefix}-{base}-{uuid.uuid4().hex[:8]}"
        spec = {"num_partitions": partitions, "configs": {k: str(v) for k, v in configs.items()}}
        admin.create_topics({name: spec}, timeout_ms=30000, wait_for_metadata=True)
        return name

    try:
        yield make
    finally:
        admin.close()


@pytest.fixture
def kafka_topic(new_kafka_topic: Callable[..., str]) -> str:
    """Name of a fresh single-partition topic for this test."""
    return new_kafka_topic()

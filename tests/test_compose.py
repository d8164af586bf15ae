"""docker-compose.yml and the Dockerfile, checked as data against the code.

There is no Docker engine where the tests run, so the deployment is checked for what would
otherwise only fail at `docker compose up`: every Interlock service runs a real `interlock`
subcommand with real options, sets only environment variables the code reads, points at hosts
and ports the other services really offer, waits for what it needs, and has a health check.
The health checks that probe PostgreSQL and Kafka are run for real when those are at hand.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import typer
import yaml

import interlock.cli
from interlock.config import POSTGRES_OPTIONS, store_environment

REPO = Path(__file__).resolve().parents[1]
CODE = ["domain", "projections", "consumers", "schemas", "interlock"]
ONE_SHOT = {"store-init"}


def substitute(value: Any) -> Any:
    """Compose's variable substitution with an empty environment: defaults for `${X:-d}`, a
    placeholder for required `${X:?message}`, nothing for `${X}`."""
    if not isinstance(value, str):
        return value

    def one(match: re.Match[str]) -> str:
        name, operator, rest = match.group(1), match.group(2) or "", match.group(3) or ""
        if operator == ":-":
            return rest
        if operator == ":?":
            return f"<{name}>"
        return ""

    return re.sub(r"\$\{(\w+)(?:(:-|:\?)([^}]*))?\}", one, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        name: {**spec, "environment": {k: substitute(str(v)) for k, v in
                                       (spec.get("environment") or {}).items()}}
        for name, spec in compose["services"].items()
    }


@pytest.fixture(scope="module")
def interlocks(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the Interlock image."""
    found = {name: spec for name, spec in services.items() if spec.get("build") == "."}
    assert found, "no service builds the Interlock image"
    return found


def cli() -> Any:
    """The Click group behind the Typer app (Typer may vendor its own Click)."""
    return typer.main.get_command(interlock.cli.app)


def variables_the_code_reads() -> set[str]:
    """`INTERLOCK_*` names read through os.environ, a Typer `envvar=` or a `*_VARIABLE`
    constant, and the PostgreSQL options `interlock.config` passes on to the store."""
    pattern = re.compile(
        r'(?:environ(?:\.get)?\(\s*|environ\[\s*|envvar=|_VARIABLE = )"(INTERLOCK_\w+)"'
    )
    found = set(POSTGRES_OPTIONS.values())
    for package in CODE:
        for path in (REPO / package).rglob("*.py"):
            found |= set(pattern.findall(path.read_text(encoding="utf-8")))
    return found


def test_the_interlock_services_run_real_subcommands_with_real_options(
    interlocks: dict[str, dict[str, Any]],
) -> None:
    """Each command line is parsed by the CLI itself (as `interlock ...` would, without running
    it): an unknown subcommand or option, or a value of the wrong type, fails here."""
    group = cli()
    assert "serve" in group.commands, "`interlock serve` (the HTTP API) is missing from cli.py"
    for name, spec in interlocks.items():
        command = spec["command"]
        assert isinstance(command, list) and command[0] == "interlock", name
        subcommand = group.commands.get(command[1])
        assert subcommand is not None, f"{name}: no `interlock {command[1]}`"
        try:
            parent = group.make_context("interlock", list(command[1:]))
            subcommand.make_context(command[1], list(command[2:]), parent=parent)
        except Exception as error:
            pytest.fail(f"{name}: {' '.join(command)}: {error}")


def test_every_variable_set_is_one_the_code_reads(interlocks: dict[str, dict[str, Any]]) -> None:
    known = variables_the_code_reads()
    assert {"INTERLOCK_STORE", "INTERLOCK_KAFKA", "INTERLOCK_SNAPSHOT", "INTERLOCK_TOKENS",
            "POSTGRES_POOL_SIZE"} <= known
    for name, spec in interlocks.items():
        unknown = set(spec["environment"]) - known
        assert not unknown, f"{name} sets variables no code reads: {sorted(unknown)}"


def test_stores_and_brokers_point_at_the_services_that_offer_them(
    services: dict[str, dict[str, Any]], interlocks: dict[str, dict[str, Any]],
) -> None:
    postgres = services["postgres"]["environment"]
    kafka = services["kafka"]["environment"]
    advertised = {urlsplit(url).netloc for url in kafka["KAFKA_ADVERTISED_LISTENERS"].split(",")}
    for name, spec in interlocks.items():
        env = spec["environment"]
        if "INTERLOCK_STORE" in env:
            url = env["INTERLOCK_STORE"]
            assert store_environment(url)["PERSISTENCE_MODULE"] == "eventsourcing.postgres"
            parts = urlsplit(url)
            assert (parts.hostname, parts.port or 5432) == ("postgres", 5432), name
            assert parts.username == postgres["POSTGRES_USER"], name
            assert parts.password == postgres["POSTGRES_PASSWORD"], name
            assert parts.path == "/" + postgres["POSTGRES_DB"], name
            assert "postgres" in spec["depends_on"], name
        if "INTERLOCK_KAFKA" in env:
            assert env["INTERLOCK_KAFKA"] in advertised, name
            assert env["INTERLOCK_KAFKA"].split(":")[0] == "kafka"
            assert "kafka" in spec["depends_on"], name
        subcommand = spec["command"][1]
        if subcommand in ("relay", "intake", "enforce"):
            assert "INTERLOCK_KAFKA" in env, f"{name} needs Kafka"
        if subcommand in ("relay", "intake", "serve", "snapshot", "position"):
            assert "INTERLOCK_STORE" in env, f"{name} needs the store"


def test_depends_on_waits_for_health_or_completion(services: dict[str, dict[str, Any]]) -> None:
    for name, spec in services.items():
        for needed, condition in (spec.get("depends_on") or {}).items():
            assert needed in services, f"{name} depends on unknown {needed}"
            assert needed != name
            if condition["condition"] == "service_healthy":
                assert "healthcheck" in services[needed], f"{needed} has no health check"
            else:
                assert condition["condition"] == "service_completed_successfully"
                assert needed in ONE_SHOT and services[needed]["restart"] == "no"
    for name in services:  # no cycles: no service waits, through others, for itself
        reachable: set[str] = set()
        todo = list(services[name].get("depends_on") or {})
        while todo:
            current = todo.pop()
            assert current != name, f"dependency cycle through {name}"
            if current not in reachable:
                reachable.add(current)
                todo += list(services[current].get("depends_on") or {})


def test_every_long_running_service_has_a_health_check(
    services: dict[str, dict[str, Any]],
) -> None:
    for name, spec in services.items():
        if name in ONE_SHOT:
            continue
        check = spec.get("healthcheck")
        assert check and check.get("test"), f"{name} has no health check"
        assert check["test"][0] in ("CMD", "CMD-SHELL")


def test_serve_replicas_scale_and_their_ports_agree(services: dict[str, dict[str, Any]]) -> None:
    serve = services["serve"]
    command = serve["command"]
    port = command[command.index("--port") + 1]
    assert command[command.index("--host") + 1] == "0.0.0.0"
    assert serve["environment"]["INTERLOCK_TOKENS"], "a non-loopback serve needs tokens"
    assert "container_name" not in serve, "a fixed container name would forbid --scale"
    assert serve["deploy"]["replicas"] >= 2
    (mapping,) = serve["ports"]
    host, container = mapping.rsplit(":", 1)
    assert container == port
    first, last = (int(p) for p in host.rsplit(":", 1)[-1].split("-"))
    assert last - first + 1 >= 3, "room for at least `--scale serve=3`"
    assert f"127.0.0.1:{port}/readyz" in " ".join(serve["healthcheck"]["test"])


def test_replicas_and_enforcers_start_from_the_snapshot_the_writer_keeps(
    services: dict[str, dict[str, Any]],
) -> None:
    writer = services["snapshot"]
    readers = [services["serve"], services["enforce-0"], services["enforce-1"]]
    path = writer["environment"]["INTERLOCK_SNAPSHOT"]
    for reader in readers:
        assert reader["environment"]["INTERLOCK_SNAPSHOT"] == path
        assert reader["environment"]["INTERLOCK_STORE"] == writer["environment"][
            "INTERLOCK_STORE"], "the snapshot is checked against the store it was taken of"
        assert reader["volumes"][0].endswith(":ro")
    mounts = {spec["volumes"][0].split(":")[0]: spec["volumes"][0].split(":")[1]
              for spec in (writer, *readers)}
    (volume,) = set(mounts)
    assert path.startswith(mounts[volume] + "/")


def test_kafka_is_the_official_image_in_kraft_mode_at_the_tested_version(
    services: dict[str, dict[str, Any]],
) -> None:
    kafka = services["kafka"]
    script = (REPO / "scripts" / "kafka-local.sh").read_text()
    version = re.search(r'KAFKA_VERSION="\$\{KAFKA_VERSION:-([^}]+)\}"', script)
    assert version is not None
    assert kafka["image"] == f"apache/kafka:{version.group(1)}"
    env = kafka["environment"]
    assert set(env["KAFKA_PROCESS_ROLES"].split(",")) == {"broker", "controller"}
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"
    assert "ZOOKEEPER" not in " ".join(env)


def test_the_dockerfile_installs_the_packages_pyproject_names() -> None:
    dockerfile = (REPO / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", dockerfile, re.MULTILINE)
    assert "pip install ." in dockerfile and "libpq5" in dockerfile
    copied = {line.split()[1] for line in dockerfile.splitlines() if line.startswith("COPY ")}
    copied |= {word for line in dockerfile.splitlines() if line.startswith("COPY ")
               for word in line.split()[1:-1]}
    packages = {package.split(".")[0] for package in tomllib.loads(
        (REPO / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]}
    assert {*packages, "pyproject.toml", "README.md"} <= copied
    ignored = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")]
    assert not {*packages, "pyproject.toml", "README.md"} & set(ignored)


def test_the_readme_tells_how_to_run_at_scale() -> None:
    readme = (REPO / "README.md").read_text()
    assert "## Run at scale" in readme
    section = readme.split("## Run at scale", 1)[1].split("\n## ", 1)[0]
    assert "docker compose up" in section and "--scale serve=" in section


@pytest.mark.postgres
def test_the_store_health_check_passes_against_a_real_store(
    compose: dict[str, Any], fresh_postgres_db: str
) -> None:
    check = compose["x-store-check"]["test"]
    assert check[0] == "CMD"
    env = dict(os.environ, INTERLOCK_STORE=fresh_postgres_db)
    assert subprocess.run([sys.executable, *check[2:]], env=env, timeout=60).returncode == 0
    env["INTERLOCK_STORE"] = with_port(fresh_postgres_db, 1)
    assert subprocess.run([sys.executable, *check[2:]], env=env, timeout=60,
                          capture_output=True).returncode != 0


@pytest.mark.kafka
def test_the_kafka_health_check_passes_against_a_real_broker(
    compose: dict[str, Any], kafka_bootstrap: str
) -> None:
    check = compose["x-kafka-check"]["test"]
    env = dict(os.environ, INTERLOCK_KAFKA=kafka_bootstrap)
    assert subprocess.run([sys.executable, *check[2:]], env=env, timeout=60).returncode == 0


def with_port(url: str, port: int) -> str:
    parts = urlsplit(url)
    return parts._replace(netloc=f"{parts.username}:{parts.password}@127.0.0.1:{port}").geturl()


def test_the_enforcer_shards_cover_every_partition_once(
    interlocks: dict[str, dict[str, Any]],
) -> None:
    """`enforce --shard k/N` services: one per k, all with the same N (a missing k would leave
    its partitions unenforced, a repeated one fence the other), at most the partitions."""
    from consumers.enforcer import Shard
    from consumers.packing import ENFORCEMENT_PARTITIONS

    shards = []
    for spec in interlocks.values():
        command = spec["command"]
        if command[1] == "enforce":
            given = command[command.index("--shard") + 1] if "--shard" in command else "0/1"
            shards.append(Shard.parse(given))
    assert len(shards) == 2, "the deployment runs two enforcer shards"
    count = shards[0].count
    assert sorted(s.index for s in shards) == list(range(count))
    assert all(s.count == count for s in shards) and count <= ENFORCEMENT_PARTITIONS

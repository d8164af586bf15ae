"""Fixtures: the demo's store on a small population, built once per session through the real
demo (`interlock.demo.run_demo`), and copies of it for tests that tamper with the file."""

from __future__ import annotations

import io
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from rich.console import Console

from interlock.demo import Population, run_demo, synthetic_population
from interlock.engine import Engine, open_engine
from projections.compliance import View, load_view
from tests.unit.support import Harness

SUBJECTS = 300


@pytest.fixture(scope="session")
def population() -> Population:
    return synthetic_population(SUBJECTS)


@pytest.fixture(scope="session")
def verified(population: Population) -> list[str]:
    """The employees whose US passports the demo records at 17:40 ET."""
    unattested = population.unattested_employees
    return unattested[: len(unattested) // 2]


@pytest.fixture(scope="session")
def demo_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("demo") / "demo.db"
    run_demo(Console(file=io.StringIO()), f"sqlite:///{path}", subjects=SUBJECTS)
    return path


@pytest.fixture
def demo_copy(demo_db: Path, tmp_path: Path) -> Path:
    """A private copy of the demo store, free to edit."""
    path = tmp_path / "demo.db"
    shutil.copy(demo_db, path)
    return path


@pytest.fixture(scope="session")
def demo(demo_db: Path) -> Iterator[Engine]:
    engine = open_engine(f"sqlite:///{demo_db}")
    yield engine
    engine.close()


@pytest.fixture(scope="session")
def view(demo: Engine) -> View:
    return load_view(demo.app)


@pytest.fixture
def h() -> Harness:
    """An empty engine on the memory store whose recorded time the test sets."""
    return Harness()

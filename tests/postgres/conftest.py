"""Stores for the scale-out tests: each store-level test runs on SQLite and on PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

STORES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(params=STORES)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store: an SQLite file, or a new PostgreSQL database."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/store.db"
    return str(request.getfixturevalue("fresh_postgres_db"))

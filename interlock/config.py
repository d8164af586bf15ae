"""Where the event store lives: `--store URL` or `INTERLOCK_STORE`, default an SQLite file."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote, urlsplit

DEFAULT_STORE = "sqlite:///.interlock/interlock.db"
STORE_VARIABLE = "INTERLOCK_STORE"


class StoreURLError(ValueError):
    pass


def store_url(given: str | None = None) -> str:
    return given or os.environ.get(STORE_VARIABLE) or DEFAULT_STORE


def store_environment(url: str) -> dict[str, str]:
    """The eventsourcing persistence settings for a store URL.

    `sqlite:///relative/path`, `sqlite:////absolute/path`, `memory:` and
    `postgresql://user:password@host:port/dbname` are understood.
    """
    if url == "memory:":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path.removeprefix("/"))
        if not path:
            raise StoreURLError(f"{url!r}: sqlite URLs name a file, e.g. sqlite:///interlock.db")
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    if parts.scheme in ("postgresql", "postgres"):
        dbname = parts.path.removeprefix("/")
        if not (parts.hostname and dbname):
            raise StoreURLError(f"{url!r}: expected postgresql://user:password@host:port/dbname")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(dbname),
            "POSTGRES_HOST": parts.hostname,
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or ""),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
        }
    raise StoreURLError(
        f"{url!r}: unknown store; use sqlite:///PATH, postgresql://... or memory:"
    )

"""Where the event store lives: `--store URL` or `INTERLOCK_STORE`, default an SQLite file."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import parse_qsl, unquote, urlsplit

DEFAULT_STORE = "sqlite:///.interlock/interlock.db"
DEMO_STORE = "sqlite:///.interlock/demo.db"
"""Where `interlock demo` (and `make demo`) writes, unless given --store."""
STORE_VARIABLE = "INTERLOCK_STORE"
SNAPSHOT_VARIABLE = "INTERLOCK_SNAPSHOT"
SNAPSHOT_OFF = "off"
"""`--snapshot off` / `INTERLOCK_SNAPSHOT=off`: no snapshot is read or written; every engine
replays the store."""
SNAPSHOT_SUFFIX = ".snapshot"
"""The index snapshot kept beside an SQLite store: `interlock.db` → `interlock.db.snapshot`."""
SNAPSHOT_REFRESH_EVENTS = 10_000
"""A read command that replayed at least this many events past its snapshot (a second or less
of replay) writes a fresh one once it has answered, so that the next one replays fewer."""

POSTGRES_OPTIONS = {
    "pool_size": "POSTGRES_POOL_SIZE",
    "max_overflow": "POSTGRES_MAX_OVERFLOW",
    "max_waiting": "POSTGRES_MAX_WAITING",
    "connect_timeout": "POSTGRES_CONNECT_TIMEOUT",
    "conn_max_age": "POSTGRES_CONN_MAX_AGE",
    "pre_ping": "POSTGRES_PRE_PING",
    "lock_timeout": "POSTGRES_LOCK_TIMEOUT",
    "idle_in_transaction_session_timeout": "POSTGRES_IDLE_IN_TRANSACTION_SESSION_TIMEOUT",
    "schema": "POSTGRES_SCHEMA",
}
"""Connection-pool and session options of eventsourcing's PostgreSQL store: a query parameter of
the store URL (`postgresql://.../db?pool_size=20`) or else the environment variable. Each
process holds up to pool_size + max_overflow connections (eventsourcing's defaults: 5 + 10),
plus one while it follows the store by LISTEN/NOTIFY; size them against max_connections."""

CHAINED_RECORDERS = {
    "sqlite": "interlock.persistence.sqlite:ChainedSQLiteProcessRecorder",
    "postgres": "interlock.persistence.postgres:ChainedPostgresProcessRecorder",
}
"""eventsourcing's process recorders, extended to seal every stored event into a hash chain in
the same transaction (`interlock verify`; see interlock/persistence), as the topics
eventsourcing's `PROCESS_RECORDER_TOPIC` takes. Written as topics rather than computed from
the classes: eventsourcing imports the one a store uses when it opens it, and `interlock.cli`
does not pay for psycopg on every command."""


class StoreURLError(ValueError):
    pass


class StoreMissing(StoreURLError):
    """A read-only command was pointed at a store that does not exist: answering from an empty
    one would look like an answer."""

    def __init__(self, url: str) -> None:
        default = " (the default)" if url == DEFAULT_STORE else ""
        super().__init__(
            f"store {url}{default} does not exist; nothing was read or created. The default "
            f"store is {DEFAULT_STORE}, `interlock demo` writes {DEMO_STORE}; choose one with "
            f"--store or {STORE_VARIABLE}"
        )
        self.url = url


def store_url(given: str | None = None) -> str:
    return given or os.environ.get(STORE_VARIABLE) or DEFAULT_STORE


def _sqlite_path(url: str) -> str | None:
    """The file of an sqlite URL (None for other stores and in-memory SQLite)."""
    parts = urlsplit(url)
    if parts.scheme != "sqlite":
        return None
    path = unquote(parts.path.removeprefix("/"))
    return path if path and path != ":memory:" else None


def store_exists(url: str) -> bool:
    """Whether a store is there to be read. An SQLite store is a file; PostgreSQL and memory:
    stores are answered for by their server and process."""
    path = _sqlite_path(url)
    return path is None or Path(path).is_file()


def prepare_store(url: str) -> None:
    """Makes room for a store a writer is about to create (an SQLite file's directory)."""
    path = _sqlite_path(url)
    if path is not None:
        Path(path).parent.mkdir(parents=True, exist_ok=True)


def is_postgres(url: str) -> bool:
    """PostgreSQL stores are followed by LISTEN/NOTIFY; the others by polling."""
    return urlsplit(url).scheme in ("postgresql", "postgres")


def snapshot_path(given: str | Path | None = None) -> Path | None:
    """The index snapshot named to start from: `--snapshot FILE` or `INTERLOCK_SNAPSHOT`; none
    when none is named, or for `off`."""
    value = given or os.environ.get(SNAPSHOT_VARIABLE)
    return Path(value) if value and str(value) != SNAPSHOT_OFF else None


def kept_snapshot(url: str, given: str | Path | None = None) -> Path | None:
    """The index snapshot the command line reads from and keeps fresh for the store at `url`:
    the one named (`snapshot_path`), else the file beside an SQLite store (`SNAPSHOT_SUFFIX`).
    None for `off`, and for memory: and PostgreSQL stores unless one is named: a database
    server has no "beside" that every host running the command line shares."""
    value = given or os.environ.get(SNAPSHOT_VARIABLE)
    if value:
        return snapshot_path(value)
    path = _sqlite_path(url)
    return None if path is None else Path(path + SNAPSHOT_SUFFIX)


def start_snapshot(url: str) -> Path | None:
    """The snapshot a process on the store at `url` starts its index from: the one named, or
    the file kept beside an SQLite store when there is one (`kept_snapshot`); one not there
    yet is only worth a warning when it was named: beside the store, it comes with the
    command line's first long replay."""
    kept = kept_snapshot(url)
    return kept if kept is not None and (snapshot_path() is not None or kept.is_file()) else None


def store_environment(url: str) -> dict[str, str]:
    """The eventsourcing persistence settings for a store URL (nothing is created here).

    `sqlite:///relative/path`, `sqlite:////absolute/path`, `memory:` and
    `postgresql://user:password@host:port/dbname[?pool_size=N&...]` (see POSTGRES_OPTIONS) are
    understood.
    """
    if url == "memory:":
        return {"PERSISTENCE_MODULE": "eventsourcing.popo"}
    parts = urlsplit(url)
    if parts.scheme == "sqlite":
        path = unquote(parts.path.removeprefix("/"))
        if not path:
            raise StoreURLError(f"{url!r}: sqlite URLs name a file, e.g. sqlite:///interlock.db")
        return {
            "PERSISTENCE_MODULE": "eventsourcing.sqlite",
            "SQLITE_DBNAME": path,
            "SQLITE_LOCK_TIMEOUT": "10",
            "PROCESS_RECORDER_TOPIC": CHAINED_RECORDERS["sqlite"],
        }
    if parts.scheme in ("postgresql", "postgres"):
        dbname = parts.path.removeprefix("/")
        if not (parts.hostname and dbname):
            raise StoreURLError(f"{url!r}: expected postgresql://user:password@host:port/dbname")
        env = {
            "PERSISTENCE_MODULE": "eventsourcing.postgres",
            "POSTGRES_DBNAME": unquote(dbname),
            "POSTGRES_HOST": parts.hostname,
            "POSTGRES_PORT": str(parts.port or 5432),
            "POSTGRES_USER": unquote(parts.username or ""),
            "POSTGRES_PASSWORD": unquote(parts.password or ""),
            "PROCESS_RECORDER_TOPIC": CHAINED_RECORDERS["postgres"],
        }
        env.update(
            (variable, os.environ[variable])
            for variable in POSTGRES_OPTIONS.values() if os.environ.get(variable)
        )
        for name, value in parse_qsl(parts.query, keep_blank_values=True):
            if name not in POSTGRES_OPTIONS:
                raise StoreURLError(
                    f"{url!r}: unknown option {name!r}; known: {', '.join(POSTGRES_OPTIONS)}"
                )
            env[POSTGRES_OPTIONS[name]] = value
        return env
    raise StoreURLError(
        f"{url!r}: unknown store; use sqlite:///PATH, postgresql://... or memory:"
    )

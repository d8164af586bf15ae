"""eventsourcing's SQLite process recorder, chained."""

from __future__ import annotations

import contextlib
import sqlite3
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.persistence import OperationalError, StoredEvent
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteProcessRecorder,
    SQLiteTransaction,
)

from interlock.persistence.sealing import ChainSealing
from projections.chain import CHAIN_SUFFIX


class ChainedSQLiteProcessRecorder(ChainSealing, SQLiteProcessRecorder):
    """eventsourcing's SQLite process recorder, sealing each event in its own transaction.

    Every write transaction starts with BEGIN IMMEDIATE (the store's write lock) instead of a
    deferred BEGIN, so that what is read in it (the chain's head, and under `write_lock` the
    caller's aggregates and clock) cannot be overtaken by another writer before it commits."""

    def __init__(self, datastore: SQLiteDatastore, *,
                 events_table_name: str = "stored_events") -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self._session = threading.local()

    @property
    def chain_table_name(self) -> str:
        return self.events_table_name + CHAIN_SUFFIX

    def construct_create_table_statements(self) -> list[str]:
        statements = super().construct_create_table_statements()
        statements.append(self._chain_statement())
        return statements

    def _chain_statement(self) -> str:
        return (f"CREATE TABLE IF NOT EXISTS {self.chain_table_name} ("
                "position INTEGER PRIMARY KEY, digest BLOB NOT NULL, link BLOB NOT NULL)")

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        pool = self.datastore.pool
        timeout = pool.lock_timeout or SQLITE3_DEFAULT_LOCK_TIMEOUT
        with self.datastore.get_connection(commit=True) as conn, \
                _ImmediateTransaction(conn, database=pool.db_name, timeout=timeout) as cursor, \
                cursor:
            yield cursor

    def _can_hold_lock(self) -> bool:
        """Not on an in-memory database: its readers wait for its writer, in-process."""
        return not self.datastore.pool.is_sqlite_memory_mode

    def create_table(self) -> None:
        """eventsourcing decides whether the tracking table exists in one transaction and
        creates the tables in another: two processes opening a new store both decide it does
        not, and the second fails inserting the migration row (IntegrityError). Here both
        happen under the write lock, one process after the other."""
        with self._locked() as c:
            c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tracking'")
            if c.fetchone() is not None:
                self.tracking_table_exists = True
                self.tracking_migration_current = self.tracking_migration_previous = (
                    self._max_tracking_id(self.table_migration_identifier, c)
                )
            self._create_table(c)

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._writing() as c:
            return self._insert_events(c, stored_events, **kwargs)

    def _insert_events(
        self, c: Any, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        if ids:
            self._seal(c, ids, stored_events)
        return ids

    def _chain_exists(self, c: Any) -> bool:
        c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                  (self.chain_table_name,))
        return c.fetchone() is not None

    def _create_chain(self, c: Any) -> None:
        c.execute(self._chain_statement())

    def _last_links(self, c: Any) -> list[tuple[int, bytes, bytes]]:
        c.execute(f"SELECT position, digest, link FROM {self.chain_table_name} "
                  "ORDER BY position DESC LIMIT 2")
        return [(r[0], bytes(r[1]), bytes(r[2])) for r in c.fetchall()]

    def _first_event(self, c: Any, after: int, before: int | None) -> int | None:
        c.execute(f"SELECT MIN(rowid) FROM {self.events_table_name} WHERE rowid > ? "
                  "AND rowid < ?", (after, 2**63 - 1 if before is None else before))
        return c.fetchone()[0]

    def _events_between(self, c: Any, after: int, before: int | None,
                        limit: int) -> list[tuple[int, UUID | str, int, str, bytes]]:
        c.execute("SELECT rowid, originator_id, originator_version, topic, state "
                  f"FROM {self.events_table_name} WHERE rowid > ? AND rowid < ? "
                  "ORDER BY rowid LIMIT ?",
                  (after, 2**63 - 1 if before is None else before, limit))
        return [(r[0], r[1], r[2], r[3], r[4]) for r in c.fetchall()]

    def _insert_links(self, c: Any, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        if rows:
            c.executemany(f"INSERT INTO {self.chain_table_name} VALUES (?, ?, ?)", rows)


class _ImmediateTransaction(SQLiteTransaction):
    """eventsourcing's SQLite transaction (rolls back on error, translates sqlite3 errors),
    begun with BEGIN IMMEDIATE: it takes the write lock at once rather than at its first write.

    SQLite's busy handler retries a locked database at growing intervals (up to 100 ms), so a
    writer that commits and begins again at once would keep the lock from one that waits:
    here the waiter polls every `POLL` seconds, up to `timeout`, and a writer that has just
    committed lets `COURTESY` seconds pass before it begins again."""

    POLL = 0.001
    COURTESY = 0.005
    released: ClassVar[dict[str, float]] = {}
    """When this process last committed a locked transaction, per database."""

    def __init__(self, connection: SQLiteConnection, *, database: str, timeout: float) -> None:
        super().__init__(connection, commit=True)
        self.database, self.timeout = database, timeout

    def __enter__(self) -> SQLiteCursor:
        pause = self.COURTESY - (time.monotonic() - self.released.get(self.database, 0.0))
        if pause > 0:
            time.sleep(pause)
        cursor = self.connection.cursor()
        deadline = time.monotonic() + self.timeout
        try:
            cursor.execute("PRAGMA busy_timeout = 0")
            while True:
                try:
                    cursor.execute("BEGIN IMMEDIATE")
                    break
                except sqlite3.OperationalError as error:
                    if error.sqlite_errorcode != sqlite3.SQLITE_BUSY or \
                            time.monotonic() >= deadline:
                        raise
                    time.sleep(self.POLL)
        except sqlite3.OperationalError as error:
            cursor.sqlite_cursor.close()
            raise OperationalError(error) from error
        finally:
            with contextlib.suppress(sqlite3.Error):
                cursor.execute(f"PRAGMA busy_timeout = {int(self.timeout * 1000)}")
        return cursor

    def __exit__(self, *exc: Any) -> None:
        try:
            super().__exit__(*exc)
        finally:
            self.released[self.database] = time.monotonic()

"""eventsourcing's PostgreSQL process recorder, chained."""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any
from uuid import UUID

import psycopg
from eventsourcing import persistence
from eventsourcing.persistence import StoredEvent
from eventsourcing.postgres import PostgresProcessRecorder
from psycopg.sql import SQL, Composed, Identifier

from interlock.persistence.sealing import ChainSealing
from projections.chain import CHAIN_SUFFIX

_PSYCOPG_ERRORS = [
    (getattr(psycopg, name), getattr(persistence, name))
    for name in ("InterfaceError", "DataError", "OperationalError", "IntegrityError",
                 "InternalError", "ProgrammingError", "NotSupportedError", "DatabaseError")
] + [(psycopg.Error, persistence.PersistenceError)]
"""psycopg's errors and eventsourcing's, most specific first, as eventsourcing maps them."""


class ChainedPostgresProcessRecorder(ChainSealing, PostgresProcessRecorder):
    """eventsourcing's PostgreSQL process recorder, sealing each event in its own transaction,
    under the `LOCK TABLE ... IN EXCLUSIVE MODE` eventsourcing takes to serialise writers."""

    def __init__(
        self,
        datastore: Any,
        *,
        events_table_name: str = "stored_events",
        tracking_table_name: str = "notification_tracking",
    ) -> None:
        super().__init__(
            datastore, events_table_name=events_table_name, tracking_table_name=tracking_table_name
        )
        self._session = threading.local()
        self.chain_table_name = events_table_name + CHAIN_SUFFIX
        self.check_identifier_length(self.chain_table_name)
        self._schema = Identifier(datastore.schema)
        self._chain = Identifier(self.chain_table_name)
        self._events = Identifier(events_table_name)
        self.sql_create_statements.append(self._chain_statement())
        self._held = threading.local()
        self._pooled = datastore.get_connection
        datastore.get_connection = self._connection

    @contextmanager
    def _connection(self) -> Iterator[Any]:
        """The datastore's connections, except that within `write_lock` (or `create_table`)
        this thread gets the connection it holds: what it reads there is read in the locked
        transaction, and a pool of one connection is enough."""
        held = getattr(self._held, "conn", None)
        if held is None:
            with self._pooled() as conn:
                yield conn
            return
        try:
            yield held
        except psycopg.Error as error:  # as the datastore's own connections translate them
            kind = next(ours for theirs, ours in _PSYCOPG_ERRORS if isinstance(error, theirs))
            raise kind(str(error)) from error

    @contextmanager
    def _holding(self) -> Iterator[Any]:
        with self._pooled() as conn:
            self._held.conn = conn
            try:
                yield conn
            finally:
                self._held.conn = None

    def _chain_statement(self) -> Composed:
        return SQL(
            "CREATE TABLE IF NOT EXISTS {0}.{1} ("
            "position bigint PRIMARY KEY, digest bytea NOT NULL, link bytea NOT NULL)"
        ).format(self._schema, self._chain)

    @contextmanager
    def _locked(self) -> Iterator[Any]:
        with self._holding() as conn, conn.transaction(), conn.cursor() as curs:
            self._lock_table(curs)
            yield curs

    def create_table(self) -> None:
        """eventsourcing creates types and tables in several transactions and decides before
        them whether the tracking table exists: processes opening a new database at once
        collide (IntegrityError). An advisory lock puts them one after the other."""
        key = int.from_bytes(hashlib.sha256(
            f"interlock create {self.datastore.schema}.{self.events_table_name}".encode()
        ).digest()[:8], "big", signed=True)
        with self._holding() as conn:
            conn.execute("SELECT pg_advisory_lock(%s)", [key])
            try:
                super().create_table()
            finally:
                conn.execute("SELECT pg_advisory_unlock(%s)", [key])

    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._writing() as curs:
            self._insert_events(curs, stored_events, **kwargs)
            if not stored_events:
                return []
            self._insert_stored_events(curs, stored_events, **kwargs)
            ids = self._fetch_ids_after_insert_events(curs, stored_events, **kwargs)
            if ids:
                self._seal(curs, ids, stored_events)
            return ids

    def _chain_exists(self, c: Any) -> bool:
        c.execute("SELECT to_regclass(%s) AS found",
                  [f'"{self.datastore.schema}"."{self.chain_table_name}"'])
        row = c.fetchone()
        return row is not None and row["found"] is not None

    def _create_chain(self, c: Any) -> None:
        c.execute(self._chain_statement())

    def _last_links(self, c: Any) -> list[tuple[int, bytes, bytes]]:
        c.execute(SQL("SELECT position, digest, link FROM {0}.{1} ORDER BY position DESC "
                      "LIMIT 2").format(self._schema, self._chain))
        return [(r["position"], bytes(r["digest"]), bytes(r["link"])) for r in c.fetchall()]

    def _first_event(self, c: Any, after: int, before: int | None) -> int | None:
        c.execute(SQL("SELECT MIN(notification_id) AS first FROM {0}.{1} "
                      "WHERE notification_id > %s AND notification_id < %s")
                  .format(self._schema, self._events),
                  [after, 2**63 - 1 if before is None else before])
        row = c.fetchone()
        return None if row is None else row["first"]

    def _events_between(self, c: Any, after: int, before: int | None,
                        limit: int) -> list[tuple[int, UUID | str, int, str, bytes]]:
        c.execute(SQL("SELECT notification_id, originator_id, originator_version, topic, state "
                      "FROM {0}.{1} WHERE notification_id > %s AND notification_id < %s "
                      "ORDER BY notification_id LIMIT %s").format(self._schema, self._events),
                  [after, 2**63 - 1 if before is None else before, limit])
        return [(r["notification_id"], r["originator_id"], r["originator_version"], r["topic"],
                 bytes(r["state"])) for r in c.fetchall()]

    def _insert_links(self, c: Any, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        if rows:
            c.executemany(SQL("INSERT INTO {0}.{1} VALUES (%s, %s, %s)")
                          .format(self._schema, self._chain), rows)

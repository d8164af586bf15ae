"""Proof that the store and the index are what they should be: a hash chain over the event log,
a digest of every decision-relevant fact, replay and verify.

**The hash chain.** Every stored event gets a row in a side table `<events table>_chain`
(`stored_events_chain` on SQLite, `interlock_events_chain` on PostgreSQL) holding

    digest_n = sha256(u32 len(topic) || topic || state)
    link_n   = sha256(link_{n-1} || u64 position_n || u32 len(id) || originator id (16 UUID
                      bytes) || u64 originator_version || digest_n),   link_0 = 32 zero bytes

over the bytes exactly as stored, in position order: the digest covers the event (topic and
state), the link also its key (aggregate id and version) and its place in the log. Keeping the
event's own digest lets `verify_chain` tell an edited event from one moved to another position;
it walks the log and the chain side by side and names the first position whose event was
altered, removed, reordered or added without a link.

*Where links are written.* The rows are written by the application's own process recorder
(`ChainedSQLiteProcessRecorder`, `ChainedPostgresProcessRecorder`, chosen by
`PROCESS_RECORDER_TOPIC` in `interlock.config.store_environment`), **in the same transaction as
the events**, with the same cursor: a tracking projection that lags behind the log (and is run
by whoever happens to follow the store) would leave a window in which an event could be edited
before it was sealed, and a crash there would seal the edit. Every write transaction takes the
store's write lock before it reads anything (SQLite `BEGIN IMMEDIATE`; on PostgreSQL the
`LOCK TABLE ... IN EXCLUSIVE MODE` eventsourcing takes), so reading the chain's head inside it
is race-free. The chain table is its own tracking record: its last row is the last sealed
position. Tracking records for Kafka input ride along unchanged. Memory stores keep no chain.

*A writer never chains over what it did not write.* Before it links its events, the writer
checks, under the lock, that the chain's head still verifies (the event there is the one
chained, its link follows from the one before) and that no event was stored after the head;
else it raises `ChainRefused` naming the position and the transaction stores nothing. So a row
inserted into the events table, a chain emptied, truncated or dropped, or an edited head is
never laundered by the next legitimate write. Events stored before a store kept a chain (or
by a writer without one) are sealed only by the operator's explicit `interlock seal`.

*What it proves.* Anyone who edits an event row must also rewrite its digest and every later
link; a database writer can do that, so the chain proves something once a head is kept outside
the database: `interlock verify --expect-head P:LINK` checks a head printed by an earlier
verify, and `projections.checkpoints` signs heads with a server key (`interlock checkpoint`)
that `verify --checkpoints` checks. Both compare with the links recomputed from the events
themselves, whatever the chain table says.
"""

from __future__ import annotations

import contextlib
import gc
import hashlib
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Collection, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import zip_longest
from typing import Any, ClassVar
from uuid import UUID

import psycopg
from eventsourcing import persistence
from eventsourcing.application import Application
from eventsourcing.persistence import Notification, OperationalError, StoredEvent
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresProcessRecorder
from eventsourcing.sqlite import (
    SQLITE3_DEFAULT_LOCK_TIMEOUT,
    SQLiteApplicationRecorder,
    SQLiteConnection,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteProcessRecorder,
    SQLiteTransaction,
)
from psycopg.sql import SQL, Composed, Identifier

from domain.decision import NO_CONTEXT, judge
from domain.facts import FactBase
from projections.access_index import AccessIndex
from projections.store_follower import Progress, StoreFollower

GENESIS = bytes(32)
CHAIN_SUFFIX = "_chain"
PAGE = 10_000


# ------------------------------------------------------------------------------- the chain


def _originator_bytes(originator_id: UUID | str) -> bytes:
    if isinstance(originator_id, UUID):
        return originator_id.bytes
    try:
        return UUID(str(originator_id)).bytes
    except ValueError:
        return str(originator_id).encode()


def event_digest(topic: str, state: bytes) -> bytes:
    """The digest of one stored event's topic and state, length-framed. A value of another type
    than the writer stores (SQLite keeps whatever a row is given: text for a blob, a number for
    a topic) is hashed as its repr, so it is reported as altered rather than failing the walk."""
    topic_bytes = topic.encode() if isinstance(topic, str) else repr(topic).encode()
    hashing = hashlib.sha256()
    hashing.update(len(topic_bytes).to_bytes(4, "big"))
    hashing.update(topic_bytes)
    hashing.update(bytes(state) if isinstance(state, bytes | bytearray | memoryview)
                   else repr(state).encode())
    return hashing.digest()


def chain_link(
    previous: bytes, position: int, originator_id: UUID | str, version: int, digest: bytes
) -> bytes:
    """The link sealing one event: its place in the log, its key and its digest."""
    originator = _originator_bytes(originator_id)
    return hashlib.sha256(
        previous + position.to_bytes(8, "big") + len(originator).to_bytes(4, "big") + originator
        + int(version).to_bytes(8, "big", signed=True) + digest
    ).digest()


def stored_digest(event: StoredEvent) -> bytes:
    return event_digest(event.topic, event.state)


_Unsealed = tuple[int, UUID | str, int, bytes]
"""(position, originator id, originator version, digest) of an event not yet chained."""


class ChainRefused(Exception):
    """A write (or a seal) refused because the log since the chain's head is not what a chained
    writer left there: sealing it would vouch for rows no writer of ours stored. Names the
    position; the transaction is rolled back, so nothing of the write is stored."""

    def __init__(self, position: int, problem: str, detail: str) -> None:
        super().__init__(f"position {position}: {problem}: {detail}")
        self.position, self.problem, self.detail = position, problem, detail


def _extend(head: tuple[int, bytes], unsealed: Sequence[_Unsealed]) -> list[
    tuple[int, bytes, bytes]
]:
    """Chain rows for events after `head`, in position order."""
    link = head[1]
    rows = []
    for at, originator_id, version, digest in unsealed:
        link = chain_link(link, at, originator_id, version, digest)
        rows.append((at, digest, link))
    return rows


def _unsealed(ids: Sequence[int], stored_events: Sequence[StoredEvent]) -> list[_Unsealed]:
    return [(at, e.originator_id, e.originator_version, stored_digest(e))
            for at, e in zip(ids, stored_events, strict=True)]


class _ChainSealing:
    """What both chained recorders do in the writer's transaction, under the store's write
    lock: check that the chain's head still verifies and that nothing was stored after it,
    then seal the new events. The backends supply the queries."""

    chain_table_name: str
    _session: threading.local

    def _chain_exists(self, c: Any) -> bool:
        raise NotImplementedError

    def _create_chain(self, c: Any) -> None:
        raise NotImplementedError

    def _last_links(self, c: Any) -> list[tuple[int, bytes, bytes]]:
        """The chain's last two rows (position, digest, link), the head first."""
        raise NotImplementedError

    def _first_event(self, c: Any, after: int, before: int | None) -> int | None:
        """The first stored position in (after, before)."""
        raise NotImplementedError

    def _events_between(self, c: Any, after: int, before: int | None,
                        limit: int) -> list[tuple[int, UUID | str, int, str, bytes]]:
        """(position, originator id, version, topic, state) of stored events in (after,
        before), in position order."""
        raise NotImplementedError

    def _insert_links(self, c: Any, rows: Sequence[tuple[int, bytes, bytes]]) -> None:
        raise NotImplementedError

    def _session_cursor(self) -> Any:
        return getattr(self._session, "cursor", None)

    def _verified_head(self, c: Any, before: int | None) -> tuple[int, bytes]:
        """The chain's head, once its link verifies and no event is stored between it and
        `before` (None: none after it at all); else ChainRefused."""
        if not self._chain_exists(c):
            first = self._first_event(c, 0, before)
            if first is not None:
                raise ChainRefused(first, "unchained",
                                   f"this store has no hash chain table ({self.chain_table_name})"
                                   ": its events are not sealed, and a writer will not seal them "
                                   "(`interlock verify`, then `interlock seal` to vouch for them)")
            self._create_chain(c)
        head = self._head(c, before)
        first = self._first_event(c, head[0], before)
        if first is not None:
            why = (f"stored after the chain's head (position {head[0]}) without a link" if head[0]
                   else "not sealed, and the chain holds no link (a store that never kept one, or "
                   "whose chain was emptied or dropped)")
            raise ChainRefused(first, "unchained",
                               f"{why}: a writer will not seal it (`interlock verify`, then "
                               "`interlock seal` to vouch for it)")
        return head

    def _head(self, c: Any, before: int | None = None) -> tuple[int, bytes]:
        """The chain's last position and link, once it is before `before`, the event there is
        the one chained and the link follows from the one before it; (0, GENESIS) for an empty
        chain."""
        last = self._last_links(c)
        if not last:
            return 0, GENESIS
        position, digest, link = last[0]
        if before is not None and position >= before:
            raise ChainRefused(before, "removed",
                               f"the chain already holds positions up to {position}, but the "
                               f"store gave this write position {before}: chained events were "
                               "removed")
        previous = last[1][2] if len(last) > 1 else GENESIS
        found = self._events_between(c, position - 1, position + 1, 1)
        if not found:
            raise ChainRefused(position, "removed",
                               "the event chained at the chain's head is missing from the store")
        _, originator_id, version, topic, state = found[0]
        if event_digest(topic, state) != digest:
            raise ChainRefused(position, "altered",
                               "the stored bytes of the chain's head event differ from those "
                               "chained")
        if chain_link(previous, position, originator_id, version, digest) != link:
            raise ChainRefused(position, "altered",
                               "the chain's head link does not follow from the link before it")
        return position, link

    def _seal(self, c: Any, ids: Sequence[int], stored_events: Sequence[StoredEvent]) -> None:
        """Links the events just inserted at `ids`, in the same transaction."""
        head = self._verified_head(c, ids[0])
        self._insert_links(c, _extend(head, _unsealed(ids, stored_events)))

    def seal_unsealed(self) -> tuple[int, int, int]:
        """Seals every event stored after the chain's head (all of them in a store without a
        chain), once the head itself verifies: the operator's explicit act after checking those
        events (`interlock seal`), never a writer's. Returns (first, last, count) sealed."""
        with self._writing() as c:
            if not self._chain_exists(c):
                self._create_chain(c)
            head = self._head(c)
            first = count = 0
            while page := self._events_between(c, head[0], None, PAGE):
                rows = _extend(head, [(at, o, v, event_digest(t, s)) for at, o, v, t, s in page])
                self._insert_links(c, rows)
                first, count = first or rows[0][0], count + len(rows)
                head = (rows[-1][0], rows[-1][2])
            return first, head[0], count

    @contextmanager
    def write_lock(self) -> Iterator[None]:
        """Holds the store's write lock in one transaction from here to the end of the block,
        which this thread's writes join: committed at the end, rolled back on an error. Within
        it, what the caller reads (aggregates, the clock) cannot be overtaken by another writer
        before the commit. A log that a writer would refuse to chain onto (`_verified_head`)
        is refused here already."""
        if self._session_cursor() is not None or not self._can_hold_lock():
            yield
            return
        with self._locked() as cursor:
            self._verified_head(cursor, None)  # refused before the caller reads anything
            self._session.cursor = cursor
            try:
                yield
            finally:
                self._session.cursor = None

    @contextmanager
    def _writing(self) -> Iterator[Any]:
        """The held write transaction's cursor, or a locked transaction for one write."""
        held = self._session_cursor()
        if held is not None:
            yield held
            return
        with self._locked() as cursor:
            yield cursor

    def _locked(self) -> AbstractContextManager[Any]:
        """A new transaction that has taken the store's write lock; yields its cursor."""
        raise NotImplementedError

    def _can_hold_lock(self) -> bool:
        return True


class ChainedSQLiteProcessRecorder(_ChainSealing, SQLiteProcessRecorder):
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


_PSYCOPG_ERRORS = [
    (getattr(psycopg, name), getattr(persistence, name))
    for name in ("InterfaceError", "DataError", "OperationalError", "IntegrityError",
                 "InternalError", "ProgrammingError", "NotSupportedError", "DatabaseError")
] + [(psycopg.Error, persistence.PersistenceError)]
"""psycopg's errors and eventsourcing's, most specific first, as eventsourcing maps them."""


class ChainedPostgresProcessRecorder(_ChainSealing, PostgresProcessRecorder):
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


class ChainTable:
    """Reads a store's chain table; `kept` is False when the store has none."""

    def __init__(self, recorder: Any) -> None:
        self.recorder = recorder
        self.sqlite = isinstance(recorder, SQLiteApplicationRecorder)
        self.postgres = isinstance(recorder, PostgresApplicationRecorder)
        self.name = getattr(recorder, "events_table_name", "") + CHAIN_SUFFIX
        self.kept = bool(self.sqlite or self.postgres) and self._exists()

    def _query(self, sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
        if self.sqlite:
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute(sql.format(table=self.name), tuple(params))
                return [tuple(row) for row in c.fetchall()]
        schema = self.recorder.datastore.schema
        statement = SQL(sql.replace("%", "%%").replace("?", "%s")).format(
            table=SQL("{0}.{1}").format(Identifier(schema), Identifier(self.name))
        )
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, list(params))
            return [tuple(row.values()) if isinstance(row, dict) else tuple(row)
                    for row in curs.fetchall()]

    def _exists(self) -> bool:
        if self.sqlite:
            with self.recorder.datastore.transaction(commit=False) as c:
                c.execute("SELECT 1 FROM sqlite_master WHERE type='table' AND name=?",
                          (self.name,))
                return c.fetchone() is not None
        with self.recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute("SELECT to_regclass(%s) AS found",
                         [f'"{self.recorder.datastore.schema}"."{self.name}"'])
            row = curs.fetchone()
            return row is not None and bool(row["found"] if isinstance(row, dict) else row[0])

    def head(self) -> tuple[int, bytes]:
        """The last sealed position and its link; (0, GENESIS) for an empty or absent chain."""
        if not self.kept:
            return (0, GENESIS)
        rows = self._query("SELECT position, link FROM {table} ORDER BY position DESC LIMIT 1")
        return (rows[0][0], bytes(rows[0][1])) if rows else (0, GENESIS)

    def rows(self, after: int = 0, page: int = PAGE) -> Iterator[tuple[int, bytes, bytes]]:
        while True:
            batch = self._query(
                "SELECT position, digest, link FROM {table} WHERE position > ? "
                "ORDER BY position LIMIT ?", (after, page),
            )
            for position, digest, link in batch:
                yield position, bytes(digest), bytes(link)
            if len(batch) < page:
                return
            after = batch[-1][0]

    def link_at(self, position: int) -> bytes | None:
        """The link the chain holds at `position` (None: no row there, or no chain)."""
        if not self.kept:
            return None
        rows = self._query("SELECT link FROM {table} WHERE position = ?", (position,))
        return bytes(rows[0][0]) if rows else None

    def positions_with(self, digest: bytes) -> list[int]:
        """Where the chain holds this event digest (to tell a moved event from an edited one)."""
        return [row[0] for row in self._query(
            "SELECT position FROM {table} WHERE digest = ? ORDER BY position LIMIT 5", (digest,)
        )]


@dataclass(frozen=True)
class ChainProblem:
    position: int
    problem: str
    """`altered`, `reordered`, `removed`, `inserted` or `unchained`."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"position": self.position, "problem": self.problem, "detail": self.detail}


@dataclass
class ChainReport:
    kept: bool
    events: int = 0
    chained: int = 0
    head_position: int = 0
    head_link: str = GENESIS.hex()
    problems: list[ChainProblem] = field(default_factory=list)
    more_problems: int = 0
    last_position: int = 0
    """The last stored event, and the link the chain should hold there, recomputed from the
    events (equal to the head when the chain verifies)."""
    last_link: str = GENESIS.hex()
    links: dict[int, str] = field(default_factory=dict)
    """Recomputed links at the positions `verify_chain` was asked to keep."""

    @property
    def ok(self) -> bool:
        return not self.problems

    @property
    def first(self) -> ChainProblem | None:
        return min(self.problems, key=lambda p: p.position) if self.problems else None

    def add(self, problem: ChainProblem, limit: int = 20) -> None:
        if len(self.problems) < limit:
            self.problems.append(problem)
        else:
            self.more_problems += 1

    def to_json(self) -> dict[str, Any]:
        first = self.first
        return {
            "kept": self.kept, "ok": self.ok, "events": self.events, "chained": self.chained,
            "head": {"position": self.head_position, "link": self.head_link},
            "first_problem": None if first is None else first.to_json(),
            "problems": [p.to_json() for p in sorted(self.problems, key=lambda p: p.position)],
            "more_problems": self.more_problems,
        }


def _merge(
    events: Iterator[Notification], chain: Iterator[tuple[int, bytes, bytes]]
) -> Iterator[tuple[int, Notification | None, tuple[bytes, bytes] | None]]:
    """The log and the chain side by side, by position."""
    event, row = next(events, None), next(chain, None)
    while event is not None or row is not None:
        if row is None or (event is not None and event.id < row[0]):
            assert event is not None
            yield event.id, event, None
            event = next(events, None)
        elif event is None or row[0] < event.id:
            yield row[0], None, (row[1], row[2])
            row = next(chain, None)
        else:
            yield event.id, event, (row[1], row[2])
            event, row = next(events, None), next(chain, None)


def notifications(app: Application[UUID], until: int | None = None,
                  page: int = PAGE, after: int = 0) -> Iterator[Notification]:
    """Every stored event after `after` in position order, read a page at a time."""
    recorder = app.recorder
    position = after
    while True:
        batch = recorder.select_notifications(
            start=position, limit=page, stop=until, inclusive_of_start=False
        )
        yield from batch
        if len(batch) < page:
            return
        position = batch[-1].id


def verify_chain(
    app: Application[UUID],
    until: int | None = None,
    on_event: Callable[[Notification], None] | None = None,
    keep: Collection[int] = (),
    since: tuple[int, bytes] | None = None,
) -> ChainReport:
    """Checks every stored event up to `until` against the chain; `on_event` sees each
    event as it is read, so one pass over the log can also rebuild an index.

    Alongside, the chain is recomputed from the events themselves: `report.links` holds the
    recomputed link at each position in `keep` (0 included), which is what a head or checkpoint
    kept earlier is compared with, whatever the chain table now says. With `since` = (position,
    link) of a checkpoint already verified, only the events after it are walked, from its
    link; the chain must still hold that link there."""
    table = ChainTable(app.recorder)
    report = ChainReport(kept=table.kept)
    start, previous = since or (0, GENESIS)
    recomputed = previous
    if 0 in keep:
        report.links[0] = GENESIS.hex()
    if since is not None and start:
        report.head_position, report.head_link = start, previous.hex()
        report.last_position, report.last_link = start, previous.hex()
        if table.link_at(start) != previous:
            report.add(ChainProblem(start, "altered",
                                    "the chain no longer holds the link a checkpoint signed at "
                                    "this position"))
    chain_rows: Iterator[tuple[int, bytes, bytes]] = (
        (row for row in table.rows(after=start) if until is None or row[0] <= until)
        if table.kept else iter(())
    )
    unchained: list[int] = []
    for position, event, sealed in _merge(notifications(app, until, after=start), chain_rows):
        digest = None
        if event is not None:
            report.events += 1
            if on_event is not None:
                on_event(event)
            digest = stored_digest(event)
            recomputed = chain_link(recomputed, position, event.originator_id,
                                    event.originator_version, digest)
            report.last_position, report.last_link = position, recomputed.hex()
            if position in keep:
                report.links[position] = recomputed.hex()
        if sealed is None:
            if event is not None and table.kept:
                unchained.append(position)
            continue
        chained_digest, link = sealed
        report.chained += 1
        report.head_position, report.head_link = position, link.hex()
        if event is None:
            report.add(ChainProblem(position, "removed",
                                    "the event chained at this position is missing from the "
                                    "store"))
        elif digest != chained_digest:
            report.add(_mismatch(table, event))
        elif chain_link(previous, position, event.originator_id, event.originator_version,
                        digest) != link:
            report.add(ChainProblem(position, "altered",
                                    "the event's key (aggregate id or version) or its chain row "
                                    "was edited: the link does not follow"))
        previous = link
    for position in unchained:
        _unchained(report, position)
    if not table.kept and report.events and isinstance(
        app.recorder, SQLiteApplicationRecorder | PostgresApplicationRecorder
    ):
        report.add(ChainProblem(1, "unchained", "this store has no hash chain table"))
    return report


def _unchained(report: ChainReport, position: int) -> None:
    """Names an event without a link, once the walk knows where the chain's head is."""
    if position < report.head_position:
        problem, detail = "inserted", ("an event the chain does not know sits between chained "
                                       "positions")
    elif report.head_position == 0:
        problem, detail = "unchained", ("not sealed: stored before this store kept a hash "
                                        "chain, or its chain was emptied (writers refuse until "
                                        "`interlock seal`)")
    else:
        problem, detail = "unchained", ("stored after the chain's head without a link "
                                        "(writers refuse until `interlock seal`)")
    report.add(ChainProblem(position, problem, detail))


def _mismatch(table: ChainTable, event: Notification) -> ChainProblem:
    elsewhere = [p for p in table.positions_with(stored_digest(event)) if p != event.id]
    if elsewhere:
        return ChainProblem(event.id, "reordered",
                            f"holds the event chained at position {elsewhere[0]}")
    return ChainProblem(event.id, "altered",
                        "the stored bytes (topic, state or key) differ from those chained")


# ------------------------------------------------------------------------- state digests


def _time(moment: datetime | None) -> str | None:
    return None if moment is None else moment.astimezone(UTC).isoformat()


def fact_items(facts: FactBase) -> Iterator[tuple[str, str, Any]]:
    """(section, key, canonical data) for every decision-relevant part of a fact base."""
    for name in sorted(facts.models):
        model = facts.models[name]
        yield "models", name, [model.family, model.position,
                               [[_time(e), p, w] for e, p, w in model.changes]]
    for name in sorted(facts.entitlements):
        e = facts.entitlements[name]
        yield "entitlements", name, [
            e.grantee_kind, e.grantee, list(e.selectors), _time(e.valid_from),
            _time(e.valid_until), e.position, _time(e.recorded_at),
            [[_time(at), p] for at, p in e.revocations],
        ]
    for name in sorted(facts.subjects):
        s = facts.subjects[name]
        yield "subjects", name, [
            s.position,
            {kind: [[{k: sorted(v) for k, v in a.values.items()}, _time(a.valid_from),
                     _time(a.valid_until), a.position, _time(a.recorded_at), a.source,
                     a.evidence] for a in history]
             for kind, history in sorted(s.attestations.items())},
            {kind: [[_time(at), p] for at, p in revs]
             for kind, revs in sorted(s.revocations.items())},
            [e.entitlement for e in s.entitlements],
            [_time(t) for t in s.times],
        ]
    for name in sorted(facts.directives):
        d = facts.directives[name]
        yield "directives", name, [
            d.authority, d.reference, _time(d.received_at), _time(d.effective_at), d.position,
            _time(d.recorded_at), d.base, [[_time(at), p, terms] for at, p, terms in d.amendments],
            None if d.lift is None else [_time(d.lift[0]), d.lift[1]],
        ]
    yield "log", "position", facts.position
    yield "log", "global_times", [_time(t) for t in facts.global_times]


def _canonical(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, separators=(",", ":"), default=str).encode()


@dataclass
class StateDigest:
    """A sha256 per section (models, entitlements, subjects, directives, log, decisions) over
    its items in key order; `digest` folds the sections."""

    hashers: dict[str, Any] = field(default_factory=dict)

    def add(self, section: str, key: str, text: bytes) -> None:
        hashing = self.hashers.get(section)
        if hashing is None:
            hashing = self.hashers[section] = hashlib.sha256()
        hashing.update(key.encode() + b"\0" + text + b"\n")

    @property
    def sections(self) -> dict[str, str]:
        return {name: hashing.hexdigest() for name, hashing in sorted(self.hashers.items())}

    @property
    def digest(self) -> str:
        return hashlib.sha256(_canonical(self.sections)).hexdigest()


def state_digest(facts: FactBase) -> StateDigest:
    """A digest of everything in the fact base a decision can depend on."""
    digest = StateDigest()
    for section, key, data in fact_items(facts):
        digest.add(section, key, _canonical(data))
    return digest


def _verdict_bytes(verdict: Any) -> bytes:
    return _canonical([verdict.effect, verdict.route_to, verdict.disclosed,
                       [[r.code, r.ref] for r in verdict.reasons]])


# --------------------------------------------------------------------- replay and verify


@dataclass(frozen=True)
class ReplayResult:
    position: int
    events: int
    seconds: float
    index: AccessIndex

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@contextmanager
def bulk_load() -> Iterator[None]:
    """Pauses the cyclic garbage collector while millions of long-lived objects are built: its
    generational passes would otherwise rescan the growing fact base again and again."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def replay(app: Application[UUID], until: int | None = None,
           progress: Progress | None = None) -> ReplayResult:
    """Rebuilds a fresh access index from the store, as `interlock replay` does, and times it."""
    index = AccessIndex()
    started = time.perf_counter()
    with bulk_load():
        position = StoreFollower(app, index).catch_up(until=until, progress=progress)
    seconds = time.perf_counter() - started
    events = _events_up_to(app, position)
    return ReplayResult(position, events, seconds, index)


def _events_up_to(app: Application[UUID], position: int) -> int:
    """How many events the log holds up to `position` (positions may have gaps)."""
    recorder = app.recorder
    if isinstance(recorder, SQLiteApplicationRecorder):
        with recorder.datastore.transaction(commit=False) as c:
            c.execute(f"SELECT COUNT(*) FROM {recorder.events_table_name} WHERE rowid <= ?",
                      (position,))
            return int(c.fetchone()[0])
    if isinstance(recorder, PostgresApplicationRecorder):
        with recorder.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(SQL("SELECT COUNT(*) AS n FROM {0}.{1} WHERE notification_id <= %s")
                         .format(Identifier(recorder.datastore.schema),
                                 Identifier(recorder.events_table_name)), [position])
            row = curs.fetchone()
            return int(row["n"] if isinstance(row, dict) else row[0])
    return position


def position_recorded_by(app: Application[UUID], moment: datetime) -> int:
    """The last position recorded by `moment`, by bisection over the log: recorded times do not
    decrease with position (the fact base assumes the same for `known_at`)."""
    recorder = app.recorder
    to_event = app.mapper.to_domain_event

    def first_from(position: int) -> Notification | None:
        page = recorder.select_notifications(start=position, limit=1)
        return page[0] if page else None

    low, high = 0, recorder.max_notification_id() or 0
    while low < high:
        middle = (low + high + 1) // 2
        found = first_from(middle)
        if found is None or found.id > high or to_event(found).timestamp > moment:
            high = middle - 1
        else:
            low = found.id
    return low


@dataclass
class Rebuilt:
    """A fresh index fed from one pass over the log, stopping at the first event that fails."""

    index: AccessIndex = field(default_factory=AccessIndex)
    error: tuple[int, str] | None = None
    to_event: Callable[[Notification], Any] | None = None

    def feed(self, notification: Notification) -> None:
        if self.error is not None or self.to_event is None:
            return
        try:
            self.index.apply(self.to_event(notification), notification.id)
        except Exception as error:  # a tampered event can fail anywhere
            self.error = (notification.id, f"{type(error).__name__}: {error}")


@dataclass
class IndexReport:
    ok: bool
    position: int
    live_digest: str | None
    """The live fact base's state digest (as `interlock replay` prints it)."""
    rebuilt_digest: str | None
    sections: dict[str, dict[str, str | None]]
    """Per section (models, entitlements, subjects, directives, log, decisions): both digests."""
    decisions: int
    at: datetime
    difference: str | None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok, "position": self.position,
            "digest": {"live": self.live_digest, "rebuilt": self.rebuilt_digest},
            "sections": self.sections, "decisions": self.decisions, "at": _time(self.at),
            "difference": self.difference,
        }


def compare_indexes(
    live: AccessIndex | None, live_error: str | None, rebuilt: Rebuilt, at: datetime,
    decisions: bool = True,
) -> IndexReport:
    """Digests of the live and rebuilt fact bases, and of every (subject, model) decision at
    `at` (the live one through the index's cached `decide`), compared item by item in one pass
    so that the first difference can be named."""
    if live is None or rebuilt.error is not None:
        reasons = []
        if rebuilt.error is not None:
            reasons.append(f"the event at position {rebuilt.error[0]} cannot be applied: "
                           f"{rebuilt.error[1]}")
        if live is None:
            reasons.append(f"the live index could not be built: {live_error}")
        return IndexReport(False, rebuilt.index.position, None, None, {}, 0, at,
                           "; ".join(reasons))
    facts, fresh = live.facts, rebuilt.index.facts
    mine, theirs = StateDigest(), StateDigest()
    difference = None
    if live.position != fresh.position:
        difference = (f"the live index is at position {live.position}, the rebuild at "
                      f"{fresh.position}")
    missing = ("", "", None)
    for ours, other in zip_longest(fact_items(facts), fact_items(fresh), fillvalue=missing):
        ours_text, other_text = _canonical(ours[2]), _canonical(other[2])
        mine.add(ours[0], ours[1], ours_text)
        theirs.add(other[0], other[1], other_text)
        if difference is None and (ours[:2] != other[:2] or ours_text != other_text):
            section, key = ours[:2] if ours[0] else other[:2]
            difference = (f"{section}: {key}: live {ours_text.decode()[:300]} / rebuilt "
                          f"{other_text.decode()[:300]}")
    facts_digests = (mine.digest, theirs.digest)
    count = 0
    if decisions:
        models = sorted(set(facts.models) | set(fresh.models))
        for subject in sorted(set(facts.subjects) | set(fresh.subjects)):
            for model in models:
                key = f"{subject} {model}"
                ours_text = _verdict_bytes(live.decide(subject, model, at=at).verdict)
                other_text = _verdict_bytes(
                    judge(fresh, subject, model, at, fresh.position, NO_CONTEXT))
                mine.add("decisions", key, ours_text)
                theirs.add("decisions", key, other_text)
                count += 1
                if difference is None and ours_text != other_text:
                    difference = (f"decisions: {key}: live {ours_text.decode()} / rebuilt "
                                  f"{other_text.decode()}")
    live_sections, rebuilt_sections = mine.sections, theirs.sections
    sections: dict[str, dict[str, str | None]] = {
        name: {"live": live_sections.get(name), "rebuilt": rebuilt_sections.get(name)}
        for name in sorted(set(live_sections) | set(rebuilt_sections))
    }
    return IndexReport(difference is None, fresh.position, *facts_digests, sections, count, at,
                       difference)

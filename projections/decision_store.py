"""The decision log as a table, in SQLite or PostgreSQL (see projections/decision_log/).

One row per entry in `interlock_decisions`, a column per field, so an operator can read it with
SQL; times are microseconds since the Unix epoch (UTC), the form the digests cover. Indexed by
(chain, seq) for the chains, by served time for `decisions query --from/--to`, and by (subject,
served time) for a subject's decisions.

Appends are one transaction per group commit. A strict log's SQLite connection commits with
`synchronous=FULL` (the commit is on disk before a decision is answered); a best-effort one
with `NORMAL` (a crash of the process loses nothing, of the machine the last commits).
PostgreSQL commits durably either way (its `synchronous_commit` decides). Pruning is one
transaction too, serialised between processes (SQLite's write lock, a PostgreSQL advisory
lock), so several replicas pruning on a schedule remove each entry once.
"""

from __future__ import annotations

import itertools
import sqlite3
import threading
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson

from domain.decision import Decision, Reason
from projections.decision_log import (
    Entry,
    Genesis,
    LogQuery,
    LogReadError,
    Pruned,
    PruneResult,
    Served,
    from_micros,
    genesis_of,
    merged_genesis,
    micros,
    prune_record,
    reason_pairs,
)

TABLE = "interlock_decisions"
COLUMNS = ("chain", "seq", "kind", "entry_id", "served_at", "replica", "subject", "model",
           "family", "at", "known_at", "location", "purpose", "effect", "route_to", "disclosed",
           "reasons", "as_of", "prune", "digest", "link")
PRUNE_LOCK = 0x1D_EC_15_10
"""The PostgreSQL advisory lock key that serialises pruning."""


def _row(entry: Entry) -> tuple[Any, ...]:
    served, pruned = entry.served, entry.pruned
    common = (entry.chain, entry.seq, entry.kind, entry.entry_id, entry.served_us,
              entry.replica)
    if served is not None:
        d = served.decision
        return (*common, d.subject, d.model, served.family, micros(d.at),
                None if served.known_at is None else micros(served.known_at), served.location,
                served.purpose, d.effect, d.route_to, d.disclosed, _reasons_text(d.reasons),
                d.as_of, None, entry.digest, entry.link)
    assert pruned is not None
    return (*common, *(None,) * 12, orjson.dumps(pruned.canonical()).decode(), entry.digest,
            entry.link)


_TEXTS: dict[tuple[Reason, ...], str] = {}


def _reasons_text(reasons: tuple[Reason, ...]) -> str:
    """The reasons column, made once per distinct reasons."""
    found = _TEXTS.get(reasons)
    if found is None:
        if len(_TEXTS) >= 10_000:
            _TEXTS.clear()
        found = _TEXTS[reasons] = orjson.dumps(reason_pairs(reasons)).decode()
    return found


def _entry(row: Sequence[Any]) -> Entry:
    try:
        return _read(row)
    except (ValueError, TypeError, KeyError, OverflowError) as error:
        raise LogReadError(f"{TABLE}: the entry at chain {row[0]!r} seq {row[1]!r} cannot be "
                           f"read: {type(error).__name__}: {error}") from None


def _read(row: Sequence[Any]) -> Entry:
    (chain, seq, kind, entry_id, served_at, replica, subject, model, family, at, known_at,
     location, purpose, effect, route_to, disclosed, reasons, as_of, prune, digest,
     link) = row
    served = pruned = None
    if kind == "decision":
        decision = Decision(subject, model, effect, route_to, bool(disclosed),
                            tuple(Reason(code, ref) for code, ref in orjson.loads(reasons)),
                            from_micros(at), as_of)
        served = Served(decision, family, None if known_at is None else from_micros(known_at),
                        location, purpose)
    else:
        cutoff, removed, genesis = orjson.loads(prune)
        pruned = Pruned(from_micros(cutoff), removed,
                        tuple(Genesis(c, s, bytes.fromhex(h)) for c, s, h in genesis))
    return Entry(entry_id, served_at, replica, chain, seq, served, pruned, bytes(digest),
                 bytes(link))


class SQLDecisionLog:
    """The statements both databases share; subclasses connect, create and append."""

    marker = "?"
    page = 5_000

    def __init__(self) -> None:
        self._local = threading.local()
        self._connections: list[Any] = []
        self._guard = threading.Lock()

    # --- connections, one per thread -------------------------------------------------------

    def _connection(self) -> Any:
        connection = getattr(self._local, "connection", None)
        if connection is None:
            connection = self._connect()
            self._local.connection = connection
            with self._guard:
                self._connections.append(connection)
        return connection

    def _connect(self) -> Any:
        raise NotImplementedError

    def close(self) -> None:
        with self._guard:
            connections, self._connections = self._connections, []
        for connection in connections:
            connection.close()
        self._local = threading.local()

    def _rows(self, sql: str, params: Sequence[Any] = (),
              convert: Callable[[tuple[Any, ...]], Any] = tuple) -> Iterator[Any]:
        """Rows of a read, fetched a page at a time and converted inside the read, so that a
        failing conversion still closes the cursor."""
        connection = self._connection()
        cursor = connection.cursor()
        try:
            cursor.execute(sql.replace("?", self.marker), tuple(params))
            while rows := cursor.fetchmany(self.page):
                for row in rows:
                    yield convert(tuple(row))
        finally:
            cursor.close()

    # --- reads -----------------------------------------------------------------------------

    def select(self, asked: LogQuery) -> Iterator[Entry]:
        where, params = ["kind = 'decision'"], []
        if asked.subject is not None:
            where.append("subject = ?")
            params.append(asked.subject)
        if asked.model is not None and asked.model != "*":
            if asked.model.startswith("family:"):
                where.append("family = ?")
                params.append(asked.model.removeprefix("family:"))
            else:
                where.append("model = ?")
                params.append(asked.model)
        if asked.effect is not None:
            where.append("effect = ?")
            params.append(asked.effect)
        if asked.from_ is not None:
            where.append("served_at >= ?")
            params.append(micros(asked.from_))
        if asked.to is not None:
            where.append("served_at < ?")
            params.append(micros(asked.to))
        sql = (f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE {' AND '.join(where)} "
               "ORDER BY served_at, chain, seq")
        return self._rows(sql, params, _entry)

    def chain_ranges(self, start: datetime | None, end: datetime | None
                     ) -> dict[str, tuple[int, int]]:
        where, params = ["kind = 'decision'"], []
        if start is not None:
            where.append("served_at >= ?")
            params.append(micros(start))
        if end is not None:
            where.append("served_at < ?")
            params.append(micros(end))
        sql = (f"SELECT chain, MIN(seq), MAX(seq) FROM {self.table} WHERE "
               f"{' AND '.join(where)} GROUP BY chain")
        return {chain: (low, high) for chain, low, high in self._rows(sql, params)}

    def chain_entries(self, chain: str, low: int, high: int) -> Iterator[Entry]:
        sql = (f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE chain = ? AND seq >= ? "
               "AND seq <= ? ORDER BY seq")
        return self._rows(sql, (chain, low, high), _entry)

    def entry_before(self, chain: str, seq: int) -> Entry | None:
        sql = (f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE chain = ? AND seq < ? "
               "ORDER BY seq DESC LIMIT 1")
        found = list(self._rows(sql, (chain, seq), _entry))
        return found[0] if found else None

    def prunes(self) -> list[Entry]:
        sql = (f"SELECT {', '.join(COLUMNS)} FROM {self.table} WHERE kind = 'prune' "
               "ORDER BY served_at, chain")
        return list(self._rows(sql, (), _entry))

    @property
    def table(self) -> str:
        return TABLE

    def snapshot(self) -> SQLDecisionLog:
        return self

    # --- pruning ---------------------------------------------------------------------------

    def _prune_in(self, cursor: Any, cutoff: datetime, replica: str, now_us: int
                  ) -> PruneResult:
        """The prune itself, inside the caller's serialised transaction."""
        table, mark = self.table, self.marker

        def rows(sql: str, params: Sequence[Any] = ()) -> list[tuple[Any, ...]]:
            cursor.execute(sql.replace("?", mark), tuple(params))
            return [tuple(row) for row in cursor.fetchall()]

        cut = micros(cutoff)
        cursor.execute(f"SELECT {', '.join(COLUMNS)} FROM {table} WHERE kind = 'prune'")
        earlier = genesis_of(_entry(tuple(row)) for row in cursor.fetchall())
        old = {chain: last for chain, last in rows(
            f"SELECT chain, MAX(seq) FROM {table} WHERE kind = 'decision' AND served_at < ? "
            "GROUP BY chain", (cut,))}
        young = {chain: first for chain, first in rows(
            f"SELECT chain, MIN(seq) FROM {table} WHERE kind = 'decision' AND served_at >= ? "
            "GROUP BY chain", (cut,))}
        removed = 0
        now: list[Genesis] = []
        skipped: dict[str, str] = {}
        for chain in sorted(old):
            last = old[chain] if chain not in young else min(old[chain], young[chain] - 1)
            floor = earlier[chain].seq if chain in earlier else 0
            if last <= floor:
                continue
            ((count,),) = rows(f"SELECT COUNT(*) FROM {table} WHERE chain = ? AND seq > ? "
                               "AND seq <= ?", (chain, floor, last))
            found = rows(f"SELECT link FROM {table} WHERE chain = ? AND seq = ?", (chain, last))
            link = found[0][0] if found else None
            if count != last - floor or link is None:
                skipped[chain] = (f"{last - floor - count} of seqs {floor + 1}-{last} are "
                                  "missing; run `interlock decisions audit`")
                continue
            cursor.execute(f"DELETE FROM {table} WHERE chain = ? AND seq <= ?".replace("?", mark),
                           (chain, last))
            removed += count
            now.append(Genesis(chain, last, bytes(link)))
        record = None
        if removed:
            record = prune_record(replica, now_us,
                                  Pruned(cutoff, removed, merged_genesis(earlier, now)))
            self._insert(cursor, [record])
        return PruneResult(cutoff, removed, record, skipped)

    def _insert(self, cursor: Any, entries: Sequence[Entry]) -> None:
        marks = ", ".join([self.marker] * len(COLUMNS))
        cursor.executemany(f"INSERT INTO {self.table} ({', '.join(COLUMNS)}) VALUES ({marks})",
                           [_row(e) for e in entries])


class SQLiteDecisionLog(SQLDecisionLog):
    """The log in an SQLite file (its own or the event store's: the table is separate)."""

    def __init__(self, path: str, durable: bool = True, timeout: float = 10.0) -> None:
        super().__init__()
        self.path = path
        self.durable = durable
        self.timeout = timeout
        if path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        with self._transaction() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {TABLE} (chain TEXT NOT NULL, seq INTEGER NOT NULL, "
                "kind TEXT NOT NULL, entry_id TEXT NOT NULL, served_at INTEGER NOT NULL, "
                "replica TEXT NOT NULL, subject TEXT, model TEXT, family TEXT, at INTEGER, "
                "known_at INTEGER, location TEXT, purpose TEXT, effect TEXT, route_to TEXT, "
                "disclosed INTEGER, reasons TEXT, as_of INTEGER, prune TEXT, "
                "digest BLOB NOT NULL, link BLOB NOT NULL, PRIMARY KEY (chain, seq))")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_served ON {TABLE} (served_at)")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_subject ON {TABLE} "
                           "(subject, served_at)")

    def _connect(self) -> sqlite3.Connection:
        connection = sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None,
                                     check_same_thread=False)
        connection.execute("PRAGMA journal_mode=WAL")
        connection.execute(f"PRAGMA synchronous={'FULL' if self.durable else 'NORMAL'}")
        return connection

    def _transaction(self) -> Any:
        return _SQLiteTransaction(self._connection())

    def append(self, entries: Sequence[Entry]) -> None:
        with self._transaction() as cursor:
            self._insert(cursor, entries)

    ROWS_PER_INSERT = 1_000
    """Rows per INSERT statement (21,000 parameters, within SQLite's 32,766): one statement
    steps once, where executemany steps (and hands the GIL over) once per row."""

    def _insert(self, cursor: Any, entries: Sequence[Entry]) -> None:
        one = f"({', '.join('?' * len(COLUMNS))})"
        rows = [_row(e) for e in entries]
        for start in range(0, len(rows), self.ROWS_PER_INSERT):
            chunk = rows[start:start + self.ROWS_PER_INSERT]
            cursor.execute(f"INSERT INTO {TABLE} ({', '.join(COLUMNS)}) VALUES "
                           + ", ".join([one] * len(chunk)),
                           list(itertools.chain.from_iterable(chunk)))

    def prune(self, cutoff: datetime, replica: str) -> PruneResult:
        with self._transaction() as cursor:
            return self._prune_in(cursor, cutoff, replica, micros(datetime.now(UTC)))


class _SQLiteTransaction:
    """BEGIN IMMEDIATE ... COMMIT (or ROLLBACK): the write lock is taken at the start."""

    def __init__(self, connection: sqlite3.Connection) -> None:
        self.connection = connection

    def __enter__(self) -> sqlite3.Cursor:
        self.cursor = self.connection.cursor()
        self.cursor.execute("BEGIN IMMEDIATE")
        return self.cursor

    def __exit__(self, kind: Any, *_: Any) -> None:
        try:
            self.cursor.execute("COMMIT" if kind is None else "ROLLBACK")
        finally:
            self.cursor.close()


class PostgresDecisionLog(SQLDecisionLog):
    """The log in a PostgreSQL database (`schema` as for the event store)."""

    marker = "%s"

    def __init__(self, conninfo: str, schema: str = "public") -> None:
        super().__init__()
        self._cursors = itertools.count()
        self.conninfo = conninfo
        self.schema = schema
        with self._connection().transaction(), self._connection().cursor() as cursor:
            cursor.execute(
                f"CREATE TABLE IF NOT EXISTS {self.table} (chain text NOT NULL, "
                "seq bigint NOT NULL, kind text NOT NULL, entry_id text NOT NULL, "
                "served_at bigint NOT NULL, replica text NOT NULL, subject text, model text, "
                "family text, at bigint, known_at bigint, location text, purpose text, "
                "effect text, route_to text, disclosed boolean, reasons text, as_of bigint, "
                "prune text, digest bytea NOT NULL, link bytea NOT NULL, "
                "PRIMARY KEY (chain, seq))")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_served ON {self.table} "
                           "(served_at)")
            cursor.execute(f"CREATE INDEX IF NOT EXISTS {TABLE}_subject ON {self.table} "
                           "(subject, served_at)")

    @property
    def table(self) -> str:
        return f'"{self.schema}".{TABLE}'

    def _connect(self) -> Any:
        import psycopg

        return psycopg.connect(self.conninfo, autocommit=True)

    def _rows(self, sql: str, params: Sequence[Any] = (),
              convert: Callable[[tuple[Any, ...]], Any] = tuple) -> Iterator[Any]:
        """Rows of a read, streamed from a server-side cursor a page at a time."""
        connection = self._connection()
        with connection.transaction(), connection.cursor(
                name=f"decision_log_{next(self._cursors)}") as cursor:
            cursor.itersize = self.page
            cursor.execute(sql.replace("?", self.marker), tuple(params))
            for row in cursor:
                yield convert(tuple(row))

    def append(self, entries: Sequence[Entry]) -> None:
        connection = self._connection()
        with connection.transaction(), connection.cursor() as cursor, cursor.copy(
            f"COPY {self.table} ({', '.join(COLUMNS)}) FROM STDIN"
        ) as copy:
            for entry in entries:
                copy.write_row(_row(entry))

    def prune(self, cutoff: datetime, replica: str) -> PruneResult:
        connection = self._connection()
        with connection.transaction(), connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", (PRUNE_LOCK,))
            return self._prune_in(cursor, cutoff, replica, micros(datetime.now(UTC)))

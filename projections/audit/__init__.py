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
(`ChainedSQLiteProcessRecorder`, `ChainedPostgresProcessRecorder` in `interlock.persistence`,
chosen by `PROCESS_RECORDER_TOPIC` in `interlock.config.store_environment`; the links are
computed by `projections.chain`), **in the same transaction as
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

from projections.audit.chain_check import (
    ChainProblem,
    ChainReport,
    ChainTable,
    notifications,
    verify_chain,
)
from projections.audit.digest import StateDigest, fact_items, state_digest
from projections.audit.replay import (
    IndexReport,
    Rebuilt,
    ReplayResult,
    compare_indexes,
    position_recorded_by,
    replay,
)

__all__ = [
    "ChainProblem",
    "ChainReport",
    "ChainTable",
    "IndexReport",
    "Rebuilt",
    "ReplayResult",
    "StateDigest",
    "compare_indexes",
    "fact_items",
    "notifications",
    "position_recorded_by",
    "replay",
    "state_digest",
    "verify_chain",
]

"""The decision log: every decision a server answered, on the record.

The compliance tools reconstruct what *should* have been decided; an investigation also
asks what *was* served. Each served decision becomes an `Entry` — its decision id, served time,
the request (subject, model, valid time, `known_at`, context), the answer (effect, reasons,
`as_of`) and the replica that answered — and the entries are kept in a table (SQLite or
PostgreSQL, `projections.decision_store`) or on the `interlock.decisions` topic
(`consumers.decision_log`). Every decision carries its `as_of`, so `audit` can re-decide each
one from the event store and name every answer the rule does not give.

**Hash chains.** Each writer (one serving process, from its start) seals its entries into a
chain of its own, named `REPLICA/RUN`, so that replicas never coordinate and a chain never forks:

    digest_n = sha256(canonical entry n)          (every field but digest and link)
    link_n   = projections.chain.chain_link(link_{n-1}, n, entry id, 1, digest_n),
    link_0   = 32 zero bytes

`verify_chain` walks a chain by sequence number and names each entry whose content no longer
matches its digest (edited), whose digest was recomputed with a new link (resealed: the next
entry no longer follows), and each sequence number missing (removed). Entries removed from a
chain's end leave no gap: `audit` prints each chain's head so it can be kept elsewhere, as
`interlock verify` does for the event store.

**Pruning** removes, per chain, the longest prefix of entries served before a cutoff, and keeps
the link of the last removed entry as the chain's new genesis in a *prune record*: an entry of
its own (kind `prune`, its own one-entry chain) holding the cutoff, the count removed and every
chain's genesis so far (cumulative, so the newest prune record is enough). Prune records are not
pruned on SQL logs; on Kafka the newest supersedes the others.

Modules: `entry` (the entry, its canonical bytes, the chains that seal it, prune records),
`stores` (what a query asks, what a log store offers, the in-memory log, retention),
`auditing` (chains verified, decisions re-decided, an order's exposure) and `writer` (group
commits from one thread). Every name is imported from the package.
"""

from projections.decision_log.auditing import (
    STALE_INDEX,
    ChainProblem,
    Difference,
    Exposure,
    LogAudit,
    audit,
    exposure,
    redecide,
    verify_chain,
)
from projections.decision_log.entry import (
    KIND_DECISION,
    KIND_PRUNE,
    LINK_VERSION,
    Chain,
    DecisionIds,
    Entry,
    Genesis,
    LogReadError,
    Pending,
    Pruned,
    Served,
    canonical_bytes,
    digest_of,
    from_micros,
    genesis_of,
    link_of,
    merged_genesis,
    micros,
    prune_record,
    reason_pairs,
)
from projections.decision_log.stores import (
    DecisionLog,
    Effect,
    LogQuery,
    LogReader,
    MemoryLog,
    ModelFilter,
    PruneResult,
    parse_duration,
    query,
)
from projections.decision_log.writer import (
    LogWriter,
    Settle,
)

__all__ = [
    "KIND_DECISION",
    "KIND_PRUNE",
    "LINK_VERSION",
    "STALE_INDEX",
    "Chain",
    "ChainProblem",
    "DecisionIds",
    "DecisionLog",
    "Difference",
    "Effect",
    "Entry",
    "Exposure",
    "Genesis",
    "LogAudit",
    "LogQuery",
    "LogReadError",
    "LogReader",
    "LogWriter",
    "MemoryLog",
    "ModelFilter",
    "Pending",
    "PruneResult",
    "Pruned",
    "Served",
    "Settle",
    "audit",
    "canonical_bytes",
    "digest_of",
    "exposure",
    "from_micros",
    "genesis_of",
    "link_of",
    "merged_genesis",
    "micros",
    "parse_duration",
    "prune_record",
    "query",
    "reason_pairs",
    "redecide",
    "verify_chain",
]

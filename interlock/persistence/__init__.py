"""The store's persistence adapter: eventsourcing's process recorders, extended to seal every
stored event into the hash chain in the same transaction as the events (projections/audit.py
says what the chain proves; projections/chain.py computes its links).

`interlock.config.store_environment` names them to eventsourcing as `PROCESS_RECORDER_TOPIC`,
by the topic of the classes imported here."""

from interlock.persistence.postgres import ChainedPostgresProcessRecorder
from interlock.persistence.sqlite import ChainedSQLiteProcessRecorder

__all__ = ["ChainedPostgresProcessRecorder", "ChainedSQLiteProcessRecorder"]

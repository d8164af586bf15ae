"""The store's persistence adapter: eventsourcing's process recorders, extended to seal every
stored event into the hash chain in the same transaction as the events (projections/audit/
says what the chain proves; projections/chain.py computes its links).

`interlock.config.store_environment` names them to eventsourcing as `PROCESS_RECORDER_TOPIC`,
by their topics (`interlock.persistence.sqlite:ChainedSQLiteProcessRecorder`, ...): each module
is imported only by a process that uses it, since psycopg alone takes a tenth of a second to
import and most commands open an SQLite store."""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from interlock.persistence.postgres import ChainedPostgresProcessRecorder
    from interlock.persistence.sqlite import ChainedSQLiteProcessRecorder

__all__ = ["ChainedPostgresProcessRecorder", "ChainedSQLiteProcessRecorder"]
_MODULES = {"ChainedPostgresProcessRecorder": "postgres", "ChainedSQLiteProcessRecorder": "sqlite"}


def __getattr__(name: str) -> Any:
    """`interlock.persistence.ChainedSQLiteProcessRecorder` imports its module when asked."""
    if name not in _MODULES:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{_MODULES[name]}"), name)

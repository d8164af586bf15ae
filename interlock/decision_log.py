"""Where the decision log lives: `--decision-log DEST` / `--log DEST` or `INTERLOCK_DECISION_LOG`.

DEST is `sqlite:///PATH` or `postgresql://...` (the same URL forms as `--store`, parsed by
`interlock.config`: the log is a table in that database, which may be the event store's), or
`kafka` (the topic `interlock.decisions` on the `--kafka` brokers, behind `--topic-prefix`).
"""

from __future__ import annotations

import os
import socket
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from interlock.config import StoreURLError, store_environment

if TYPE_CHECKING:
    from projections.decision_log import DecisionLog

DECISION_LOG_VARIABLE = "INTERLOCK_DECISION_LOG"


class DecisionLogError(ValueError):
    """A decision log destination that cannot be used; the message says why."""


def destination(given: str | None) -> str | None:
    """The configured destination: the option, else the environment, else none."""
    return given or os.environ.get(DECISION_LOG_VARIABLE) or None


def check_destination(dest: str, kafka: str | None = None) -> None:
    """Refuses a destination that cannot be opened, before anything is served."""
    if dest == "kafka":
        from consumers.kafka import KAFKA_VARIABLE

        if not (kafka or os.environ.get(KAFKA_VARIABLE)):
            raise DecisionLogError("kafka needs --kafka HOST:PORT (or INTERLOCK_KAFKA)")
        return
    if dest == "memory:":
        raise DecisionLogError("memory: would keep nothing; use sqlite:///PATH, "
                               "postgresql://... or kafka")
    if urlsplit(dest).scheme not in ("sqlite", "postgresql", "postgres"):
        raise DecisionLogError(f"{dest!r}: unknown decision log; use sqlite:///PATH, "
                               "postgresql://... or kafka")
    try:
        store_environment(dest)
    except StoreURLError as error:
        raise DecisionLogError(str(error)) from None


def open_decision_log(dest: str, kafka: str | None = None, topic_prefix: str = "",
                      durable: bool = True) -> DecisionLog:
    """Opens (creating its table or topic) the decision log at `dest`; `durable` commits
    SQLite appends with a sync to disk (strict mode)."""
    check_destination(dest, kafka)
    if dest == "kafka":
        from consumers.decision_log import DECISIONS_TOPIC, KafkaDecisionLog
        from consumers.kafka import bootstrap_servers

        return KafkaDecisionLog(bootstrap_servers(kafka), f"{topic_prefix}{DECISIONS_TOPIC}")
    env = store_environment(dest)
    if env["PERSISTENCE_MODULE"] == "eventsourcing.sqlite":
        from projections.decision_store import SQLiteDecisionLog

        return SQLiteDecisionLog(env["SQLITE_DBNAME"], durable=durable)
    from psycopg.conninfo import make_conninfo

    from projections.decision_store import PostgresDecisionLog

    conninfo = make_conninfo(
        dbname=env["POSTGRES_DBNAME"], host=env["POSTGRES_HOST"], port=env["POSTGRES_PORT"],
        user=env["POSTGRES_USER"], password=env["POSTGRES_PASSWORD"],
        connect_timeout=env.get("POSTGRES_CONNECT_TIMEOUT", "10"),
    )
    return PostgresDecisionLog(conninfo, env.get("POSTGRES_SCHEMA") or "public")


def replica_id(name: str | None = None) -> str:
    """Which process answered: `--replica-name`, else hostname:pid."""
    return name or f"{socket.gethostname()}:{os.getpid()}"

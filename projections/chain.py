"""The hash chain's arithmetic: the digest of a stored event and the link sealing it in the
log (see projections/audit.py for what the chain proves). Pure: the chained recorders
(interlock/persistence), the verifier and the decision log compute with these."""

from __future__ import annotations

import hashlib
from uuid import UUID

from eventsourcing.persistence import StoredEvent

GENESIS = bytes(32)
CHAIN_SUFFIX = "_chain"
PAGE = 10_000
"""How many events or chain rows are read at a time."""


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


class ChainRefused(Exception):
    """A write (or a seal) refused because the log since the chain's head is not what a chained
    writer left there: sealing it would vouch for rows no writer of ours stored. Names the
    position; the transaction is rolled back, so nothing of the write is stored."""

    def __init__(self, position: int, problem: str, detail: str) -> None:
        super().__init__(f"position {position}: {problem}: {detail}")
        self.position, self.problem, self.detail = position, problem, detail

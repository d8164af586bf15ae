"""Index snapshots: the fact base and its position in one file.

Replaying a store of a million events into a fresh index takes tens of seconds; loading the
fact base from a snapshot takes a few, after which only the events past the snapshot's position
are replayed. A snapshot is derived data: it can be deleted at any time, and one that does not
fit (another store, an older layout, a damaged file) is ignored in favour of a full replay.

Snapshots are files (`interlock snapshot FILE`, read back through `--snapshot FILE` or
`INTERLOCK_SNAPSHOT`) rather than rows in the store: the event store stays the one source of
truth, holding events only, SQLite and PostgreSQL stores are treated alike, and a file can sit
on a volume that every replica mounts (or be copied from object storage) without loading the
database with blobs of hundreds of megabytes.

File format (version `FORMAT`): the line `MAGIC`, one line of JSON (`SnapshotInfo`), then the
fact base as a pickle. The header names the position and a digest of the stored event there,
so a snapshot is only used on the store it was taken from; `layout` is a digest of the fact
base's field names and of the code of `domain.facts` and `domain.subjects`, so a snapshot
from code with another layout is refused rather than misread. The payload is a pickle: load
snapshots only from where Interlock itself writes them, with the same trust as the database.
"""

from __future__ import annotations

import copyreg
import dataclasses
import hashlib
import io
import json
import logging
import os
import pickle
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import cache
from operator import attrgetter
from pathlib import Path
from typing import Any

from eventsourcing.persistence import ApplicationRecorder

from domain import facts as facts_module
from domain import histories as histories_module
from domain import subjects as subjects_module
from domain.facts import DirectiveFacts, EntitlementFacts, FactBase, ModelFacts
from domain.subjects import Granted, GrantRevoked, Profile, Stated, SubjectRecord, Withdrawn
from projections.access_index import AccessIndex
from projections.gc_pause import gc_paused

log = logging.getLogger(__name__)

MAGIC = b"interlock-index-snapshot\n"
FORMAT = 2

_MEMOS = {DirectiveFacts: ("_compiled",)}
"""Fields that only cache what the others determine: left out, rebuilt on use. (An
entitlement's `_covers` is kept: it is one small table shared by every entitlement granted
for the same selectors, and pickled once.)"""
_CLASSES = (ModelFacts, EntitlementFacts, DirectiveFacts, Stated, Withdrawn, Granted,
            GrantRevoked)
_SLOTTED = (Profile, SubjectRecord)
"""Pickled by their own `__reduce__` (a profile as its facts, its derived tables rebuilt)."""


class SnapshotError(Exception):
    """A snapshot that cannot be used here; the message says why."""


@dataclass(frozen=True)
class SnapshotInfo:
    """The header of a snapshot file."""

    format: int
    layout: str
    position: int
    event: str | None
    """Digest of the stored event at `position` (None at 0): which store this came from."""
    created_at: str
    payload_bytes: int
    payload_sha256: str


def _reducer(cls: type) -> Callable[[Any], tuple[type, tuple[Any, ...]]]:
    """Pickles a slotted dataclass as its constructor call: several times faster to write and
    read than the generic slots protocol, and leaves out the memo fields."""
    memos = _MEMOS.get(cls, ())
    names = [f.name for f in dataclasses.fields(cls) if f.name not in memos]
    hidden = [f.name for f in dataclasses.fields(cls) if not f.init and f.name not in memos]
    if hidden:  # the constructor could not restore them: refuse to write what cannot be read
        raise TypeError(f"{cls.__qualname__}: fields outside __init__ {hidden}")
    get = attrgetter(*names)
    return lambda obj: (cls, get(obj))


_DISPATCH = copyreg.dispatch_table.copy()
_DISPATCH.update({cls: _reducer(cls) for cls in _CLASSES})


@cache
def layout() -> str:
    """A digest of what a snapshot stores and of the code that gives it meaning: the fact
    base's fields and the source of `domain.facts`, `domain.histories` and `domain.subjects`.
    Any change to either refuses older snapshots (one full replay after an upgrade) rather
    than risk misreading them."""
    shape: dict[str, Any] = {
        cls.__qualname__: [f.name for f in dataclasses.fields(cls)] for cls in _CLASSES
    }
    shape.update({cls.__qualname__: list(cls.__slots__) for cls in _SLOTTED})
    shape["FactBase"] = sorted(vars(FactBase()))
    digest = hashlib.sha256(json.dumps([FORMAT, shape], sort_keys=True).encode())
    digest.update(Path(facts_module.__file__ or "").read_bytes())
    digest.update(Path(histories_module.__file__ or "").read_bytes())
    digest.update(Path(subjects_module.__file__ or "").read_bytes())
    return digest.hexdigest()[:16]


def event_digest(recorder: ApplicationRecorder, position: int) -> str | None:
    """Identifies the store by its event at `position` (its recorded state includes the
    recorded time, so two stores fed the same commands still differ)."""
    if position == 0:
        return None
    found = recorder.select_notifications(start=position, limit=1)
    if not found or found[0].id != position:
        return "absent"
    notification = found[0]
    digest = hashlib.sha256(notification.topic.encode() + b"\0" + notification.state)
    return digest.hexdigest()[:32]


def write_snapshot(index: AccessIndex, recorder: ApplicationRecorder, path: Path) -> SnapshotInfo:
    """Writes the index's fact base to `path`, atomically: readers see the old file or the
    new one, never a part. Holds the index still while pickling (seconds on a large index), so
    take snapshots from a process that does not serve decisions."""
    buffer = io.BytesIO()
    with index.reading():
        pickler = pickle.Pickler(buffer, protocol=pickle.HIGHEST_PROTOCOL)
        pickler.dispatch_table = _DISPATCH
        pickler.dump(index.facts)
        position = index.position
    payload = buffer.getbuffer()
    info = SnapshotInfo(
        format=FORMAT, layout=layout(), position=position,
        event=event_digest(recorder, position),
        created_at=datetime.now(UTC).isoformat(timespec="seconds"),
        payload_bytes=len(payload), payload_sha256=hashlib.sha256(payload).hexdigest(),
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        os.chmod(temporary, 0o644)  # replicas may read it as another user; it holds no secret
        with os.fdopen(handle, "wb") as stream:
            stream.write(MAGIC)
            stream.write(json.dumps(asdict(info)).encode() + b"\n")
            stream.write(payload)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return info


def read_info(path: Path) -> SnapshotInfo:
    """The header alone, without reading the fact base."""
    with path.open("rb") as stream:
        return _read_header(stream, path)


def _read_header(stream: Any, path: Path) -> SnapshotInfo:
    if stream.readline() != MAGIC:
        raise SnapshotError(f"{path} is not an Interlock index snapshot")
    try:
        info = SnapshotInfo(**json.loads(stream.readline()))
    except (ValueError, TypeError) as error:
        raise SnapshotError(f"{path}: unreadable header ({error})") from None
    if info.format != FORMAT or info.layout != layout():
        raise SnapshotError(
            f"{path}: written by another version of Interlock (format {info.format}, layout "
            f"{info.layout}; this one reads format {FORMAT}, layout {layout()})"
        )
    return info


def load_snapshot(path: Path, recorder: ApplicationRecorder) -> tuple[FactBase, SnapshotInfo]:
    """The fact base a snapshot holds, after checking it belongs to this store and is whole."""
    with path.open("rb") as stream:
        info = _read_header(stream, path)
        found = event_digest(recorder, info.position)
        if found != info.event:
            why = "lacks its position" if found == "absent" else "has another event there"
            raise SnapshotError(
                f"{path}: taken at position {info.position} of another store (this store "
                f"{why})"
            )
        payload = stream.read()
    if len(payload) != info.payload_bytes or (
        hashlib.sha256(payload).hexdigest() != info.payload_sha256
    ):
        raise SnapshotError(f"{path}: damaged (its payload does not match its digest)")
    with gc_paused(freeze=True):  # millions of long-lived objects, none of them garbage
        facts = pickle.loads(payload)
    if not isinstance(facts, FactBase) or facts.position != info.position:
        raise SnapshotError(f"{path}: the payload is not the fact base its header describes")
    return facts, info


def restore_index(
    path: Path, recorder: ApplicationRecorder, replaying: str = "the store"
) -> tuple[AccessIndex, SnapshotInfo] | None:
    """An index started from the snapshot at `path`, or None (logged) when there is none
    usable: the caller then replays `replaying` (the store, or the events topic) from the
    start."""
    try:
        facts, info = load_snapshot(path, recorder)
    except FileNotFoundError:
        log.warning("no index snapshot at %s yet; replaying %s", path, replaying)
        return None
    except (SnapshotError, OSError, pickle.UnpicklingError) as error:
        log.warning("ignoring index snapshot: %s; replaying %s", error, replaying)
        return None
    index = AccessIndex()
    index.facts = facts
    return index, info

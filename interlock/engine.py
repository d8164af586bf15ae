"""Wiring: the application on its store and the access index that follows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from domain.application import Clock, Interlock, SignatureCheck, system_clock
from interlock.config import (
    SNAPSHOT_REFRESH_EVENTS,
    StoreMissing,
    is_postgres,
    prepare_store,
    snapshot_path,
    store_environment,
    store_exists,
    store_url,
)
from projections.access_index import AccessIndex
from projections.store_follower import Progress, StoreFollower

if TYPE_CHECKING:  # imported where used: a process that only writes never loads them
    from interlock.revocations import RevocationLog
    from projections.enforcement import Enforcer
    from projections.snapshot import SnapshotInfo


@dataclass
class Engine:
    app: Interlock
    index: AccessIndex
    follower: StoreFollower
    revocations: RevocationLog | None = None
    """Embedded enforcement's output, when the engine enforces."""
    enforcer: Enforcer | None = None
    """The embedded kill switch, a subscriber of the index, when the engine enforces."""
    snapshot: SnapshotInfo | None = None
    """The snapshot the index started from, if one was loaded."""

    def catch_up(self, progress: Progress | None = None) -> int:
        """Applies what the store holds; the embedded kill switch stays silent about the events
        its first catch-up reads (history, enforced before) and enforces every later one."""
        position = self.follower.catch_up(progress=progress)
        if self.enforcer is not None:
            if not self.enforcer.emitting and self.revocations is not None:
                self.revocations.learn(self.index.facts.records)  # before the first order
            self.enforcer.emitting = True
        return position

    @property
    def replayed(self) -> int:
        """How many events the index has applied since it started (from its snapshot, or from
        the store's first event)."""
        return self.index.position - (self.snapshot.position if self.snapshot else 0)

    def close(self) -> None:
        self.follower.stop()
        self.app.close()


def snapshot_due(engine: Engine, path: Path, beside: bool) -> bool:
    """Whether `engine`'s index is worth writing to `path`, the snapshot it was offered: it
    replayed SNAPSHOT_REFRESH_EVENTS or more past it. A file there that could not be used
    (another store's or version's, damaged) is replaced only `beside` the store, where it can
    be no other store's; a file named elsewhere may be shared with another store's processes,
    and is left as it is."""
    if engine.index.position == 0:
        return False
    if engine.snapshot is None and path.is_file():
        return beside
    return engine.replayed >= SNAPSHOT_REFRESH_EVENTS


def keep_snapshot(engine: Engine, path: Path) -> str | None:
    """Writes `engine`'s index to `path` (atomically: a reader sees the old file or the new
    one); the reason, when it cannot be written, is returned rather than raised: the snapshot
    is derived data, and the command it follows has already answered."""
    from projections.snapshot import write_snapshot

    try:
        write_snapshot(engine.index, engine.app.recorder, path)
    except OSError as error:
        return f"index snapshot {path} not written: {error.strerror or error}"
    return None


def open_engine(
    store: str | None = None,
    clock: Clock = system_clock,
    catch_up: bool = True,
    check_signature: SignatureCheck | None = None,
    enforce: bool = False,
    revocation_file: Path | None = None,
    snapshot: str | Path | None = None,
    create: bool = True,
) -> Engine:
    """Opens the store named by `store` (or INTERLOCK_STORE) and builds its index;
    `check_signature` vets directive commands (see `interlock.signing`); by default the officer
    keys configured in INTERLOCK_OFFICER_KEYS do, so that every path that writes (the CLI, HTTP,
    Kafka intake) refuses unsigned directives alike. With `enforce`, the
    kill switch runs in-process and publishes to `engine.revocations` (and `revocation_file`).

    With `catch_up`, the index starts from the snapshot `snapshot` (or INTERLOCK_SNAPSHOT)
    when one fits the store, and replays only the later events; an enforcing engine's kill
    switch then reads its reach indexes from the facts and its timetable from the events
    whose moments are still to come (`Enforcer.resume`).
    A PostgreSQL store is followed by LISTEN/NOTIFY (`SubscriptionFollower`), others by
    polling (`StoreFollower`).

    Without `create` (read-only commands) a store that does not exist raises StoreMissing
    instead of being created empty."""
    url = store_url(store)
    env = store_environment(url)
    if create:
        prepare_store(url)
    elif not store_exists(url):
        raise StoreMissing(url)
    if check_signature is None:
        from interlock.signing import OfficerKeys

        check_signature = OfficerKeys.configured()
    app = Interlock(env=env, clock=clock, check_signature=check_signature)
    restored = None
    path = snapshot_path(snapshot) if catch_up else None
    if path is not None:
        from projections.snapshot import restore_index

        restored = restore_index(path, app.recorder)
    index, info = restored or (AccessIndex(), None)
    follower_class = StoreFollower
    if is_postgres(url):
        from projections.postgres_follower import SubscriptionFollower

        follower_class = SubscriptionFollower
    if enforce:
        from interlock.revocations import RevocationLog
        from projections.enforcement import Enforcer

        revocations = RevocationLog(revocation_file)
        enforcer = Enforcer(index, publish=revocations.publish, emitting=False)
        if info is not None:
            from projections.event_pages import events_at

            enforcer.resume(lambda positions: events_at(app, positions))
        engine = Engine(app, index, follower_class(app, index), revocations, enforcer=enforcer,
                        snapshot=info)
    else:
        engine = Engine(app, index, follower_class(app, index), snapshot=info)
    if catch_up:
        engine.catch_up()
    return engine

"""Wiring: the application on its store and the access index that follows it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from domain.application import Clock, Interlock, SignatureCheck, system_clock
from interlock.config import store_environment, store_url
from interlock.revocations import RevocationLog
from projections.access_index import AccessIndex
from projections.enforcement import Enforcer
from projections.store_follower import Progress, StoreFollower


@dataclass
class Engine:
    app: Interlock
    index: AccessIndex
    follower: StoreFollower
    revocations: RevocationLog | None = None
    """Embedded enforcement's output, when the engine enforces."""

    def catch_up(self, progress: Progress | None = None) -> int:
        return self.follower.catch_up(progress=progress)

    def close(self) -> None:
        self.follower.stop()
        self.app.close()


def open_engine(
    store: str | None = None,
    clock: Clock = system_clock,
    catch_up: bool = True,
    check_signature: SignatureCheck | None = None,
    enforce: bool = False,
    revocation_file: Path | None = None,
) -> Engine:
    """Opens the store named by `store` (or INTERLOCK_STORE) and builds its index;
    `check_signature` vets directive commands (see `interlock.signing`). With `enforce`, the
    kill switch runs in-process and publishes to `engine.revocations` (and `revocation_file`)."""
    app = Interlock(
        env=store_environment(store_url(store)), clock=clock, check_signature=check_signature
    )
    index = AccessIndex()
    if enforce:
        revocations = RevocationLog(revocation_file)
        follower = StoreFollower(app, index, Enforcer(index), revocations.publish)
        engine = Engine(app, index, follower, revocations)
    else:
        engine = Engine(app, index, StoreFollower(app, index))
    if catch_up:
        engine.catch_up()
    return engine

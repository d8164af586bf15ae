"""Wiring: the application on its store and the access index that follows it."""

from __future__ import annotations

from dataclasses import dataclass

from domain.application import Clock, Interlock, system_clock
from interlock.config import store_environment, store_url
from projections.access_index import AccessIndex
from projections.store_follower import Progress, StoreFollower


@dataclass
class Engine:
    app: Interlock
    index: AccessIndex
    follower: StoreFollower

    def catch_up(self, progress: Progress | None = None) -> int:
        return self.follower.catch_up(progress=progress)

    def close(self) -> None:
        self.follower.stop()
        self.app.close()


def open_engine(
    store: str | None = None, clock: Clock = system_clock, catch_up: bool = True
) -> Engine:
    """Opens the store named by `store` (or INTERLOCK_STORE) and builds its index."""
    app = Interlock(env=store_environment(store_url(store)), clock=clock)
    index = AccessIndex()
    engine = Engine(app, index, StoreFollower(app, index))
    if catch_up:
        engine.catch_up()
    return engine

"""What `interlock serve` was configured with, in one validated object.

The serving process and each uvicorn worker build their service from it; `serve` hands it to
workers through one environment variable, because uvicorn starts workers from an import string.
"""

from __future__ import annotations

import os
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from interlock.auth import TokenTable
from interlock.decision_log import DecisionLogError, check_destination

SETTINGS_VARIABLE = "INTERLOCK_SERVE_SETTINGS"

Seconds = Annotated[float, Field(gt=0)]


class ServeSettings(BaseModel):
    """Store, credentials and the bounds of read-your-writes and staleness."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    store: str | None = None
    """The event store URL; None means `INTERLOCK_STORE` or the default SQLite file."""
    tokens: TokenTable | None = None
    """Token digests and roles; None turns authentication off (loopback only)."""
    officer_keys: dict[str, str] | None = None
    """Officer key id → base64 Ed25519 public key; None means directives need no signature."""
    wait_seconds: Seconds = 2.0
    """How long a decision asking for a position the index has not reached may wait for it."""
    max_lag_seconds: Seconds = 2.0
    """Staleness bound: once the oldest stored event the index lacks has been in the store this
    long, directive-scoped models are denied with `stale_index` and /readyz answers 503."""
    follow_interval: Seconds = 0.05
    """How often the follower thread polls the store for new events."""
    refresh_interval: Seconds = 0.1
    """How often the store's last position is read, for the lag and the staleness check."""
    follow: Literal["store", "kafka"] = "store"
    """Where the index comes from: the store (embedded, with the kill switch in-process) or
    `interlock.events` (a decision replica; the relay and enforcer run elsewhere)."""
    kafka: str | None = None
    """Bootstrap servers, with `follow="kafka"`."""
    topic_prefix: str = ""
    revocation_file: str | None = None
    """Embedded mode also appends access changes to this JSON-lines file."""
    decision_log: str | None = None
    """Where served decisions are logged: sqlite:///PATH, postgresql://... or kafka (on
    `kafka`); None logs nothing (see interlock/http/decisions.py)."""
    decision_log_mode: Literal["strict", "best-effort"] = "strict"
    decision_log_queue: Annotated[int, Field(ge=1)] = 100_000
    """Best-effort mode: served decisions that may wait for the writer; more are dropped."""
    retention_seconds: Seconds | None = None
    """Prune log entries older than this, on a schedule."""
    replica_name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    """Names this process in the log (default hostname:pid)."""

    @model_validator(mode="after")
    def _kafka_when_following_it(self) -> ServeSettings:
        if self.follow == "kafka" and not self.kafka:
            raise ValueError("--follow kafka needs --kafka HOST:PORT (or INTERLOCK_KAFKA)")
        return self

    @model_validator(mode="after")
    def _decision_log_usable(self) -> ServeSettings:
        if self.decision_log is None:
            if self.retention_seconds is not None:
                raise ValueError("--retention prunes the decision log: give --decision-log DEST")
            return self
        try:
            check_destination(self.decision_log, self.kafka)
        except DecisionLogError as error:
            raise ValueError(f"--decision-log: {error}") from None
        return self

    @model_validator(mode="after")
    def _refresh_within_bound(self) -> ServeSettings:
        if self.refresh_interval >= self.max_lag_seconds:
            raise ValueError(
                f"the staleness bound (--max-lag) must be longer than the store refresh interval "
                f"({self.refresh_interval:g} s), or the index would always count as stale"
            )
        return self

    def to_environment(self) -> None:
        os.environ[SETTINGS_VARIABLE] = self.model_dump_json()

    @classmethod
    def from_environment(cls) -> ServeSettings:
        """The settings `interlock serve` left; without them there is no telling whether the
        address it binds was vetted for serving without tokens, so none are assumed."""
        text = os.environ.get(SETTINGS_VARIABLE)
        if not text:
            raise RuntimeError(f"{SETTINGS_VARIABLE} is not set: start the service with "
                               "`interlock serve`")
        return cls.model_validate_json(text)

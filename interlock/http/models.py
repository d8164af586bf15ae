"""Request and response bodies of the HTTP API, as pydantic models (they make /openapi.json).

Hot paths parse with these models' validators but answer with pre-serialised JSON; the response
models still describe exactly what is sent.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer, Strict

from domain.commands import Command
from domain.limits import MAX_BATCH_COMMANDS, MAX_DECISION_BATCH
from domain.queries import MAX_POSITION, DecisionRequest

Position = Annotated[int, Strict(), Field(ge=0, le=MAX_POSITION)]
"""A store position: a JSON integer (not `"5"`, `5.0` or `true`)."""
Time = Annotated[
    datetime,
    PlainSerializer(lambda moment: moment.astimezone(UTC).isoformat(), return_type=str,
                    when_used="json"),
]
"""Written as `Decision.to_json` writes `at` (`+00:00`, not `Z`), so every time in every body
has one form."""
EFFECTS = ("allow", "deny", "route")
REASON_CODES = (
    "unknown_model", "model_withdrawn", "no_entitlement", "entitled", "directive",
    "unknown_attribute", "route", "route_target_denied", "route_cycle", "stale_index",
)
Effect = Annotated[str, Field(
    description="One of `allow`, `deny`, `route` (docs/decision-rule.md). A string, not a "
    "closed enum: a client should treat a value it does not know as a denial.",
    examples=list(EFFECTS),
)]
ReasonCode = Annotated[str, Field(
    description="Known codes: " + ", ".join(f"`{code}`" for code in REASON_CODES)
    + " (docs/decision-rule.md). A string, not a closed enum: later versions may add codes, "
    "which a client should show as they are.",
    examples=list(REASON_CODES),
)]


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DecideIn(DecisionRequest):
    """A decision request; `min_position` (like `as_of`) asks for read-your-writes: a replica
    whose index is behind it waits briefly, then answers 409 rather than a stale decision."""

    min_position: Position | None = None

    @property
    def required_position(self) -> int:
        return max(self.min_position or 0, self.as_of or 0)


class BatchIn(_Body):
    requests: Annotated[list[DecideIn], Field(max_length=MAX_DECISION_BATCH)]
    """At most MAX_DECISION_BATCH: bounds one call's memory and time, not throughput."""


class ReasonOut(_Body):
    code: ReasonCode
    ref: str | None


class DecisionOut(_Body):
    """The decision JSON of docs/decision-rule.md."""

    subject: str
    model: str
    effect: Effect
    route_to: str | None
    disclosed: bool
    reasons: list[ReasonOut]
    at: Time
    as_of: Position


class BatchOut(_Body):
    decisions: list[DecisionOut]
    """In request order."""


class CommandListIn(_Body):
    commands: Annotated[list[Command], Field(max_length=MAX_BATCH_COMMANDS)]
    """Applied in order; the first refused one stops the list, the ones before it are kept."""


class AppliedOut(_Body):
    applied: int
    """Commands stored."""
    repeated: int
    """Commands skipped as repeats of an applied `command_id` (same id, same command)."""
    position: Position
    """The store position after them: pass it as `min_position` to read your writes."""


class ErrorOut(_Body):
    error: str
    field: str | None = None
    """The dotted path of what is wrong, e.g. `requests.3.at` or `signature`."""
    index: int | None = None
    """Which item of a list it is about."""


class CommandRejectedOut(ErrorOut):
    """A refused command: nothing of it was stored; the `applied` commands before it were."""

    applied: int
    repeated: int
    position: Position


class BehindOut(ErrorOut):
    """The index had not reached the asked position within the wait bound."""

    position: Position
    """This replica's index position."""
    required: Position


class PositionOut(_Body):
    position: Position
    """The last stored event's position."""
    index_position: Position
    """The last event this replica's index has applied: decisions are `as_of` it."""
    enforced_position: Position | None = None
    """Embedded mode: the last position whose access changes the in-process kill switch has
    published (it trails `index_position` while an order fans out); null on a replica."""


class HealthOut(_Body):
    status: Literal["ok"] = "ok"


class ReadyOut(_Body):
    ready: bool
    index_position: Position
    store_position: Position
    """The store's last position when it was last read (every refresh interval)."""
    lag_positions: Position
    lag_seconds: Annotated[float, Field(ge=0)]
    """How long the oldest stored event the index lacks has been in the store."""
    max_lag_seconds: float
    store_checked_seconds_ago: Annotated[float, Field(ge=0)]


class AttestationOut(_Body):
    kind: Literal["nationality", "location", "employer"]
    values: dict[str, list[str]]
    """The attributes it gives: citizenship and residency, location, or employer."""
    valid_from: Time
    valid_until: Time | None
    recorded_at: Time
    position: Position
    source: str
    evidence: str | None


class RevocationOut(_Body):
    effective_at: Time
    recorded_at: Time | None
    position: Position


class AttestationRevocationOut(RevocationOut):
    kind: Literal["nationality", "location", "employer"]


class EntitlementOut(_Body):
    entitlement: str
    grantee: dict[Literal["subject", "org"], str]
    models: list[str]
    valid_from: Time
    valid_until: Time | None
    recorded_at: Time
    position: Position
    revocations: list[RevocationOut]


class VerdictOut(_Body):
    """A decision without its subject, model and times: what changed."""

    effect: Effect
    route_to: str | None
    disclosed: bool
    reasons: list[ReasonOut]


class CauseOut(BaseModel):
    """The stored fact that changed a decision; the fields after `recorded_at` are the fact's
    own (as `interlock history --json` writes them)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    event: str
    """e.g. `directive_issued`, `nationality_attested`, `entitlement_revoked`."""
    ref: str
    position: Position
    recorded_at: Time | None


class HistoryChangeOut(_Body):
    model: str
    at: Time
    """The valid time from which `after` holds."""
    as_of: Position
    kind: str
    """`recorded` (a fact became known) or `took_effect` (a known fact started or stopped
    holding)."""
    access: str | None
    """`lost` or `gained` when the change crosses `allow`, else null."""
    cause: CauseOut
    before: VerdictOut
    after: VerdictOut


class HistoryOut(_Body):
    """What is known about a subject, each fact with its valid time, recorded time and
    position, every change of its decisions as they were made, and the current decision per
    registered model: the JSON of `interlock history --json`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    subject: str
    as_of: Position
    models: list[str]
    from_: Time | None = Field(alias="from")
    to: Time | None
    attestations: list[AttestationOut]
    """In the order they were recorded."""
    revocations: list[AttestationRevocationOut]
    entitlements: list[EntitlementOut]
    """The subject's own, and those of every org it was attested to work for."""
    changes: list[HistoryChangeOut]
    decisions: list[DecisionOut]


class ImpactRowOut(_Body):
    subject: str
    model: str
    group: str
    """`predicate` (the directive's predicate held) or `unknown_attribute` (it was unknown
    and the directive applies on unknown)."""
    unknown_attributes: list[str]
    access: str | None
    """`lost` or `gained` when the change crosses `allow`, else null."""
    before: VerdictOut
    after: VerdictOut


class ImpactComparedOut(_Body):
    at: Time
    """The directive's effective time: both decisions are at it."""
    before: Position
    after: Position
    """As known just before the directive and at its position."""
    models: list[str]
    subjects: int
    """Candidate subjects compared."""
    of_subjects: int
    """Subjects known."""


class ImpactChangedOut(_Body):
    pairs: int
    subjects: int
    by_model: dict[str, int]


class ImpactGroupOut(ImpactChangedOut):
    group: str
    unknown_attributes: list[str]


class ImpactOut(_Body):
    """The (subject, model) pairs whose decision at the directive's effective time differs
    between the position before it was issued and the position it was issued at, grouped by
    reason: the JSON of `interlock impact --json`."""

    directive: str
    what_if: bool
    authority: str
    reference: str
    received_at: Time
    effective_at: Time
    recorded_at: Time | None
    position: Position
    effect: Effect
    selectors: list[str]
    predicate: dict[str, Any]
    """The directive's predicate (schema `Predicate`)."""
    on_unknown: str
    compared: ImpactComparedOut
    changed: ImpactChangedOut
    groups: list[ImpactGroupOut]
    changes: list[ImpactRowOut]


class DiffRowOut(_Body):
    subject: str
    model: str
    before: VerdictOut
    after: VerdictOut


class DiffComparedOut(_Body):
    subjects: int
    """Subjects whose access could change between the two times."""
    of_subjects: int


class DiffCountsOut(_Body):
    gained: dict[str, int]
    lost: dict[str, int]
    """Per model."""


class DiffOut(BaseModel):
    """Who gained or lost access (an `allow` decision) between two valid times, as known at
    `as_of`: the JSON of `interlock diff --json`."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: Time = Field(alias="from")
    to: Time
    as_of: Position
    models: list[str]
    compared: DiffComparedOut
    counts: DiffCountsOut
    gained: list[DiffRowOut]
    lost: list[DiffRowOut]

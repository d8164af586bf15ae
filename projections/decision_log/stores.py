"""Reading a decision log: the filters of a query, what a log store offers, the in-memory log,
and retention (what a prune removed, how long to keep)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from domain.commands import Identifier, Selector, Timestamp
from domain.decision import utc_iso
from domain.facts import selector_matches
from domain.limits import MAX_ID_CHARS, MAX_LOG_ROWS
from projections.decision_log.entry import Entry, micros

Effect = Literal["allow", "deny", "route"]
ModelFilter = Annotated[Selector, Field(max_length=MAX_ID_CHARS + len("family:"))]


class LogQuery(BaseModel):
    """Which served decisions to list: each filter is optional and they all must hold; served
    time in [from, to). Shared by `decisions query` and `GET /v1/decisions`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    subject: Identifier | None = None
    model: ModelFilter | None = Field(
        None, description="A model id, family:NAME or *.")
    effect: Effect | None = None
    from_: Timestamp | None = Field(None, alias="from",
                                    description="Served at or after (with offset).")
    to: Timestamp | None = Field(None, description="Served before (with offset).")
    limit: Annotated[int, Field(ge=1, le=MAX_LOG_ROWS)] = 1000

    @field_validator("to")
    @classmethod
    def _after_from(cls, to: datetime | None, info: ValidationInfo) -> datetime | None:
        start = info.data.get("from_")
        if to is not None and start is not None and to <= start:
            raise ValueError("must be later than from")
        return to

    def matches(self, entry: Entry) -> bool:
        """Whether an entry passes the filters (the SQL logs filter in SQL, alike)."""
        served = entry.served
        if served is None:
            return False
        d = served.decision
        if self.subject is not None and d.subject != self.subject:
            return False
        if self.model is not None and not selector_matches(self.model, d.model,
                                                           served.family or ""):
            return False
        if self.effect is not None and d.effect != self.effect:
            return False
        if self.from_ is not None and entry.served_us < micros(self.from_):
            return False
        return self.to is None or entry.served_us < micros(self.to)


class LogReader(Protocol):
    """What reading a decision log takes: the SQL tables, or the Kafka topic as read once."""

    def select(self, query: LogQuery) -> Iterator[Entry]:
        """Served decisions passing `query`'s filters (not its limit), by served time."""

    def chain_ranges(self, start: datetime | None, end: datetime | None
                     ) -> dict[str, tuple[int, int]]:
        """Per chain, the first and last sequence number of decisions served in [start, end)."""

    def chain_entries(self, chain: str, low: int, high: int) -> Iterator[Entry]:
        """A chain's entries with sequence numbers in [low, high], in order."""

    def entry_before(self, chain: str, seq: int) -> Entry | None:
        """A chain's last entry before `seq`."""

    def prunes(self) -> list[Entry]:
        """Every prune record kept."""

    def snapshot(self) -> LogReader:
        """The log to read one audit from: itself, or (Kafka) the topic as read once."""


class DecisionLog(LogReader, Protocol):
    """A decision log's store: the SQL tables or the Kafka topic."""

    def append(self, entries: Sequence[Entry]) -> None:
        """Stores entries durably, all or none."""

    def prune(self, cutoff: datetime, replica: str) -> PruneResult:
        """Removes each chain's prefix served before `cutoff` and records it."""

    def close(self) -> None: ...


def query(log: LogReader, asked: LogQuery) -> tuple[list[Entry], bool]:
    """Up to `asked.limit` matching entries, and whether more matched."""
    found: list[Entry] = []
    entries = log.select(asked)
    try:
        for entry in entries:
            if len(found) == asked.limit:
                return found, True
            found.append(entry)
        return found, False
    finally:
        close = getattr(entries, "close", None)
        if close is not None:  # a database cursor: let it go now, not when collected
            close()


@dataclass
class MemoryLog:
    """A decision log held in memory: what the Kafka log reads the topic into (a `LogReader`
    filtering with `LogQuery.matches`), and a test double."""

    entries: list[Entry] = field(default_factory=list)

    def append(self, entries: Sequence[Entry]) -> None:
        self.entries.extend(entries)

    def select(self, asked: LogQuery) -> Iterator[Entry]:
        return iter(sorted((e for e in self.entries if asked.matches(e)),
                           key=lambda e: (e.served_us, e.chain, e.seq)))

    def chain_ranges(self, start: datetime | None, end: datetime | None
                     ) -> dict[str, tuple[int, int]]:
        low = None if start is None else micros(start)
        high = None if end is None else micros(end)
        ranges: dict[str, tuple[int, int]] = {}
        for e in self.entries:
            if e.served is None or (low is not None and e.served_us < low) or (
                    high is not None and e.served_us >= high):
                continue
            first, last = ranges.get(e.chain, (e.seq, e.seq))
            ranges[e.chain] = (min(first, e.seq), max(last, e.seq))
        return ranges

    def chain_entries(self, chain: str, low: int, high: int) -> Iterator[Entry]:
        return iter(sorted((e for e in self.entries
                            if e.chain == chain and low <= e.seq <= high),
                           key=lambda e: e.seq))

    def entry_before(self, chain: str, seq: int) -> Entry | None:
        before = [e for e in self.entries if e.chain == chain and e.seq < seq]
        return max(before, key=lambda e: e.seq) if before else None

    def prunes(self) -> list[Entry]:
        return [e for e in self.entries if e.pruned is not None]

    def snapshot(self) -> MemoryLog:
        return self

    def close(self) -> None:
        return None



@dataclass(frozen=True)
class PruneResult:
    cutoff: datetime
    removed: int
    record: Entry | None
    """The prune record written (None when nothing was removed)."""
    skipped: dict[str, str] = field(default_factory=dict)
    """Chains left whole, and why (entries missing: `decisions audit` names them)."""

    def to_json(self) -> dict[str, Any]:
        return {"cutoff": utc_iso(self.cutoff), "removed": self.removed,
                "record": None if self.record is None else self.record.entry_id,
                "skipped": self.skipped}


_DURATION = re.compile(r"^\s*(\d{1,6})\s*(s|m|h|d|w|y)\s*$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86_400, "w": 7 * 86_400, "y": 366 * 86_400}


def parse_duration(text: str) -> timedelta:
    """`90s`, `15m`, `12h`, `30d`, `6w` or `5y`; a year counts 366 days, so `5y` never removes
    an entry younger than five calendar years."""
    found = _DURATION.match(text)
    if found is None:
        raise ValueError(f"expected a duration like 30d, 12h or 5y, not {text!r}")
    seconds = int(found[1]) * _UNITS[found[2]]
    if seconds == 0:
        raise ValueError("must be longer than zero")
    return timedelta(seconds=seconds)

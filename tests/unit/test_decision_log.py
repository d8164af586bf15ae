"""The decision log's parts without a database: ids, the chain, the writer thread's group
commits and its accounting, durations and query filters."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from pydantic import ValidationError

from domain.decision import Decision, Reason
from projections.chain import GENESIS, chain_link
from projections.decision_log import (
    Chain,
    DecisionIds,
    Entry,
    LogQuery,
    LogWriter,
    MemoryLog,
    Pending,
    digest_of,
    parse_duration,
    verify_chain,
)

AT = datetime(2026, 11, 26, 22, 30, tzinfo=UTC)
ALLOW = Decision("u-1", "fable-5", "allow", None, False, (Reason("entitled", "e-1"),), AT, 7)


def pending(count: int, ids: DecisionIds | None = None) -> list[Pending]:
    ids = ids or DecisionIds()
    return [(entry_id, 1_796_000_000_000_000 + n, ALLOW, None, None, None)
            for n, entry_id in enumerate(ids.take(count))]


def test_decision_ids_are_distinct_version_8_uuids() -> None:
    first, second = DecisionIds(), DecisionIds()
    ids = first.take(1000) + second.take(3)
    assert len(set(ids)) == len(ids)
    for text in ids:
        parsed = uuid.UUID(text)
        assert str(parsed) == text and parsed.version == 8
        assert parsed.variant == uuid.RFC_4122
    assert ids[0][:24] == ids[999][:24] != ids[1000][:24]


def test_the_chain_uses_the_event_stores_link_function() -> None:
    chain = Chain("gw:1")
    entries = chain.seal(pending(3), {"fable-5": "fable"}.get)
    previous = GENESIS
    for seq, entry in enumerate(entries, start=1):
        assert entry.seq == seq and entry.chain == chain.name
        assert entry.digest == digest_of(entry.canonical())
        assert entry.link == chain_link(previous, seq, entry.entry_id, 1, entry.digest)
        previous = entry.link
    assert (chain.seq, chain.link) == (0, GENESIS), "advanced only once stored"
    chain.advance(entries[-1])
    assert chain.seal(pending(1), {}.get)[0].seq == 4


def test_verify_names_a_duplicated_sequence_number() -> None:
    chain = Chain("gw:1")
    entries = chain.seal(pending(2), {}.get)
    twin = chain.seal(pending(1), {}.get)[0]  # a second entry 1: another writer, same name
    problems: list = []
    verify_chain(chain.name, [entries[0], twin, entries[1]], None, problems)
    assert [(p.problem, p.seq) for p in problems] == [("duplicated", 1)]


class Slow(MemoryLog):
    """A log whose appends wait for the test, and fail on request."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.entered = threading.Event()
        self.fail = False
        self.commits: list[int] = []

    def append(self, entries: Sequence[Entry]) -> None:
        self.entered.set()
        self.gate.wait(10)
        if self.fail:
            raise OSError("disk full")
        self.commits.append(len(entries))
        super().append(entries)


def test_the_writer_commits_what_queued_meanwhile_in_one_go() -> None:
    log = Slow()
    settled: list[tuple[list, BaseException | None]] = []
    writer = LogWriter(log, Chain("gw:1"), {}.get, capacity=100,
                       settle=lambda tokens, error: settled.append((tokens, error)))
    assert writer.submit(pending(1), "first")
    assert log.entered.wait(10)
    for n in range(5):                 # arrive while the first commit runs
        assert writer.submit(pending(2), f"later-{n}")
    assert writer.queued == 10
    log.gate.set()
    writer.close()
    assert log.commits == [1, 10]
    assert [tokens for tokens, _ in settled] == [["first"], [f"later-{n}" for n in range(5)]]
    assert [e.seq for e in log.entries] == list(range(1, 12))


def test_best_effort_counts_every_decision_it_does_not_keep() -> None:
    log = Slow()
    dropped: list[tuple[int, str]] = []
    written: list[int] = []
    writer = LogWriter(log, Chain("gw:1"), {}.get, capacity=3, on_written=written.append,
                       on_dropped=lambda count, reason: dropped.append((count, reason)))
    assert writer.submit(pending(1))
    assert log.entered.wait(10)
    assert writer.submit(pending(3))
    assert not writer.submit(pending(1))           # the queue holds 3
    log.fail = True
    log.gate.set()
    writer.close()
    assert not writer.submit(pending(2))           # stopped
    assert dropped == [(1, "queue_full"), (1, "write_failed"), (3, "write_failed"),
                       (2, "stopped")]
    assert written == [] and log.entries == []


def test_a_failed_commit_does_not_advance_the_chain() -> None:
    log = Slow()
    log.gate.set()
    errors: list[BaseException | None] = []
    chain = Chain("gw:1")
    writer = LogWriter(log, chain, {}.get, capacity=10,
                       settle=lambda tokens, error: errors.append(error))
    log.fail = True
    writer.submit(pending(2), "a")
    writer.close()
    assert isinstance(errors[0], OSError) and chain.seq == 0
    log.fail = False
    again = LogWriter(log, chain, {}.get, capacity=10, settle=lambda *_: None)
    again.submit(pending(1), "b")
    again.close()
    assert [e.seq for e in log.entries] == [1]


@pytest.mark.parametrize(("text", "seconds"), [
    ("90s", 90), ("15m", 900), ("12h", 43_200), ("30d", 2_592_000), ("6w", 3_628_800),
    (" 5y ", 5 * 366 * 86_400),
])
def test_durations(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "30", "d", "30 days", "-3d", "1.5d", "0h", "9999999d",
                                  "P30D"])
def test_durations_refused(text: str) -> None:
    with pytest.raises(ValueError, match=r"duration|longer than zero"):
        parse_duration(text)


@pytest.mark.parametrize(("given", "field"), [
    ({"subject": ""}, "subject"), ({"subject": "s" * 201}, "subject"),
    ({"model": "family:"}, "model"), ({"model": "a b"}, "model"),
    ({"model": "f" * 208}, "model"), ({"effect": "permit"}, "effect"),
    ({"from": "2026-11-26T17:21:00"}, "from"), ({"from": 1796000000}, "from"),
    ({"from": "2026-11-27T00:00:00Z", "to": "2026-11-27T00:00:00Z"}, "to"),
    ({"limit": 0}, "limit"), ({"limit": 10_001}, "limit"), ({"mode": "x"}, "mode"),
])
def test_query_filters_are_bounded_and_named(given: dict, field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        LogQuery.model_validate(given)
    assert caught.value.errors()[0]["loc"][0] in (field, f"{field}_")

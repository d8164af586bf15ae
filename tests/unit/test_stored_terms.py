"""Directive terms as stored: a store written before the terms were typed still reads, verifies
and decides alike, and the same commands store the same bytes (so the same chain).

The fixture (data/directive_store.json) was written by the code before `domain.terms`: the
commands applied with their recorded times, every stored event and chain row as stored, and the
decisions read from that store. Its last directive is stored without the terms `disclose`,
`exempt` and `on_unknown`, as events from before those terms existed are."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from domain.commands import AmendDirective, IssueDirective, parse_command
from domain.predicates import stored_predicate
from domain.terms import (
    DIRECTIVE_TERMS,
    KEEP,
    TERM_DEFAULTS,
    DirectiveTerms,
    Exempt,
    TermsChange,
)
from interlock.engine import Engine, open_engine
from projections.audit import verify_chain

FIXTURE = json.loads((Path(__file__).parent / "data" / "directive_store.json").read_text())


def _rows(db: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The stored events and chain rows of an SQLite store, in the fixture's form."""
    with sqlite3.connect(db) as con:
        events = [{"position": r[0], "originator_id": r[1], "originator_version": r[2],
                   "topic": r[3], "state": bytes(r[4]).decode()}
                  for r in con.execute("SELECT rowid, originator_id, originator_version, topic, "
                                       "state FROM stored_events ORDER BY rowid")]
        chain = [{"position": r[0], "digest": bytes(r[1]).hex(), "link": bytes(r[2]).hex()}
                 for r in con.execute("SELECT position, digest, link FROM stored_events_chain "
                                      "ORDER BY position")]
    return events, chain


def _engine(db: Path, clock: Any = None) -> Engine:
    return open_engine(f"sqlite:///{db}", clock=clock or (lambda: datetime.now(UTC)),
                       check_signature=lambda command: None)


@pytest.fixture
def old_store(tmp_path: Path) -> Path:
    """The fixture's rows written into a new store's tables, as the earlier code left them."""
    db = tmp_path / "old.db"
    _engine(db).close()
    with sqlite3.connect(db) as con:
        con.executemany(
            "INSERT INTO stored_events (rowid, originator_id, originator_version, topic, state) "
            "VALUES (?, ?, ?, ?, ?)",
            [(e["position"], e["originator_id"], e["originator_version"], e["topic"],
              e["state"].encode()) for e in FIXTURE["events"]])
        con.executemany(
            "INSERT INTO stored_events_chain (position, digest, link) VALUES (?, ?, ?)",
            [(c["position"], bytes.fromhex(c["digest"]), bytes.fromhex(c["link"]))
             for c in FIXTURE["chain"]])
    return db


def test_a_store_written_before_typed_terms_verifies_and_decides_alike(old_store: Path) -> None:
    engine = _engine(old_store)
    try:
        report = verify_chain(engine.app)
        assert report.ok, report.to_json()
        assert report.events == report.chained == len(FIXTURE["events"])
        decided = [engine.index.decide(d["subject"], d["model"], datetime.fromisoformat(d["at"]))
                   .to_json() for d in FIXTURE["decisions"]]
        assert decided == FIXTURE["decisions"]
    finally:
        engine.close()


def test_terms_missing_from_an_old_event_read_as_their_defaults(old_store: Path) -> None:
    engine = _engine(old_store)
    try:
        facts = engine.index.facts
        legacy = facts.directives["d-legacy"]
        terms = legacy.terms(datetime.fromisoformat("2026-03-01T00:00:00+00:00"), facts.position)
        assert (terms.disclose, terms.on_unknown, terms.exempts("s-1", frozenset({"org-a"}))) \
            == (False, "apply", False)
        assert terms.selectors == ("fable-4",)
    finally:
        engine.close()


def test_the_same_commands_store_the_same_bytes_and_chain(tmp_path: Path) -> None:
    db = tmp_path / "new.db"
    now = [datetime.fromisoformat(FIXTURE["commands"][0]["recorded_at"])]
    engine = _engine(db, clock=lambda: now[0])
    try:
        for step in FIXTURE["commands"]:
            now[0] = datetime.fromisoformat(step["recorded_at"])
            engine.app.apply(parse_command(step["command"]))
    finally:
        engine.close()
    events, chain = _rows(db)
    end = FIXTURE["commands_end"]
    assert len(events) == end
    directives = [e for e in events if ":Directive." in e["topic"]]
    assert len(directives) == 8
    assert events == FIXTURE["events"][:end]
    assert chain == FIXTURE["chain"][:end]


def _stored_terms(event_class: str) -> list[dict[str, Any]]:
    return [json.loads(e["state"])["terms"] for e in FIXTURE["events"]
            if e["topic"].endswith(f":Directive.{event_class}")]


def test_stored_terms_read_and_write_back_as_they_are_stored() -> None:
    """Key order included: the stored JSON object is the event's bytes."""
    issued = _stored_terms("Issued")[:-1]  # the last one predates three terms
    amended = _stored_terms("Amended")
    assert len(issued) == 3 and len(amended) == 4
    for stored in issued:
        assert list(DirectiveTerms.from_stored(stored).to_stored().items()) == list(stored.items())
    for stored in amended:
        assert list(TermsChange.from_stored(stored).to_stored().items()) == list(stored.items())


def test_the_commands_carry_exactly_the_terms_and_in_the_stored_order() -> None:
    """Adding a term to DirectiveTerms without the commands (or the other way) fails here."""
    not_terms = {"command_id", "type", "directive", "authority", "reference", "received_at",
                 "effective_at", "signature"}
    for command in (IssueDirective, AmendDirective):
        terms = [name for name in command.model_fields if name not in not_terms]
        assert terms == list(DirectiveTerms.from_stored(_stored_terms("Issued")[0]).to_stored())
        assert set(terms) == DIRECTIVE_TERMS
    typed = [f.name for f in dataclasses.fields(DirectiveTerms) if f.init]
    assert typed == [f.name for f in dataclasses.fields(TermsChange)]
    defaults = IssueDirective.model_validate(
        {"type": "issue_directive", "directive": "d", "models": ["*"],
         "subjects": {"everyone": True}}).terms().to_stored()
    assert {name: defaults[name] for name in TERM_DEFAULTS} == TERM_DEFAULTS


def test_an_amendment_keeps_what_it_does_not_carry_and_clears_what_it_sets_to_null() -> None:
    issued = DirectiveTerms(("fable-5",), stored_predicate({"everyone": True}), "route",
                            "haiku-1", expires_at=datetime(2027, 1, 1, tzinfo=UTC))
    clears = parse_command({"type": "amend_directive", "directive": "d", "expires_at": None})
    keeps = parse_command({"type": "amend_directive", "directive": "d", "disclose": True})
    assert isinstance(clears, AmendDirective) and isinstance(keeps, AmendDirective)
    assert clears.change() == TermsChange(expires_at=None)
    assert keeps.change().expires_at is KEEP
    assert clears.change().applied_to(issued) == dataclasses.replace(issued, expires_at=None)
    kept = keeps.change().applied_to(issued)
    assert (kept.disclose, kept.expires_at, kept.route_to) == (True, issued.expires_at, "haiku-1")


def test_exemptions_keep_their_order_and_amended_selectors_are_matched_anew() -> None:
    terms = DirectiveTerms(("*",), stored_predicate({"everyone": True}),
                           exempt=Exempt(("s-9", "s-2"), ("org-b",)))
    assert terms.to_stored()["exempt"] == {"subjects": ["s-9", "s-2"], "orgs": ["org-b"]}
    assert terms.exempts("s-2", None) and terms.exempts("s-1", frozenset({"org-b"}))
    assert not terms.exempts("s-1", frozenset({"org-a"}))
    assert terms.covers("fable-5", "fable")
    narrowed = TermsChange(selectors=("haiku-1",)).applied_to(terms)
    assert not narrowed.covers("fable-5", "fable")
    assert narrowed.exempts("s-9", None)

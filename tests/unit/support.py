"""Test support: JSON commands applied through the real application and access index.

Everything goes through `interlock.engine.open_engine("memory:")`: commands are parsed by
`domain.commands.parse_command`, applied by the application, stored in the in-memory event
store, and decisions come from the access index after `catch_up()`. Only the clock is
controlled, so recorded times are known to the test.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

import pytest

from domain.application import Applied
from domain.commands import CommandError, parse_command
from domain.decision import Context
from interlock.engine import Engine, open_engine

EPOCH = "2026-01-01T00:00:00+00:00"
"""Default recorded time and valid-from of the fixtures' world."""


def ts(iso: str) -> datetime:
    """An ISO-8601 timestamp with an offset."""
    moment = datetime.fromisoformat(iso)
    assert moment.tzinfo is not None, f"test timestamps carry an offset: {iso}"
    return moment


class Harness:
    """One engine on the memory store with a clock the test sets."""

    def __init__(self, recorded_at: str = EPOCH) -> None:
        self.now = ts(recorded_at)
        self.engine: Engine = open_engine("memory:", clock=self.clock)

    def clock(self) -> datetime:
        return self.now

    def record_at(self, iso: str) -> Harness:
        """Sets the recorded time of the commands applied from now on."""
        self.now = ts(iso)
        return self

    @property
    def position(self) -> int:
        return self.engine.app.position

    # --- commands -------------------------------------------------------------------------

    def apply(self, *commands: dict[str, Any], recorded_at: str | None = None) -> Applied:
        """Applies each command in its own transaction; the index catches up after each."""
        if recorded_at is not None:
            self.record_at(recorded_at)
        result = Applied(0, self.position)
        for command in commands:
            result = self.engine.app.apply(parse_command(command))
            self.engine.catch_up()
        return result

    def apply_all(self, commands: Iterable[dict[str, Any]]) -> Applied:
        """Applies commands in one batch (parsing them all first), then catches up."""
        parsed = [parse_command(command) for command in commands]
        try:
            return self.engine.app.apply_all(parsed)
        finally:
            self.engine.catch_up()

    def refuse(self, command: dict[str, Any]) -> CommandError:
        """Asserts the command is refused with nothing stored; returns the error."""
        before = self.position
        with pytest.raises(CommandError) as caught:
            self.apply(command)
        assert self.position == before, "a refused command stored events"
        self.engine.catch_up()
        assert self.engine.index.position == before
        return caught.value

    # --- decisions ------------------------------------------------------------------------

    def decide(
        self,
        subject: str,
        model: str,
        at: str,
        *,
        as_of: int | None = None,
        known_at: str | None = None,
        location: str | None = None,
        purpose: str | None = None,
    ) -> dict[str, Any]:
        """The decision's normative JSON."""
        kwargs: dict[str, Any] = {"at": ts(at), "as_of": as_of}
        if known_at is not None:
            kwargs["known_at"] = ts(known_at)
        if location is not None or purpose is not None:
            kwargs["context"] = Context(location, purpose)
        return self.engine.index.decide(subject, model, **kwargs).to_json()

    def effect(self, subject: str, model: str, at: str, **kwargs: Any) -> str:
        return self.decide(subject, model, at, **kwargs)["effect"]

    def reasons(self, subject: str, model: str, at: str, **kwargs: Any) -> list[tuple]:
        """The decision's reasons as (code, ref) pairs, in the decision's order."""
        decision = self.decide(subject, model, at, **kwargs)
        return [(r["code"], r["ref"]) for r in decision["reasons"]]


# --- command builders (the normative JSON lines; see docs/commands.md) ----------------------


def register(model: str, family: str, **extra: Any) -> dict[str, Any]:
    return {"type": "register_model", "model": model, "family": family, **extra}


def withdraw(model: str, effective_at: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "withdraw_model", "model": model, "effective_at": effective_at, **extra}


def reinstate(model: str, effective_at: str | None = None, **extra: Any) -> dict[str, Any]:
    return {"type": "reinstate_model", "model": model, "effective_at": effective_at, **extra}


def grant(
    entitlement: str,
    *,
    subject: str | None = None,
    org: str | None = None,
    models: list[str] | None = None,
    valid_from: str | None = EPOCH,
    valid_until: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    grantee = {"subject": subject} if subject is not None else {"org": org}
    return {
        "type": "grant_entitlement", "entitlement": entitlement, "grantee": grantee,
        "models": models if models is not None else ["*"], "valid_from": valid_from,
        "valid_until": valid_until, **extra,
    }


def revoke_entitlement(entitlement: str, effective_at: str | None = None) -> dict[str, Any]:
    return {"type": "revoke_entitlement", "entitlement": entitlement, "effective_at": effective_at}


def nationality(
    subject: str,
    citizenships: list[str],
    residencies: list[str] | None = None,
    *,
    valid_from: str | None = EPOCH,
    valid_until: str | None = None,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "attest_nationality", "subject": subject, "citizenships": citizenships,
        "residencies": residencies or [], "valid_from": valid_from, "valid_until": valid_until,
        "source": "passport-kyc", **extra,
    }


def location(
    subject: str,
    country: str,
    *,
    valid_from: str | None = EPOCH,
    valid_until: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "attest_location", "subject": subject, "country": country,
        "valid_from": valid_from, "valid_until": valid_until, "source": "ip-geo",
    }


def employer(
    subject: str,
    org: str,
    *,
    valid_from: str | None = EPOCH,
    valid_until: str | None = None,
) -> dict[str, Any]:
    return {
        "type": "attest_employer", "subject": subject, "org": org, "valid_from": valid_from,
        "valid_until": valid_until, "source": "hr-feed",
    }


def revoke_attestation(subject: str, kind: str, effective_at: str | None = None) -> dict:
    return {
        "type": "revoke_attestation", "subject": subject, "kind": kind,
        "effective_at": effective_at,
    }


def directive(
    name: str,
    *,
    models: list[str],
    subjects: dict[str, Any] | None = None,
    effect: str = "deny",
    route_to: str | None = None,
    effective_at: str | None = EPOCH,
    **extra: Any,
) -> dict[str, Any]:
    return {
        "type": "issue_directive", "directive": name, "models": models,
        "subjects": subjects if subjects is not None else {"everyone": True},
        "effect": effect, "route_to": route_to, "effective_at": effective_at, **extra,
    }


def amend(name: str, effective_at: str | None = None, **terms: Any) -> dict[str, Any]:
    return {"type": "amend_directive", "directive": name, "effective_at": effective_at, **terms}


def lift(name: str, effective_at: str | None = None) -> dict[str, Any]:
    return {"type": "lift_directive", "directive": name, "effective_at": effective_at}


FOREIGN = {"citizenship": {"none_of": ["US"]}}
"""The 5:21 p.m. order's subject predicate: every non-U.S. citizen."""

JAN = EPOCH
FEB = "2026-02-01T00:00:00+00:00"
MAR = "2026-03-01T00:00:00+00:00"
APR = "2026-04-01T00:00:00+00:00"
MAY = "2026-05-01T00:00:00+00:00"
JUN = "2026-06-01T00:00:00+00:00"
JUL = "2026-07-01T00:00:00+00:00"

"""Commands and helpers shared by the scale-out tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from domain.commands import Command, parse_command

T0 = "2026-01-01T00:00:00+00:00"
AFTER_ORDER = "2026-11-26T22:30:00+00:00"

SETUP: list[dict[str, Any]] = [
    {"type": "register_model", "model": "fable-5", "family": "fable"},
    {"type": "register_model", "model": "opus-4.8", "family": "opus"},
    {"type": "grant_entitlement", "entitlement": "e-acme", "grantee": {"org": "acme"},
     "models": ["*"], "valid_from": T0},
]
ORDER: dict[str, Any] = {
    "type": "issue_directive", "directive": "bis-2026-0417",
    "authority": "US Dept. of Commerce (BIS)", "reference": "letter of 2026-11-26",
    "received_at": "2026-11-26T17:21:00-05:00", "models": ["fable-5"],
    "subjects": {"citizenship": {"none_of": ["US"]}}, "effect": "deny", "disclose": True,
}


def employee(subject: str, citizenship: str | None = None, **extra: Any) -> list[dict[str, Any]]:
    """An acme employee, with a nationality attestation unless `citizenship` is None."""
    commands: list[dict[str, Any]] = [
        {"type": "attest_employer", "subject": subject, "org": "acme", "valid_from": T0,
         "source": "hr-feed", **extra},
    ]
    if citizenship is not None:
        commands.append({"type": "attest_nationality", "subject": subject,
                         "citizenships": [citizenship], "valid_from": "1990-01-01T00:00:00Z",
                         "source": "passport-kyc"})
    return commands


def parsed(commands: list[dict[str, Any]]) -> list[Command]:
    return [parse_command(command) for command in commands]


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.02) -> float:
    """Seconds until `condition` held; fails the test when `timeout` passes first."""
    started = time.monotonic()
    while not condition():
        if time.monotonic() - started > timeout:
            raise AssertionError(f"not reached within {timeout} s")
        time.sleep(interval)
    return time.monotonic() - started

"""Constants and helpers shared by the HTTP tests (fixtures are in conftest.py)."""

from __future__ import annotations

import json
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from interlock.auth import hash_token
from interlock.signing import sign_command

VALID = "2026-01-01T00:00:00+00:00"
ORDER_TIME = "2026-11-26T17:21:00-05:00"
AFTER_ORDER = "2026-11-26T22:30:00+00:00"
BEFORE_ORDER = "2026-11-26T22:00:00+00:00"

SETUP: list[dict[str, Any]] = [
    {"type": "register_model", "model": "fable-5", "family": "fable"},
    {"type": "register_model", "model": "opus-4.8", "family": "opus"},
    {"type": "grant_entitlement", "entitlement": "e-acme", "grantee": {"org": "acme"},
     "models": ["*"], "valid_from": VALID},
    {"type": "attest_employer", "subject": "u-us", "org": "acme", "valid_from": VALID,
     "source": "hr-feed"},
    {"type": "attest_employer", "subject": "u-de", "org": "acme", "valid_from": VALID,
     "source": "hr-feed"},
    {"type": "attest_employer", "subject": "u-anon", "org": "acme", "valid_from": VALID,
     "source": "hr-feed"},
    {"type": "attest_nationality", "subject": "u-us", "citizenships": ["US"],
     "valid_from": "1990-01-01T00:00:00Z", "source": "passport-kyc", "evidence": "doc-1"},
    {"type": "attest_nationality", "subject": "u-de", "citizenships": ["DE"],
     "valid_from": "1990-01-01T00:00:00Z", "source": "passport-kyc", "evidence": "doc-2"},
]
ORDER: dict[str, Any] = {
    "type": "issue_directive", "directive": "bis-2026-0417",
    "authority": "US Dept. of Commerce (BIS)", "reference": "letter of 2026-11-26",
    "received_at": ORDER_TIME, "models": ["fable-5"],
    "subjects": {"citizenship": {"none_of": ["US"]}}, "effect": "deny", "disclose": True,
}

TOKENS = {role: f"token-for-{role}" for role in ("decide", "officer", "auditor")}
TOKENS["all"] = "token-for-everything"
TOKEN_TABLE = {
    hash_token(token): {
        "name": f"{role}-holder",
        "roles": ["decide", "officer", "auditor"] if role == "all" else [role],
    }
    for role, token in TOKENS.items()
}


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role]}"}


def signed(command: dict[str, Any], key: Ed25519PrivateKey, key_id: str = "officer-1"
           ) -> dict[str, Any]:
    return sign_command(command, key, key_id)


def jsonl(*commands: dict[str, Any]) -> str:
    return "".join(json.dumps(command) + "\n" for command in commands)

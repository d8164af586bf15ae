"""Bearer tokens and roles for the HTTP service.

The configuration maps the sha256 hex digest of each token to its holder's name and roles, so
the file (or `INTERLOCK_TOKENS`) never holds a usable token. A presented token is hashed and
compared against every configured digest in constant time.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter, ValidationError

TOKENS_VARIABLE = "INTERLOCK_TOKENS"

Role = Literal["decide", "officer", "auditor"]
"""`decide`: ask for decisions; `officer`: apply commands; `auditor`: history, impact, diff."""

TokenDigest = Annotated[
    str, StringConstraints(strip_whitespace=True, to_lower=True, pattern=r"^[0-9a-fA-F]{64}$")
]


class ConfigError(ValueError):
    """A tokens or officer-keys table that cannot be used; the message names its source."""


class TokenHolder(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    name: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
    roles: Annotated[frozenset[Role], Field(min_length=1)]


TokenTable = dict[TokenDigest, TokenHolder]
_TOKEN_TABLE = TypeAdapter(TokenTable)


def load_table(text: str, source: str) -> dict[str, Any]:
    """A JSON object or a TOML document, whichever `text` is; shared by the tokens and the
    officer-keys configuration so both accept the same two formats."""
    try:
        data = json.loads(text)
    except json.JSONDecodeError:
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as error:
            raise ConfigError(f"{source}: neither a JSON object nor TOML ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a JSON object or a TOML table")
    return data


def read_configured(path: str | None, variable: str) -> tuple[str, str] | None:
    """(text, source) from the file at `path`, else from the environment variable, else None."""
    if path is not None:
        try:
            return Path(path).read_text(encoding="utf-8"), path
        except OSError as error:
            raise ConfigError(f"{path}: {error.strerror}") from None
    text = os.environ.get(variable)
    return None if not text else (text, variable)


def hash_token(token: str) -> str:
    """The digest a tokens table stores for `token`."""
    return hashlib.sha256(token.encode()).hexdigest()


def new_token() -> str:
    """A fresh random bearer token (256 bits)."""
    return secrets.token_urlsafe(32)


@dataclass(frozen=True, slots=True)
class Principal:
    """Who presented a valid token, and what it may do."""

    name: str
    roles: frozenset[str]


class Tokens:
    """The configured token digests; `authenticate` never short-circuits on a match."""

    def __init__(self, table: Mapping[str, TokenHolder]) -> None:
        self.table: TokenTable = dict(table)
        self._entries = [
            (bytes.fromhex(digest), Principal(holder.name, frozenset(holder.roles)))
            for digest, holder in self.table.items()
        ]

    @classmethod
    def parse(cls, text: str, source: str) -> Tokens:
        try:
            table = _TOKEN_TABLE.validate_python(load_table(text, source))
        except ValidationError as error:
            first = error.errors()[0]
            where = ".".join(str(part) for part in first["loc"])
            raise ConfigError(f"{source}: {where}: {first['msg']}") from None
        if not table:
            raise ConfigError(f"{source}: no tokens configured")
        return cls(table)

    @classmethod
    def configured(cls, path: str | None = None) -> Tokens | None:
        """From `--tokens FILE`, else `INTERLOCK_TOKENS` (same content inline), else None."""
        found = read_configured(path, TOKENS_VARIABLE)
        return None if found is None else cls.parse(*found)

    def __len__(self) -> int:
        return len(self._entries)

    def authenticate(self, token: str) -> Principal | None:
        digest = hashlib.sha256(token.encode()).digest()
        found = None
        for stored, principal in self._entries:
            if hmac.compare_digest(digest, stored):
                found = principal
        return found

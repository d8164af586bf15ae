"""Officer signatures on directives: Ed25519 over `domain.commands.canonical_json(command)`.

When officer keys are configured, `issue_directive`, `amend_directive` and `lift_directive`
must carry `signature: {"key_id", "value"}` and, signed, a `command_id`: the signature covers
the id, so a replayed signed command is a repeat of an applied `command_id`, a counted no-op,
and cannot be re-applied under a new id without a new signature. `OfficerKeys` is the
application's `check_signature` hook: it returns the signer's key id, which the directive's
event keeps in `signed_by`, or refuses the command with an error naming `signature` (or
`command_id`), so nothing of it is stored.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from uuid import uuid4

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from domain.commands import (
    AmendDirective,
    Command,
    CommandError,
    IssueDirective,
    LiftDirective,
    canonical_json,
    parse_command,
)
from interlock.auth import ConfigError, load_table, read_configured

OFFICER_KEYS_VARIABLE = "INTERLOCK_OFFICER_KEYS"
SIGNED_COMMANDS = (IssueDirective, AmendDirective, LiftDirective)


def _b64decode(value: str) -> bytes:
    return base64.b64decode(value.encode("ascii"), validate=True)


class OfficerKeys:
    """The officers' Ed25519 public keys by key id; called on a directive command, it returns
    the key id that signed it or raises CommandError("signature", ...)."""

    def __init__(self, keys: Mapping[str, Ed25519PublicKey]) -> None:
        self.keys = dict(keys)

    @classmethod
    def parse(cls, text: str, source: str) -> OfficerKeys:
        """A table of key id → base64 of the raw 32-byte public key (JSON or TOML)."""
        return cls.from_table(load_table(text, source), source)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], source: str) -> OfficerKeys:
        keys = {}
        for key_id, encoded in table.items():
            try:
                if not isinstance(encoded, str):
                    raise ValueError
                keys[key_id] = Ed25519PublicKey.from_public_bytes(_b64decode(encoded))
            except (ValueError, binascii.Error):
                raise ConfigError(
                    f"{source}: {key_id}: expected base64 of a 32-byte Ed25519 public key"
                ) from None
        if not keys:
            raise ConfigError(f"{source}: no officer keys configured")
        return cls(keys)

    @classmethod
    def configured(cls, path: str | None = None) -> OfficerKeys | None:
        """From `--officer-keys FILE`, else `INTERLOCK_OFFICER_KEYS` (inline), else None."""
        found = read_configured(path, OFFICER_KEYS_VARIABLE)
        return None if found is None else cls.parse(*found)

    def table(self) -> dict[str, str]:
        """The keys in the form `parse` reads."""
        return {key_id: public_key_b64(key) for key_id, key in self.keys.items()}

    def __call__(self, command: Command) -> str:
        signature = getattr(command, "signature", None)
        if signature is None:
            raise CommandError(
                "signature", f"{command.type} must be signed by an officer key "
                '({"key_id": ..., "value": ...}); see `interlock sign`'
            )
        if command.command_id is None:
            raise CommandError(
                "command_id", f"a signed {command.type} must carry a command_id: the signature "
                "covers it, so that a replayed command is a repeat, not applied again; "
                "`interlock sign` adds one"
            )
        key = self.keys.get(signature.key_id)
        if key is None:
            raise CommandError("signature", f"unknown officer key id {signature.key_id!r}")
        try:
            value = _b64decode(signature.value)
        except (ValueError, binascii.Error):
            raise CommandError("signature", "value is not base64") from None
        try:
            key.verify(value, canonical_json(command))
        except InvalidSignature:
            raise CommandError(
                "signature",
                f"does not verify with key {signature.key_id!r}: the command was altered after "
                "signing, or signed with another key",
            ) from None
        return signature.key_id


def sign_command(data: Any, key: Ed25519PrivateKey, key_id: str) -> dict[str, Any]:
    """`data` with an officer signature when it is a directive command, unchanged otherwise.

    A directive command without a `command_id` gets a fresh one (a UUID) first, since the
    signature covers it. The command is validated first: the signature covers its canonical
    form, which is what the verifier recomputes, so only a valid command can be signed. A
    signature `data` already carries is replaced."""
    if not isinstance(data, dict):
        parse_command(data)  # refuses it: a command is a JSON object
    unsigned = {name: value for name, value in data.items() if name != "signature"}
    command = parse_command(unsigned)
    if not isinstance(command, SIGNED_COMMANDS):
        return data
    if command.command_id is None:
        unsigned["command_id"] = str(uuid4())
        command = parse_command(unsigned)
    value = base64.b64encode(key.sign(canonical_json(command))).decode("ascii")
    return {**unsigned, "signature": {"key_id": key_id, "value": value}}


def generate_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_key_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


def write_new_key(path: str) -> Ed25519PrivateKey:
    """A new Ed25519 key, written to `path` as unencrypted PKCS#8 PEM readable by its owner
    only; never over an existing file (ConfigError naming it)."""
    key = generate_key()
    try:
        with Path(path).open("xb") as stream:
            Path(path).chmod(0o600)
            stream.write(private_key_pem(key))
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    return key


def load_private_key(path: str) -> Ed25519PrivateKey:
    """An unencrypted PKCS#8 PEM Ed25519 key, as `interlock sign --generate-key` writes."""
    try:
        key = serialization.load_pem_private_key(Path(path).read_bytes(), password=None)
    except OSError as error:
        raise ConfigError(f"{path}: {error.strerror}") from None
    except (ValueError, TypeError) as error:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{path}: not an Ed25519 key")
    return key


def public_key_b64(key: Ed25519PublicKey | Ed25519PrivateKey) -> str:
    """Base64 of the raw 32-byte public key: the value of an officer-keys table entry."""
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")

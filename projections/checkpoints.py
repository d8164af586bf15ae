"""Checkpoints: the chain's head, signed with the server's key and kept outside the database.

Modelled on Certificate Transparency's signed tree heads (RFC 6962, section 3.5): a checkpoint
says "at `time`, the link of the log at `position` was `link`", signed with an Ed25519 server
key whose id (`key_id`) is the sha256 of its raw public key, as a CT log's id is the hash of
its key. The link at a position is a function of every event up to it (see
`projections.audit`), so one checkpoint anchors the whole prefix of the log: an event at or
before its position that is altered, removed, inserted or moved changes the link recomputed
there, and a database writer cannot sign the new link without the server key.

This module is the pure half: the signed bytes, the line format and the verification of
checkpoints against links recomputed from the store. Keys, files and Kafka are
`interlock.checkpoints`.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ConfigDict, Field, StrictInt, StringConstraints, ValidationError

from domain.commands import Timestamp

SIGNED_PREFIX = b"interlock checkpoint v1\n"
"""Domain separation: a checkpoint signature can never be read as a signature of anything else."""
MAX_LINE = 1024
"""Bytes of one checkpoint line (a real one is about 300)."""

Hex64 = Annotated[str, StringConstraints(pattern=r"^[0-9a-f]{64}$")]


class Checkpoint(BaseModel):
    """One line of a checkpoints file: `{"position", "link", "time", "key_id", "signature"}`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    position: StrictInt = Field(ge=0, le=2**63 - 1)
    link: Hex64
    time: Timestamp
    key_id: Hex64
    signature: Annotated[str, StringConstraints(max_length=100,
                                                pattern=r"^[A-Za-z0-9+/]+={0,2}$")]

    def line(self) -> str:
        return json.dumps({"position": self.position, "link": self.link,
                           "time": self.time.isoformat(), "key_id": self.key_id,
                           "signature": self.signature})


def key_id(public_key: Ed25519PublicKey) -> str:
    """The server key's id: sha256 of its raw 32 bytes, hex."""
    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()


def signed_message(position: int, link: str, time: datetime, signer: str) -> bytes:
    """The bytes a checkpoint's signature covers: every field but the signature, canonical."""
    fields = {"key_id": signer, "link": link, "position": position,
              "time": time.astimezone(UTC).isoformat()}
    return SIGNED_PREFIX + json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()


def signature_holds(checkpoint: Checkpoint, public_key: Ed25519PublicKey) -> bool:
    try:
        value = base64.b64decode(checkpoint.signature, validate=True)
        public_key.verify(value, signed_message(checkpoint.position, checkpoint.link,
                                                checkpoint.time, checkpoint.key_id))
    except (InvalidSignature, binascii.Error, ValueError):
        return False
    return True


@dataclass(frozen=True)
class CheckpointProblem:
    line: int
    position: int | None
    problem: str
    """`malformed`, `key`, `signature`, `removed` or `rewritten`."""
    detail: str

    def to_json(self) -> dict[str, Any]:
        return {"line": self.line, "position": self.position, "problem": self.problem,
                "detail": self.detail}

    def __str__(self) -> str:
        at = "" if self.position is None else f" (position {self.position})"
        return f"line {self.line}{at}: {self.problem}: {self.detail}"


def parse_line(number: int, text: str) -> Checkpoint | CheckpointProblem:
    """One line of a checkpoints file, or what is wrong with it (naming the field)."""
    if len(text.encode()) > MAX_LINE:
        return CheckpointProblem(number, None, "malformed", f"longer than {MAX_LINE} bytes")
    try:
        return Checkpoint.model_validate_json(text)
    except ValidationError as error:
        first = error.errors()[0]
        where = ".".join(str(part) for part in first["loc"]) or "line"
        return CheckpointProblem(number, None, "malformed", f"{where}: {first['msg']}")


def read_checkpoints(lines: Iterable[str]) -> tuple[list[tuple[int, Checkpoint]],
                                                     list[CheckpointProblem]]:
    """The checkpoints of a file's lines (numbered from 1; blank lines skipped) and the lines
    that are not checkpoints."""
    found: list[tuple[int, Checkpoint]] = []
    problems: list[CheckpointProblem] = []
    for number, text in enumerate(lines, start=1):
        if not text.strip():
            continue
        parsed = parse_line(number, text)
        if isinstance(parsed, Checkpoint):
            found.append((number, parsed))
        else:
            problems.append(parsed)
    return found, problems


@dataclass
class CheckpointReport:
    checked: int = 0
    latest: Checkpoint | None = None
    """The checkpoint at the highest position, once it holds."""
    problems: list[CheckpointProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {"ok": self.ok, "checked": self.checked,
                "latest": None if self.latest is None else {
                    "position": self.latest.position, "link": self.latest.link,
                    "time": self.latest.time.isoformat()},
                "problems": [p.to_json() for p in self.problems]}


def check_checkpoints(
    checkpoints: Iterable[tuple[int, Checkpoint]], public_key: Ed25519PublicKey,
    links: Mapping[int, str],
) -> CheckpointReport:
    """Each checkpoint must be signed by `public_key` and its link must be the one recomputed
    from the store at its position (`links`, from `audit.verify_chain(keep=...)`)."""
    report = CheckpointReport()
    server = key_id(public_key)
    for number, checkpoint in checkpoints:
        report.checked += 1
        position = checkpoint.position
        problem = None
        if checkpoint.key_id != server:
            problem = ("key", f"signed by key {checkpoint.key_id}, not by the server key given "
                       f"({server})")
        elif not signature_holds(checkpoint, public_key):
            problem = ("signature", "does not verify with the server key: the checkpoint was "
                       "altered after it was signed")
        elif position not in links:
            problem = ("removed", "the store holds no event at this position now: events were "
                       "removed")
        elif links[position] != checkpoint.link:
            problem = ("rewritten", f"the log up to this position is not the one signed at "
                       f"{checkpoint.time.isoformat()}: an event at or before it was altered, "
                       f"removed, inserted or moved (link now {links[position]})")
        if problem is not None:
            report.problems.append(CheckpointProblem(number, position, *problem))
        elif report.latest is None or position >= report.latest.position:
            report.latest = checkpoint
    return report

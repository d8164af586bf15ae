"""Avro single-object encoding of Interlock's Kafka records, on fastavro.

A message is `C3 01`, the writer schema's CRC-64-AVRO fingerprint (8 bytes, little-endian),
then the Avro binary body. The fingerprint lets any reader find the exact writer schema among
every version in the tree and resolve it to the current version of that record, so producers
and consumers can be upgraded one at a time. fastavro fingerprints schemas but does not frame
single-object messages, so the framing is done here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from io import BytesIO
from pathlib import Path
from typing import Any

from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.schema import fingerprint as _fastavro_fingerprint
from fastavro.schema import to_parsing_canonical_form

from schemas.checks import Check, Invalid, compile_check
from schemas.compat import IncompatibleSchema, check_compatible

MAGIC = b"\xc3\x01"
"""Marker of Avro single-object encoding (spec: "Single object encoding")."""

NAMESPACE = "interlock.v1"
SCHEMA_ROOT = Path(__file__).resolve().parent
"""Holds `<namespace>/<name>/v<N>.avsc`; see schemas/README.md."""

_HEADER = len(MAGIC) + 8
_VERSION_FILE = re.compile(r"^v([1-9][0-9]*)\.avsc$")


class CodecError(ValueError):
    """A record that cannot be encoded, or bytes that are not a message we can decode."""


@dataclass(frozen=True)
class SchemaVersion:
    """One `.avsc` file: a record name at one version, parsed and fingerprinted."""

    name: str
    version: int
    path: Path
    schema: dict[str, Any]
    named: dict[str, Any]
    fingerprint: bytes
    check: Check


def fingerprint(schema: Any) -> bytes:
    """The 8 wire bytes of a schema's CRC-64-AVRO fingerprint of its Parsing Canonical Form.

    fastavro's `fingerprint` takes the canonical form (a string, not a schema) and returns
    the Rabin fingerprint as hex already in little-endian byte order, which is the order the
    single-object header carries; so the hex is decoded as is, not reinterpreted as an int.
    """
    canonical = to_parsing_canonical_form(schema)
    return bytes.fromhex(_fastavro_fingerprint(canonical, "CRC-64-AVRO"))


class SchemaRegistry:
    """Every schema version in a tree: writes with the newest, reads any by its fingerprint.

    Loading refuses a tree where a name's newest version cannot read an older version's data,
    or an older version cannot read the newest's (so readers and writers may be upgraded in
    either order), where a file's record name or namespace disagrees with its path, or where
    two different schemas share a fingerprint.
    """

    def __init__(self, root: Path = SCHEMA_ROOT, namespace: str = NAMESPACE) -> None:
        self.namespace = namespace
        self._versions: dict[str, tuple[SchemaVersion, ...]] = {}
        self._by_fingerprint: dict[bytes, SchemaVersion] = {}
        directory = root / namespace
        if not directory.is_dir():
            raise CodecError(f"no schema directory {directory}")
        for name_dir in sorted(p for p in directory.iterdir() if p.is_dir()):
            versions = sorted(
                (self._load(name_dir.name, path) for path in name_dir.glob("v*.avsc")),
                key=lambda v: v.version,
            )
            if versions:
                self._versions[name_dir.name] = tuple(versions)
                self._check_evolution(versions)
        for versions in self._versions.values():
            for version in versions:
                known = self._by_fingerprint.setdefault(version.fingerprint, version)
                if known.name != version.name:
                    raise CodecError(f"{version.path} and {known.path} share a fingerprint")

    def _load(self, name: str, path: Path) -> SchemaVersion:
        match = _VERSION_FILE.match(path.name)
        if match is None:
            raise CodecError(f"{path}: schema files are named v<N>.avsc")
        try:
            named: dict[str, Any] = {}
            schema = parse_schema(json.loads(path.read_text(encoding="utf-8")), named)
        except Exception as error:
            raise CodecError(f"{path}: not a valid Avro schema: {error}") from error
        expected = f"{self.namespace}.{name}"
        if schema.get("type") != "record" or schema.get("name") != expected:
            raise CodecError(f"{path}: must define the record {expected}")
        return SchemaVersion(
            name, int(match[1]), path, schema, named, fingerprint(schema),
            compile_check(schema, named),
        )

    @staticmethod
    def _check_evolution(versions: list[SchemaVersion]) -> None:
        current = versions[-1]
        for old in versions[:-1]:
            for writer, reader in ((old, current), (current, old)):
                try:
                    check_compatible(writer.schema, reader.schema)
                except IncompatibleSchema as error:
                    raise CodecError(
                        f"{reader.path} cannot read data written with {writer.path}: {error}"
                    ) from error

    @property
    def names(self) -> tuple[str, ...]:
        """Record names (unqualified), e.g. `register_model`."""
        return tuple(self._versions)

    def versions(self, name: str) -> tuple[SchemaVersion, ...]:
        """Every version of a record name, oldest first."""
        try:
            return self._versions[name]
        except KeyError:
            raise CodecError(f"unknown record name {name!r}") from None

    def current(self, name: str) -> SchemaVersion:
        """The newest version: what we write, and what every version is read as."""
        return self.versions(name)[-1]

    def version(self, name: str, number: int) -> SchemaVersion:
        for candidate in self.versions(name):
            if candidate.version == number:
                return candidate
        raise CodecError(f"{name} has no version {number}")

    def encode(self, name: str, record: Mapping[str, Any], version: int | None = None) -> bytes:
        """Frames `record` as a single-object message written with the current schema (or the
        given older `version`, for tools and tests).

        Checked first (schemas.checks), because fastavro's writer coerces what it should
        refuse: unknown keys dropped, naive datetimes taken as local time, `1.5` as `1`.
        """
        writer = self.current(name) if version is None else self.version(name, version)
        try:
            writer.check(record)
        except Invalid as error:
            raise CodecError(f"{name}.{error}" if error.path else f"{name}: {error}") from None
        out = BytesIO()
        out.write(MAGIC)
        out.write(writer.fingerprint)
        schemaless_writer(out, writer.schema, dict(record))
        return out.getvalue()

    def decode(self, data: bytes) -> tuple[str, dict[str, Any]]:
        """The record name and the record, resolved to the current version of that name."""
        writer = self.writer_of(data)
        reader = self.current(writer.name)
        size = len(data) - _HEADER
        body = BytesIO(data[_HEADER:])
        try:
            resolve_to = None if reader is writer else reader.schema
            record = schemaless_reader(body, writer.schema, resolve_to)
        except Exception as error:
            # fastavro signals short data with EOFError or, mid-varint, IndexError; an IndexError
            # before the end is a bad union branch or enum index instead
            if isinstance(error, EOFError) or body.tell() >= size:
                raise CodecError(f"{writer.name}: truncated body ({len(data)} bytes)") from error
            raise CodecError(f"{writer.name}: corrupt body: {error!r}") from error
        if body.tell() != size:
            raise CodecError(f"{writer.name}: {size - body.tell()} trailing bytes after the body")
        return writer.name, record

    def writer_of(self, data: bytes) -> SchemaVersion:
        """The schema version a message was written with, found by its fingerprint."""
        head = bytes(data[:_HEADER])
        if head[: len(MAGIC)] != MAGIC[: len(head)]:
            raise CodecError(
                f"bad magic: not an Avro single-object message (starts {head[:2].hex(' ')}, "
                "expected c3 01)"
            )
        if len(head) < _HEADER:
            raise CodecError(f"truncated header: {len(head)} bytes, need {_HEADER}")
        found = head[len(MAGIC) :]
        try:
            return self._by_fingerprint[found]
        except KeyError:
            raise CodecError(f"unknown writer schema fingerprint {found.hex()}") from None


@cache
def default_registry() -> SchemaRegistry:
    """The registry of the schemas shipped in this package, loaded once."""
    return SchemaRegistry()


def encode(name: str, record: Mapping[str, Any]) -> bytes:
    """Encodes with the current schema of `name`, from the shipped tree."""
    return default_registry().encode(name, record)


def decode(data: bytes) -> tuple[str, dict[str, Any]]:
    """Decodes any message written with a shipped schema version, as its current version."""
    return default_registry().decode(data)

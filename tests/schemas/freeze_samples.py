"""Freezes sample messages for every schema version that has none yet; run after adding one.

    .venv/bin/python -m tests.schemas.freeze_samples

Each file `data/<namespace>/<name>/v<N>.hex` holds messages exactly as writers of that version
put them on Kafka (one hex line each). Existing files are never rewritten: test_avro_evolution
reads every one of them with the current reader, which is how an incompatible change to the
schemas or to the codec is caught.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

from domain.commands import parse_command
from schemas.codec import SchemaRegistry, SchemaVersion
from schemas.records import command_to_record, event_to_record
from tests.schemas.avro_examples import (
    COMMANDS,
    ENFORCEMENT,
    build_events,
    decision_log_records,
    sample_datum,
)

DATA = Path(__file__).resolve().parent / "data"


def sample_path(registry: SchemaRegistry, version: SchemaVersion) -> Path:
    return DATA / registry.namespace / version.name / f"v{version.version}.hex"


def domain_records() -> dict[str, list[dict[str, Any]]]:
    """Records of the current schema versions, made from real domain objects."""
    records: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for documents in COMMANDS.values():
        for document in documents:
            name, record = command_to_record(parse_command(document))
            records[name].append(record)
    for event in build_events():
        name, record = event_to_record(event)
        records[name].append(record)
    for name, examples in ENFORCEMENT.items():
        records[name].extend(examples)
    records["decision_log_entry"].extend(decision_log_records())
    return records


def messages(registry: SchemaRegistry, version: SchemaVersion) -> list[bytes]:
    """Domain examples for the current version; a generic datum for an older one."""
    if version is registry.current(version.name):
        records = domain_records()[version.name]
    else:
        records = [sample_datum(version.schema, version.named)]
    return [registry.encode(version.name, r, version=version.version) for r in records]


def freeze(registry: SchemaRegistry) -> list[Path]:
    written = []
    for name in registry.names:
        for version in registry.versions(name):
            path = sample_path(registry, version)
            if path.exists():
                continue
            path.parent.mkdir(parents=True, exist_ok=True)
            lines = [f"# {name} v{version.version}: frozen by freeze_samples.py; never edit"]
            lines += [message.hex() for message in messages(registry, version)]
            path.write_text("\n".join(lines) + "\n")
            written.append(path)
    return written


if __name__ == "__main__":
    for path in freeze(SchemaRegistry()):
        print(f"wrote {path}", file=sys.stderr)

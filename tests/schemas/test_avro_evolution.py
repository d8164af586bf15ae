"""Schema evolution: the tree's rules, the compatibility check, and old data read as current."""

from __future__ import annotations

import copy
import io
import json
from pathlib import Path
from typing import Any

import pytest
from fastavro import parse_schema, schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.validation import validate

from consumers.packing import changes_of
from domain.commands import COMMAND_TYPES
from schemas.codec import NAMESPACE, SCHEMA_ROOT, CodecError, SchemaRegistry, default_registry
from schemas.compat import IncompatibleSchema, check_compatible, compatibility_problems
from schemas.records import EVENT_CLASSES, command_from_record, event_from_record
from tests.schemas.avro_examples import ENFORCEMENT
from tests.schemas.freeze_samples import sample_path

SCHEMA_FILES = sorted((SCHEMA_ROOT / NAMESPACE).glob("*/*.avsc"))


def test_the_tree_is_not_empty() -> None:
    assert len(SCHEMA_FILES) >= len(COMMAND_TYPES) + len(EVENT_CLASSES) + 2


@pytest.mark.parametrize("path", SCHEMA_FILES, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_every_schema_file_parses_in_its_place(path: Path) -> None:
    document = json.loads(path.read_text())
    parse_schema(document)
    assert document["type"] == "record"
    assert document["namespace"] == NAMESPACE == path.parent.parent.name
    assert document["name"] == path.parent.name
    assert path.stem[0] == "v" and path.stem[1:].isdigit() and not path.stem.startswith("v0")
    _check_nested(document, document["name"])


def _check_nested(schema: Any, where: str) -> None:
    """Nested named types inherit the namespace; every nullable field is null-first, default
    null; every union is a nullable one (the codec's unknown-field check assumes so)."""
    if isinstance(schema, list):
        assert schema[0] == "null" and len(schema) == 2, f"{where}: union {schema}"
        _check_nested(schema[1], where)
    elif isinstance(schema, dict):
        assert schema.get("namespace", NAMESPACE) == NAMESPACE, where
        for field in schema.get("fields", []):
            if isinstance(field["type"], list):
                assert "default" in field and field["default"] is None, f"{where}.{field['name']}"
            _check_nested(field["type"], f"{where}.{field['name']}")
        for key in ("items", "values"):
            if key in schema:
                _check_nested(schema[key], f"{where}[]")


def test_the_shipped_tree_loads_and_every_record_is_one_name() -> None:
    registry = default_registry()
    assert len(registry.names) == len({p.parent.name for p in SCHEMA_FILES})
    for name in registry.names:
        assert [v.version for v in registry.versions(name)] == sorted(
            int(p.stem[1:]) for p in SCHEMA_FILES if p.parent.name == name)


VERSIONS = [pytest.param(v, id=f"{v.name}-v{v.version}")
            for name in default_registry().names for v in default_registry().versions(name)]


@pytest.mark.parametrize("version", VERSIONS)
def test_frozen_data_of_every_version_reads_with_the_current_reader(version: Any) -> None:
    registry = default_registry()
    path = sample_path(registry, version)
    assert path.exists(), (f"no frozen data for {version.path}; run "
                           ".venv/bin/python -m tests.schemas.freeze_samples and commit it")
    messages = [bytes.fromhex(line) for line in path.read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert messages
    current = registry.current(version.name)
    for message in messages:
        assert registry.writer_of(message).version == version.version
        name, record = registry.decode(message)
        assert name == version.name
        assert validate(record, current.schema, raise_errors=True)
        if name in COMMAND_TYPES:
            command_from_record(name, record)
        elif name in EVENT_CLASSES:
            event_from_record(name, record)
        if version is current:  # the codec still writes what it wrote when this was frozen
            assert registry.encode(name, record) == message


# --- check_compatible -------------------------------------------------------------------

V1 = {"type": "record", "name": "register_model", "namespace": NAMESPACE, "fields": [
    {"name": "command_id", "type": ["null", "string"], "default": None},
    {"name": "model", "type": "string"},
    {"name": "family", "type": "string"},
]}
V2_WITH_DEFAULT = copy.deepcopy(V1)
V2_WITH_DEFAULT["fields"].append(
    {"name": "display_name", "type": ["null", "string"], "default": None})
V2_WITH_DEFAULT["fields"].append({"name": "tier", "type": "string", "default": "standard"})
V2_WITHOUT_DEFAULT = copy.deepcopy(V1)
V2_WITHOUT_DEFAULT["fields"].append({"name": "display_name", "type": "string"})
RECORD = {"command_id": None, "model": "fable-5", "family": "fable"}


def _write(schema: dict, record: dict) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, parse_schema(schema), record)
    return out.getvalue()


def _read(data: bytes, writer: dict, reader: dict) -> dict:
    return schemaless_reader(io.BytesIO(data), parse_schema(writer), parse_schema(reader))


def test_field_added_with_default_is_compatible_both_ways() -> None:
    check_compatible(V1, V2_WITH_DEFAULT)  # new reader, old data
    check_compatible(V2_WITH_DEFAULT, V1)  # old reader, new data
    assert _read(_write(V1, RECORD), V1, V2_WITH_DEFAULT) == {
        **RECORD, "display_name": None, "tier": "standard"}
    new = {**RECORD, "display_name": "Fable 5", "tier": "gold"}
    assert _read(_write(V2_WITH_DEFAULT, new), V2_WITH_DEFAULT, V1) == RECORD


def test_field_added_without_default_cannot_read_old_data() -> None:
    with pytest.raises(IncompatibleSchema, match="display_name: field added without a default"):
        check_compatible(V1, V2_WITHOUT_DEFAULT)
    # and the static check agrees with what fastavro does at run time
    with pytest.raises(SchemaResolutionError):
        _read(_write(V1, RECORD), V1, V2_WITHOUT_DEFAULT)
    # the other direction is fine: an old reader skips the new field
    check_compatible(V2_WITHOUT_DEFAULT, V1)
    new = {**RECORD, "display_name": "Fable 5"}
    assert _read(_write(V2_WITHOUT_DEFAULT, new), V2_WITHOUT_DEFAULT, V1) == RECORD


def _with_field(schema: dict, field: dict) -> dict:
    changed = copy.deepcopy(schema)
    changed["fields"] = [field if f["name"] == field["name"] else f for f in changed["fields"]]
    return changed


def _record(*fields: dict, name: str = "r") -> dict:
    return {"type": "record", "name": name, "namespace": NAMESPACE, "fields": list(fields)}


TS_MICROS = {"type": "long", "logicalType": "timestamp-micros"}
TS_MILLIS = {"type": "long", "logicalType": "timestamp-millis"}


@pytest.mark.parametrize(("writer", "reader", "ok"), [
    ("int", "long", True),  # promotion
    ("long", "int", False),
    ("string", "bytes", True),
    ("string", "long", False),
    ("string", ["null", "string"], True),  # making a field nullable
    (["null", "string"], "string", False),  # a null written cannot be read
    (["null", "string"], ["null", "string", "long"], True),
    (TS_MICROS, TS_MICROS, True),
    (TS_MICROS, TS_MILLIS, False),  # same bytes, 1000x wrong instant: refused
    (TS_MICROS, "long", False),
    ({"type": "array", "items": "int"}, {"type": "array", "items": "long"}, True),
    ({"type": "array", "items": "long"}, {"type": "map", "values": "long"}, False),
    ({"type": "enum", "name": "e", "symbols": ["a", "b"]},
     {"type": "enum", "name": "e", "symbols": ["a"]}, False),
    ({"type": "enum", "name": "e", "symbols": ["a", "b"]},
     {"type": "enum", "name": "e", "symbols": ["a"], "default": "a"}, True),
])
def test_field_type_changes(writer: Any, reader: Any, ok: bool) -> None:
    old = _record({"name": "f", "type": writer})
    new = _record({"name": "f", "type": reader})
    assert (compatibility_problems(old, new) == []) is ok


def test_nested_record_field_without_default_is_found_with_its_path() -> None:
    inner = {"type": "record", "name": "grantee", "fields": [{"name": "org", "type": "string"}]}
    grown = copy.deepcopy(inner)
    grown["fields"].append({"name": "region", "type": "string"})
    problems = compatibility_problems(_record({"name": "g", "type": inner}),
                                      _record({"name": "g", "type": grown}))
    assert problems == ["g.region: field added without a default; data written with the old "
                        "schema has no value for it"]


def test_renames_need_aliases() -> None:
    old = _record({"name": "model", "type": "string"})
    renamed = _record({"name": "model_id", "type": "string"})
    aliased = _record({"name": "model_id", "type": "string", "aliases": ["model"]})
    assert compatibility_problems(old, renamed)
    assert compatibility_problems(old, aliased) == []
    assert compatibility_problems(old, _record({"name": "model", "type": "string"}, name="s"))
    other_name = _record({"name": "model", "type": "string"}, name="s")
    other_name["aliases"] = ["r"]
    assert compatibility_problems(old, other_name) == []


def test_every_version_in_the_shipped_tree_is_compatible_with_the_current() -> None:
    registry = default_registry()
    for name in registry.names:
        current = registry.current(name).schema
        for version in registry.versions(name):
            check_compatible(version.schema, current)
            check_compatible(current, version.schema)


# --- a registry over a tree with two versions -------------------------------------------

def _tree(tmp_path: Path, *versions: dict) -> Path:
    directory = tmp_path / NAMESPACE / "register_model"
    directory.mkdir(parents=True)
    for number, schema in enumerate(versions, start=1):
        (directory / f"v{number}.avsc").write_text(json.dumps(schema))
    return tmp_path


def test_registry_reads_v1_messages_as_v2(tmp_path: Path) -> None:
    registry = SchemaRegistry(_tree(tmp_path, V1, V2_WITH_DEFAULT))
    old = registry.encode("register_model", RECORD, version=1)
    assert registry.writer_of(old).version == 1
    assert registry.decode(old) == ("register_model",
                                    {**RECORD, "display_name": None, "tier": "standard"})
    new = registry.encode("register_model", {**RECORD, "display_name": "F5", "tier": "gold"})
    assert registry.writer_of(new).version == 2
    assert new[2:10] != old[2:10]
    # a reader needs the writer's schema: ship v2.avsc to consumers before producers write it
    v1_only = SchemaRegistry(_tree(tmp_path / "old", V1))
    with pytest.raises(CodecError, match="unknown writer schema fingerprint"):
        v1_only.decode(new)


def test_registry_refuses_a_version_that_cannot_read_older_data(tmp_path: Path) -> None:
    with pytest.raises(CodecError, match=r"v2.avsc cannot read data written with .*v1.avsc"):
        SchemaRegistry(_tree(tmp_path, V1, V2_WITHOUT_DEFAULT))


def test_registry_refuses_misplaced_schemas(tmp_path: Path) -> None:
    wrong_namespace = {**V1, "namespace": "interlock.v0"}
    with pytest.raises(CodecError, match=r"must define the record interlock\.v1\.register_model"):
        SchemaRegistry(_tree(tmp_path, wrong_namespace))
    with pytest.raises(CodecError, match="must define the record"):
        SchemaRegistry(_tree(tmp_path / "b", {**V1, "name": "withdraw_model"}))


def test_access_restored_v2_adds_first_and_old_readers_keep_working() -> None:
    """`first` (a first grant, not access given back) came with access_restored v2: v1 data
    reads as first = false, and a reader still holding v1 skips the new field."""
    registry = default_registry()
    v1, v2 = registry.versions("access_restored")[:2]  # v3 (packed) came later
    assert (v1.version, v2.version) == (1, 2)
    old = [bytes.fromhex(line) for line in sample_path(registry, v1).read_text().splitlines()
           if line.strip() and not line.startswith("#")]
    assert all(registry.decode(message)[1]["first"] is False for message in old)
    unpacked = {k: v for k, v in ENFORCEMENT["access_restored"][1].items()
                if k not in ("subjects", "ats", "cites")}
    new = registry.encode("access_restored", unpacked, version=2)
    body = new[10:]
    as_v1 = _read(body, v2.schema, v1.schema)
    assert "first" not in as_v1
    assert as_v1 == {k: v for k, v in registry.decode(new)[1].items()
                     if k not in ("first", "subjects", "ats", "cites")}


def _frozen(registry: SchemaRegistry, version: Any) -> list[bytes]:
    return [bytes.fromhex(line) for line in sample_path(registry, version).read_text()
            .splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(("name", "unpacked"), [("access_revoked", 1), ("access_restored", 2)])
def test_packed_versions_list_subjects_and_old_readers_see_the_first(
    name: str, unpacked: int
) -> None:
    """access_revoked v2 and access_restored v3 list `subjects` (and their `ats` when they
    differ): records written before read with none listed (one change: their `subject`); a
    reader still on the unpacked version resolves a packed record to its first change alone,
    which is why the README tells such readers to upgrade before the enforcer does."""
    registry = default_registry()
    old, packed = registry.version(name, unpacked), registry.current(name)
    for message in _frozen(registry, old):
        _, record = registry.decode(message)
        assert record["subjects"] == []
        assert record["ats"] == []
        assert changes_of(name, record) == [
            {k: v for k, v in record.items() if k not in ("subjects", "ats", "cites")}]
    for example in ENFORCEMENT[name]:
        message = registry.encode(name, example)
        _, record = registry.decode(message)
        changes = changes_of(name, record)
        assert [c["subject"] for c in changes] == example["subjects"]
        assert [c["at"] for c in changes] == (
            example["ats"] or [example["at"]] * len(example["subjects"]))
        as_old = _read(message[10:], packed.schema, old.schema)
        assert "subjects" not in as_old and as_old["subject"] == example["subjects"][0]
        assert as_old["at"] == changes[0]["at"], "an old reader sees the first change whole"


def test_cites_give_each_listed_subject_its_own_entitlement_and_v3_readers_the_first() -> None:
    """access_restored v4 lists in `cites` the personal entitlement each subject's allow cites
    (`reasons` are the first subject's): `changes_of` gives each subject its own reasons;
    records written before read with none; a reader still on v3 sees every subject with the
    first subject's reasons, which the README tells such readers."""
    registry = default_registry()
    v3, v4 = registry.version("access_restored", 3), registry.version("access_restored", 4)
    assert registry.current("access_restored") == v4
    for message in _frozen(registry, v3):
        assert registry.decode(message)[1]["cites"] == []
    example = next(e for e in ENFORCEMENT["access_restored"] if e["cites"])
    message = registry.encode("access_restored", example)
    changes = changes_of("access_restored", registry.decode(message)[1])
    assert [(c["subject"], c["reasons"]) for c in changes] == [
        (subject, [{"code": "entitled", "ref": cited}])
        for subject, cited in zip(example["subjects"], example["cites"], strict=True)]
    as_v3 = _read(message[10:], v4.schema, v3.schema)
    assert "cites" not in as_v3
    assert as_v3["subjects"] == example["subjects"]
    assert as_v3["reasons"] == [{"code": "entitled", "ref": example["cites"][0]}]

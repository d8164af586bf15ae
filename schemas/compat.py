"""Static Avro schema-resolution check: can a reader schema read what a writer schema wrote?

fastavro resolves lazily, while reading: a reader that cannot read old data fails only when
such a record arrives (and a union branch only when data takes that branch). This checker
applies the resolution rules of the Avro specification to the schemas themselves, so that an
incompatible new version is caught when it is added to the tree, not in production.
"""

from __future__ import annotations

from typing import Any

from fastavro import parse_schema

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_PROMOTIONS = {
    "int": {"long", "float", "double"},
    "long": {"float", "double"},
    "float": {"double"},
    "string": {"bytes"},
    "bytes": {"string"},
}


class IncompatibleSchema(ValueError):
    """The reader cannot read the writer's data; `problems` lists every reason, with its path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


def check_compatible(writer: Any, reader: Any) -> None:
    """Raises IncompatibleSchema unless `reader` (the new version) reads data of `writer` (old).

    Every reader field must exist in the writer (by name or alias) or have a default, and the
    types must resolve: same primitive or a promotion, unions by branch, enums by symbol (or
    the reader's enum default), fixed by size, named types by name or alias, and equal logical
    types (Avro ignores them when resolving, but micros read as millis is silent corruption).
    Writer fields the reader lacks are fine: they are skipped.
    """
    problems = compatibility_problems(writer, reader)
    if problems:
        raise IncompatibleSchema(problems)


def compatibility_problems(writer: Any, reader: Any) -> list[str]:
    """The reasons `reader` cannot read data written with `writer`; empty when it can."""
    writer_names: dict[str, Any] = {}
    reader_names: dict[str, Any] = {}
    parsed_writer = parse_schema(writer, writer_names)
    parsed_reader = parse_schema(reader, reader_names)
    checker = _Checker(writer_names, reader_names)
    checker.check(parsed_writer, parsed_reader, "")
    return checker.problems


class _Checker:
    def __init__(self, writer_names: dict[str, Any], reader_names: dict[str, Any]) -> None:
        self.writer_names = writer_names
        self.reader_names = reader_names
        self.problems: list[str] = []
        self._seen: set[tuple[str, str]] = set()  # named pairs under check: recursion stops here

    def check(self, writer: Any, reader: Any, path: str) -> None:
        writer = self._resolve(writer, self.writer_names)
        reader = self._resolve(reader, self.reader_names)
        if isinstance(writer, list):
            for branch in writer:  # every branch the writer may take must be readable
                self._check_into(branch, reader, path)
            return
        self._check_into(writer, reader, path)

    def _check_into(self, writer: Any, reader: Any, path: str) -> None:
        writer = self._resolve(writer, self.writer_names)
        reader = self._resolve(reader, self.reader_names)
        if isinstance(reader, list):
            for branch in reader:
                if not self._probe(writer, branch, path):
                    return
            self.problems.append(f"{path or '<root>'}: writer type {_describe(writer)} matches "
                                 f"no branch of the reader union {_describe(reader)}")
            return
        self._check_single(writer, reader, path)

    def _probe(self, writer: Any, reader: Any, path: str) -> list[str]:
        """The problems of reading `writer` with `reader`, without recording them."""
        saved, self.problems = self.problems, []
        seen = set(self._seen)
        try:
            self._check_single(writer, self._resolve(reader, self.reader_names), path)
            return self.problems
        finally:
            self.problems, self._seen = saved, seen

    def _check_single(self, writer: Any, reader: Any, path: str) -> None:
        where = path or "<root>"
        w_type, r_type = _type_of(writer), _type_of(reader)
        w_logical, r_logical = _logical(writer), _logical(reader)
        if w_logical != r_logical:
            self.problems.append(f"{where}: logical type {w_logical} cannot be read as {r_logical}")
            return
        if w_type in _PRIMITIVES or r_type in _PRIMITIVES:
            if w_type != r_type and r_type not in _PROMOTIONS.get(w_type, ()):
                self.problems.append(f"{where}: {w_type} cannot be read as {r_type}")
            return
        if w_type != r_type:
            self.problems.append(f"{where}: {w_type} cannot be read as {r_type}")
            return
        if w_type == "array":
            self.check(writer["items"], reader["items"], f"{path}[]")
        elif w_type == "map":
            self.check(writer["values"], reader["values"], f"{path}{{}}")
        elif not _same_name(writer, reader):
            self.problems.append(f"{where}: named type {writer['name']} cannot be read as "
                                 f"{reader['name']} (no matching name or alias)")
        elif w_type == "fixed":
            if writer["size"] != reader["size"]:
                self.problems.append(f"{where}: fixed size {writer['size']} != {reader['size']}")
        elif w_type == "enum":
            missing = [s for s in writer["symbols"] if s not in reader["symbols"]]
            if missing and "default" not in reader:
                self.problems.append(f"{where}: enum symbols {missing} unknown to the reader, "
                                     "which has no enum default")
        elif w_type in ("record", "error"):
            self._check_record(writer, reader, path)

    def _check_record(self, writer: dict[str, Any], reader: dict[str, Any], path: str) -> None:
        pair = (writer["name"], reader["name"])
        if pair in self._seen:
            return
        self._seen.add(pair)
        written = {field["name"]: field for field in writer["fields"]}
        for field in reader["fields"]:
            name = field["name"]
            where = f"{path}.{name}" if path else name
            source = next(
                (written[n] for n in [name, *field.get("aliases", [])] if n in written), None
            )
            if source is not None:
                self.check(source["type"], field["type"], where)
            elif "default" not in field:
                self.problems.append(f"{where}: field added without a default; data written "
                                     "with the old schema has no value for it")

    def _resolve(self, schema: Any, names: dict[str, Any]) -> Any:
        if isinstance(schema, str) and schema not in _PRIMITIVES:
            return names[schema]
        return schema


def _type_of(schema: Any) -> str:
    return schema if isinstance(schema, str) else str(schema["type"])


def _logical(schema: Any) -> str | None:
    return schema.get("logicalType") if isinstance(schema, dict) else None


def _same_name(writer: dict[str, Any], reader: dict[str, Any]) -> bool:
    """Avro matches named types on their unqualified names, or on the reader's aliases."""

    def short(name: str) -> str:
        return name.rsplit(".", 1)[-1]

    aliases = {short(a) for a in reader.get("aliases", [])}
    return short(writer["name"]) in {short(reader["name"]), *aliases}


def _describe(schema: Any) -> str:
    if isinstance(schema, list):
        return "[" + ", ".join(_describe(s) for s in schema) + "]"
    if isinstance(schema, dict):
        return str(schema.get("name") or schema.get("logicalType") or schema["type"])
    return str(schema)

"""Strict datum checks, compiled once per schema, run before every encode.

fastavro's writer coerces instead of refusing: `1.5` is written as the long `1`, `"x"` as the
boolean `true`, a string as an array of its characters, a naive datetime as local time, and a
key the schema lacks is dropped. fastavro's `validate` catches most of that but builds (and
JSON-dumps) an exception for every union branch it rejects, which made encoding ten times
slower than the write itself. These checks are exact and cost a few isinstance calls per field.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any
from uuid import UUID

from fastavro.validation import ValidationError, validate

Check = Callable[[Any], None]
"""Raises Invalid if a datum does not fit its schema; returns None if it does."""

_INT32 = (-(2**31), 2**31 - 1)
_INT64 = (-(2**63), 2**63 - 1)


class Invalid(ValueError):
    """A datum that does not fit; `path` leads from the record to the offending value."""

    def __init__(self, message: str, path: tuple[str, ...] = ()) -> None:
        super().__init__(message)
        self.message = message
        self.path = path

    def within(self, step: str) -> Invalid:
        return Invalid(self.message, (step, *self.path))

    def __str__(self) -> str:
        where = "".join(s if s.startswith("[") else f".{s}" for s in self.path).lstrip(".")
        return f"{where}: {self.message}" if where else self.message


def compile_check(schema: Any, named: Mapping[str, Any]) -> Check:
    """The check for a parsed schema; `named` holds its named types by full name."""
    compiled: dict[str, Check] = {}
    return _compile(schema, named, compiled)


def _compile(schema: Any, named: Mapping[str, Any], compiled: dict[str, Check]) -> Check:
    if isinstance(schema, list):
        return _union([_compile(s, named, compiled) for s in schema], schema)
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return _PRIMITIVES[schema]
        if schema not in compiled:
            _compile(named[schema], named, compiled)  # registers itself under its name
        return compiled[schema]
    logical = schema.get("logicalType")
    if logical in ("timestamp-micros", "timestamp-millis"):
        return _timestamp
    if logical == "uuid":
        return _uuid
    if logical is not None:
        return _fastavro(schema, named)
    kind = schema["type"]
    if kind in _PRIMITIVES:
        return _PRIMITIVES[kind]
    if kind == "record":  # a late-bound stand-in first, so recursive types compile
        compiled[schema["name"]] = _forward(compiled, schema["name"])
        check = _record(schema, named, compiled)
        compiled[schema["name"]] = check
        return check
    if kind == "array":
        return _array(_compile(schema["items"], named, compiled))
    if kind == "map":
        return _map(_compile(schema["values"], named, compiled))
    if kind == "enum":
        return _enum(schema)
    if kind == "fixed":
        return _fixed(schema["size"])
    return _fastavro(schema, named)


def _forward(compiled: dict[str, Check], name: str) -> Check:
    return lambda datum: compiled[name](datum)


def _record(schema: dict[str, Any], named: Mapping[str, Any], compiled: dict[str, Check]) -> Check:
    fields = [(f["name"], _compile(f["type"], named, compiled), "default" in f)
              for f in schema["fields"]]
    names = frozenset(name for name, _, _ in fields)
    record = schema["name"]

    def check(datum: Any) -> None:
        if not isinstance(datum, Mapping):
            raise Invalid(f"{_show(datum)} is not a {record} record")
        unknown = datum.keys() - names
        if unknown:
            raise Invalid(f"fields not in schema {record}: {sorted(unknown)}")
        for name, field_check, has_default in fields:
            if name in datum:
                try:
                    field_check(datum[name])
                except Invalid as error:
                    raise error.within(name) from None
            elif not has_default:
                raise Invalid("missing, and the schema gives no default").within(name)

    return check


def _union(branches: list[Check], schema: list[Any]) -> Check:
    if len(branches) == 2 and schema[0] == "null":  # the common nullable case, fast
        value = branches[1]

        def nullable(datum: Any) -> None:
            if datum is not None:
                value(datum)

        return nullable

    def union(datum: Any) -> None:
        errors = []
        for branch in branches:
            try:
                branch(datum)
                return
            except Invalid as error:
                errors.append(str(error))
        raise Invalid(f"{_show(datum)} fits no branch of the union: " + "; ".join(errors))

    return union


def _array(item: Check) -> Check:
    strings = item is _PRIMITIVES["string"]

    def check(datum: Any) -> None:
        if not isinstance(datum, list | tuple):
            raise Invalid(f"{_show(datum)} is not an array")
        if strings and set(map(type, datum)) <= {str}:  # a packed record's 100k subjects
            return
        for index, element in enumerate(datum):
            try:
                item(element)
            except Invalid as error:
                raise error.within(f"[{index}]") from None

    return check


def _map(value: Check) -> Check:
    def check(datum: Any) -> None:
        if not isinstance(datum, Mapping):
            raise Invalid(f"{_show(datum)} is not a map")
        for key, element in datum.items():
            if not isinstance(key, str):
                raise Invalid(f"map key {key!r} is not a string")
            try:
                value(element)
            except Invalid as error:
                raise error.within(f"[{key!r}]") from None

    return check


def _enum(schema: dict[str, Any]) -> Check:
    symbols = frozenset(schema["symbols"])

    def check(datum: Any) -> None:
        if datum not in symbols:
            raise Invalid(f"{_show(datum)} is not a symbol of {schema['name']}")

    return check


def _fixed(size: int) -> Check:
    def check(datum: Any) -> None:
        if not isinstance(datum, bytes | bytearray) or len(datum) != size:
            raise Invalid(f"{_show(datum)} is not {size} bytes")

    return check


def _fastavro(schema: Any, named: Mapping[str, Any]) -> Check:
    """For what is not in our schemas (other logical types): fastavro's own validation."""

    def check(datum: Any) -> None:
        try:
            validate(datum, schema, raise_errors=True)
        except ValidationError:
            raise Invalid(f"{_show(datum)} does not match {schema}") from None

    return check


def _timestamp(datum: Any) -> None:
    if isinstance(datum, datetime):
        if datum.utcoffset() is None:
            raise Invalid(f"naive datetime {datum.isoformat()}; give a UTC offset")
    elif not _is_int(datum):
        raise Invalid(f"{_show(datum)} is not a timestamp")


def _uuid(datum: Any) -> None:
    if not isinstance(datum, UUID):
        try:
            UUID(datum)
        except (TypeError, ValueError, AttributeError):
            raise Invalid(f"{_show(datum)} is not a UUID") from None


def _is_int(datum: Any) -> bool:
    return isinstance(datum, int) and not isinstance(datum, bool)


def _int_check(kind: str, bounds: tuple[int, int]) -> Check:
    low, high = bounds

    def check(datum: Any) -> None:
        if not _is_int(datum) or not low <= datum <= high:
            raise Invalid(f"{_show(datum)} is not an Avro {kind}")

    return check


def _simple(kind: str, test: Callable[[Any], bool]) -> Check:
    def check(datum: Any) -> None:
        if not test(datum):
            raise Invalid(f"{_show(datum)} is not an Avro {kind}")

    return check


def _show(datum: Any) -> str:
    text = repr(datum)
    return text if len(text) <= 60 else text[:57] + "..."


_PRIMITIVES: dict[str, Check] = {
    "null": _simple("null", lambda d: d is None),
    "boolean": _simple("boolean", lambda d: isinstance(d, bool)),
    "int": _int_check("int", _INT32),
    "long": _int_check("long", _INT64),
    "float": _simple("float", lambda d: isinstance(d, int | float) and not isinstance(d, bool)),
    "double": _simple("double", lambda d: isinstance(d, int | float) and not isinstance(d, bool)),
    "bytes": _simple("bytes", lambda d: isinstance(d, bytes | bytearray)),
    "string": _simple("string", lambda d: isinstance(d, str)),
}

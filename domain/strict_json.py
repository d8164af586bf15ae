"""The strict JSON reader every command, batch and event document goes through: bounded,
UTF-8 only, no NaN or infinities, no key given twice; total (any input is a document or a
CommandError naming where it is wrong)."""

from __future__ import annotations

import json
import math
from typing import Any

from domain.errors import CommandError
from domain.limits import MAX_COMMAND_BYTES
from domain.values import field_name, shown


def load_json(text: str | bytes, max_bytes: int = MAX_COMMAND_BYTES) -> Any:
    """One JSON document of at most `max_bytes` UTF-8 bytes, read strictly; CommandError for
    anything else, so that no input raises anything but that.

    Refused: a larger document (before it is parsed), bytes that are not UTF-8, `NaN` and
    `Infinity`, a key given twice in one object (naming the key; JSON readers disagree on which
    one wins), nesting deeper than the parser's recursion limit. A number too large for a
    64-bit integer, or a float that overflows, is read as a value no field accepts, so the
    field that holds it is named."""
    if isinstance(text, bytes | bytearray | memoryview):
        raw = bytes(text)
        if len(raw) > max_bytes:
            raise CommandError(
                "", f"{len(raw):,} bytes; the limit for one document is {max_bytes:,}"
            )
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError as error:
            # Read with the bad bytes kept as lone surrogates, to name the value holding them.
            where = _fault_path(raw.decode("utf-8", "surrogateescape"), strings=True)
            raise CommandError(where or "", f"not valid UTF-8 (byte {error.start})") from None
    elif isinstance(text, str):
        size = len(text) if len(text) > max_bytes else len(text.encode("utf-8", "surrogatepass"))
        if size > max_bytes:
            raise CommandError("", f"{size:,} bytes; the limit for one document is {max_bytes:,}")
    else:
        raise CommandError("", "expected JSON text")
    try:
        document = _DECODER.decode(text)
    except json.JSONDecodeError as error:
        raise CommandError("", f"not valid JSON: {error.msg} at column {error.colno}") from None
    except RecursionError:
        raise CommandError("", "not valid JSON: nested too deeply") from None
    except CommandError as error:
        # Objects are built innermost first, so the hook knows the key but not where it is:
        # read once more, marking instead of refusing, to name the whole path.
        raise CommandError(_fault_path(text) or error.field, error.message) from None
    if "\\ud" in text.lower():  # an escaped surrogate: paired is text, a lone one is not
        where = _fault_path(text, strings=True)
        if where is not None:
            raise CommandError(where, "a lone surrogate escape (\\ud800-\\udfff) is not text")
    return document


class OutOfRange:
    """A JSON number no field can hold (NaN, an infinity, an integer beyond 64 bits): kept as a
    value every field refuses, so the refusal names the field."""

    def __init__(self, text: str) -> None:
        self.text = text

    def __repr__(self) -> str:
        return shown(self.text)


class _Marked(dict[str, Any]):
    """An object read by `_fault_path`'s decoder, with the key that is at fault in it."""

    fault = ""


def _mark_faults(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    marked = _Marked(pairs)
    try:
        _unique_keys(pairs)
    except CommandError as error:
        marked.fault = error.field
    return marked


def _fault_path(text: str, strings: bool = False) -> str | None:
    """The dotted path (`commands.3.subject`) of the first key `_unique_keys` refuses, or with
    `strings` of the first string that is not text (holds a lone surrogate); None if none."""
    try:
        document = json.JSONDecoder(
            object_pairs_hook=_mark_faults, parse_constant=_not_a_number, parse_int=_integer,
            parse_float=_float,
        ).decode(text)
    except (ValueError, RecursionError):
        return None
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, _Marked) and value.fault:
            return ".".join((*path, value.fault))
        if strings and isinstance(value, str) and not _encodable(value):
            return ".".join(path)
        if isinstance(value, dict):
            items = [(item, (*path, field_name(key))) for key, item in value.items()]
        elif isinstance(value, list):
            items = [(item, (*path, str(number))) for number, item in enumerate(value)]
        else:
            continue
        stack.extend(reversed(items))
    return None


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """Each object of the document: its keys once each, and each a Unicode string."""
    for key, _ in pairs:
        if not key.isascii() and not _encodable(key):
            raise CommandError(field_name(key), "a key with a lone surrogate (\\ud800-\\udfff)")
    document = dict(pairs)
    if len(document) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise CommandError(field_name(key), "duplicate key: give each field once")
            seen.add(key)
    return document


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _not_a_number(text: str) -> OutOfRange:
    return OutOfRange(text)


def _integer(text: str) -> int | OutOfRange:
    return int(text) if len(text) <= _MAX_INTEGER_DIGITS else OutOfRange(text)


def _float(text: str) -> float | OutOfRange:
    value = float(text)
    return value if math.isfinite(value) else OutOfRange(text)


_MAX_INTEGER_DIGITS = 20
"""Positions are 64-bit; longer digit strings are refused before Python converts them (its own
limit, 4,300 digits, raises ValueError)."""

_DECODER = json.JSONDecoder(
    object_pairs_hook=_unique_keys, parse_constant=_not_a_number, parse_int=_integer,
    parse_float=_float,
)
"""Built once: `json.loads` with hooks would build a decoder per call."""

"""JSON as the shells receive it: the bytes of a request body or of a line of input.

The standard parsers let the last of two equal keys win, read `NaN` and `1e999` as numbers,
keep unpaired surrogates from `\\ud800` escapes, and raise something other than a decoding
error on invalid UTF-8 or deep nesting. Two parsers reading one document two ways is how a
request smuggles a field past a gateway, so each of these is refused, naming where it is
(`requests.3.subject`).
"""

from __future__ import annotations

import json
import math
from typing import Any

UNPAIRED = "not valid UTF-8 (or an unpaired surrogate escape)"


class JSONInputError(ValueError):
    """A document that is not one unambiguous JSON value; `field` is the dotted path of the
    value at fault, empty when the fault is not inside a value."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(f"{field}: {message}" if field else message)
        self.field = field
        self.message = message


class _Repeated(ValueError):
    """An object repeats a key (raised from the parser, which then stops)."""


class _NotANumber(ValueError):
    """`NaN`, `Infinity` or a number beyond a float (raised from the parser)."""


class _Duplicated(dict[str, Any]):
    """An object that repeats `key`, marked, when the document is read again to name the
    path of the fault."""

    key = ""


def _refuse_repeats(items: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(items)
    if len(found) != len(items):
        raise _Repeated
    return found


def _mark_repeats(items: list[tuple[str, Any]]) -> dict[str, Any]:
    found = dict(items)
    if len(found) == len(items):
        return found
    marked = _Duplicated(found)
    seen: set[str] = set()
    marked.key = next(key for key, _ in items if key in seen or seen.add(key))  # type: ignore[func-returns-value]
    return marked


def _no_constant(name: str) -> float:
    raise _NotANumber(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise _NotANumber(f"the number {text[:20]} is out of range")
    return value


_STRICT = json.JSONDecoder(object_pairs_hook=_refuse_repeats, parse_constant=_no_constant,
                           parse_float=_finite)
_MARKING = json.JSONDecoder(object_pairs_hook=_mark_repeats, parse_constant=_no_constant,
                            parse_float=_finite)


def load_json(data: bytes) -> Any:
    """One JSON value; JSONInputError when `data` is not UTF-8 or not JSON, repeats a key in
    an object, holds a non-finite number or an unpaired surrogate, or nests deeper than the
    interpreter recurses."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as error:
        # Read with the bad bytes kept as surrogates, to name the value that holds them.
        where = f" at byte {error.start + 1}"
        fault = _fault(data.decode("utf-8", errors="surrogateescape"), where)
        raise fault or JSONInputError("", "not valid UTF-8" + where) from None
    try:
        document = _STRICT.decode(text)
    except _Repeated:
        raise _fault(text, "") or JSONInputError("", "duplicate key") from None
    except (ValueError, RecursionError) as error:
        raise _unparsed(error) from None
    if "\\ud" in text or "\\uD" in text:  # an escaped surrogate, maybe unpaired
        fault = _fault(text, "")
        if fault is not None:
            raise fault
    return document


def _unparsed(error: ValueError | RecursionError) -> JSONInputError:
    if isinstance(error, json.JSONDecodeError):
        return JSONInputError("", f"not valid JSON: {error.msg} at line {error.lineno} column "
                              f"{error.colno}")
    if isinstance(error, RecursionError):
        return JSONInputError("", "not valid JSON: nested too deeply")
    if isinstance(error, _NotANumber):
        return JSONInputError("", f"not valid JSON: {error}")
    return JSONInputError("", "not valid JSON: an integer of too many digits")


def _fault(text: str, where: str) -> JSONInputError | None:
    """The first unpaired surrogate (or undecodable byte) or repeated key of `text`, in
    document order, naming its path; None when there is none inside a value."""
    try:
        document = _MARKING.decode(text)
    except (ValueError, RecursionError) as error:
        return None if where else _unparsed(error)
    stack: list[tuple[Any, tuple[str, ...]]] = [(document, ())]
    while stack:
        value, path = stack.pop()
        if isinstance(value, str):
            if _has_surrogate(value):
                return JSONInputError(".".join(path), UNPAIRED + where)
        elif isinstance(value, dict):
            if any(_has_surrogate(key) for key in value):
                return JSONInputError(".".join(path), "a key is " + UNPAIRED + where)
            if isinstance(value, _Duplicated):
                return JSONInputError(".".join((*path, _named(value.key))), "duplicate key")
            stack.extend(reversed([(item, (*path, _named(key))) for key, item in value.items()]))
        elif isinstance(value, list):
            stack.extend(reversed([(item, (*path, str(number)))
                                   for number, item in enumerate(value)]))
    return None


def _has_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _named(key: str) -> str:
    """A key as a refusal names it: bounded, so that no refusal echoes a huge document."""
    return key if len(key) <= 64 else key[:61] + "..."

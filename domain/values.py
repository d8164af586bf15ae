"""What a string in the input may hold: identifiers, free text and country codes.

Commands, decision requests and predicates all check their strings here, so one rule holds on
every path. Each check raises ValueError with a message meant for the person who sent it.

- An **identifier** (subject, model, family, entitlement, directive, org, purpose, command and
  key ids) is 1 to MAX_ID_CHARS printable characters with no whitespace: Unicode letters, marks,
  numbers, punctuation and symbols, in normal form NFC. Refused: control characters (NUL, ESC,
  ...), every format character (bidi embeddings, overrides and isolates U+202A-U+202E and
  U+2066-U+2069, marks U+200E/U+200F, zero-width U+200B-U+200D, U+2060, the BOM U+FEFF, soft
  hyphen), separators (spaces of every width, line and paragraph separators), surrogates,
  private-use and unassigned code points. In ASCII that is `!` to `~`.
- **Free text** (a directive's authority and reference, an attestation's source and evidence)
  is at most MAX_TEXT_CHARS characters on one line: no control characters (tab and newline
  included), line or paragraph separators, surrogates, or bidi embeddings, overrides and
  isolates, which could make a human reading it see something other than what is stored.
- A **country code** is an ISO 3166-1 alpha-2 code officially assigned today, as pycountry
  lists it; it is upper-cased on the way in. User-assigned codes (`XK`, `ZZ`, ...) and
  alpha-3 codes (`DEU`) are refused: a code the list does not know would match no attestation,
  and a directive written with it would silently fail open.
"""

from __future__ import annotations

import re
import unicodedata
from functools import cache

import pycountry

from domain.limits import MAX_ID_CHARS, MAX_TEXT_CHARS

_PRINTABLE_ASCII_ID = re.compile(r"[!-~]+")
_PRINTABLE_ASCII_TEXT = re.compile(r"[ -~]*")
_ID_CATEGORIES = frozenset("LMNPS")
"""Unicode general categories (first letter) an identifier may use."""
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")
_TEXT_CATEGORIES_REFUSED = frozenset(("Cc", "Cs", "Zl", "Zp"))


def shown(value: object, limit: int = 40) -> str:
    """A value quoted for an error message: escaped, so that it cannot carry control characters
    into a terminal or log, and cut to `limit` characters."""
    text = ascii(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def field_name(key: object) -> str:
    """A document key as it may appear in a field path: as is when it is a short printable
    ASCII name, else quoted by `shown` (an unknown key is still named, but safely)."""
    if isinstance(key, str) and len(key) <= 64 and _PRINTABLE_ASCII_ID.fullmatch(key):
        return key
    return shown(key)


def _character(ch: str) -> str:
    name = unicodedata.name(ch, "")
    return f"U+{ord(ch):04X}" + (f" ({name})" if name else "")


def check_identifier(value: str) -> str:
    """`value` when it is an identifier (see the module's docstring), else ValueError."""
    if len(value) > MAX_ID_CHARS:
        raise ValueError(f"at most {MAX_ID_CHARS} characters, not {len(value)}")
    if _PRINTABLE_ASCII_ID.fullmatch(value):
        return value
    for ch in value:
        if unicodedata.category(ch)[0] not in _ID_CATEGORIES:
            raise ValueError(
                f"character {_character(ch)} is not allowed in an id: ids are printable "
                "characters without whitespace"
            )
    if not unicodedata.is_normalized("NFC", value):
        raise ValueError("an id must be in Unicode normal form NFC")
    return value


def check_text(value: str) -> str:
    """`value` when it is free text (see the module's docstring), else ValueError."""
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"at most {MAX_TEXT_CHARS} characters, not {len(value)}")
    if _PRINTABLE_ASCII_TEXT.fullmatch(value):
        return value
    for ch in value:
        if ch in _BIDI_CONTROLS or unicodedata.category(ch) in _TEXT_CATEGORIES_REFUSED:
            raise ValueError(f"character {_character(ch)} is not allowed in text")
    return value


@cache
def country_codes() -> frozenset[str]:
    """The ISO 3166-1 alpha-2 codes pycountry knows (officially assigned ones only)."""
    return frozenset(country.alpha_2 for country in pycountry.countries)


def check_country(value: str) -> str:
    """`value` upper-cased when it is an ISO 3166-1 alpha-2 country code, else ValueError."""
    code = value.strip().upper() if value.isascii() else value
    if code not in country_codes():
        raise ValueError(
            f"{shown(value)} is not an ISO 3166-1 alpha-2 country code (e.g. US, DE, FR)"
        )
    return code

"""Pausing Python's cyclic garbage collector around bulk work on the index."""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


@contextmanager
def gc_paused(freeze: bool = False) -> Iterator[None]:
    """Bulk work on the index (a replay, an order reaching 100,000 subjects) allocates millions
    of small acyclic objects; the collector would scan the whole heap again and again for
    cycles that are not there. With `freeze`, what was built is moved out of its reach."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()
        if freeze:
            gc.freeze()

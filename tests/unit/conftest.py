from __future__ import annotations

import pytest

from .support import Harness, grant, nationality, register


@pytest.fixture
def h() -> Harness:
    """An empty engine on the memory store, recording at 2026-01-01T00:00Z."""
    return Harness()


@pytest.fixture
def world(h: Harness) -> Harness:
    """Three models in two families; `us` (US citizen), `de` (German) and `anon` (no
    nationality attestation), each entitled to every model from 2026-01-01 on."""
    h.apply(
        register("fable-5", "fable"),
        register("fable-4", "fable"),
        register("mythos-5", "mythos"),
        nationality("us", ["US"]),
        nationality("de", ["DE"]),
        grant("e-us", subject="us"),
        grant("e-de", subject="de"),
        grant("e-anon", subject="anon"),
    )
    return h

"""Property-based conformance: schemathesis generates requests from /openapi.json and checks
that no answer is a server error and every answer matches its documented status, media type
and schema. Bounded to a few examples per operation so the suite stays quick."""

from __future__ import annotations

import atexit
import tempfile

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from domain.commands import parse_command
from interlock.engine import open_engine
from interlock.http.app import create_app
from interlock.http.settings import ServeSettings

from .http_support import ORDER, SETUP

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance,
          response_schema_conformance]


def _api_schema() -> schemathesis.BaseSchema:
    """The app on a store holding SETUP and the order, logging its decisions (so that
    `GET /v1/decisions` answers them); schemathesis runs its lifespan.

    Built at collection (schemathesis's fixture-based loader does not work with this pytest),
    on a store in a temporary directory removed when the run ends."""
    directory = tempfile.TemporaryDirectory(prefix="interlock-schema-")
    atexit.register(directory.cleanup)
    store = f"sqlite:///{directory.name}/store.db"
    engine = open_engine(store)
    try:
        engine.app.apply_all(parse_command(command) for command in [*SETUP, ORDER])
    finally:
        engine.close()
    app = create_app(ServeSettings(store=store, wait_seconds=0.05,
                                   decision_log=f"sqlite:///{directory.name}/decisions.db"))
    return schemathesis.openapi.from_asgi("/openapi.json", app)


schema = _api_schema()


@schema.exclude(path="/v1/enforcement/stream").parametrize()
@settings(max_examples=30, deadline=None, suppress_health_check=list(HealthCheck))
def test_every_answer_conforms_to_the_openapi_document(case: schemathesis.Case) -> None:
    case.call_and_validate(checks=CHECKS)
# The enforcement stream never ends by design; tests/http/test_http_enforcement_stream.py
# drives it against a real server.

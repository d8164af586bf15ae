"""Every bound Interlock puts on its input, in one place.

The README's "Limits" table lists them; commands, the HTTP app and the Kafka processes import
them from here, so a limit changed here changes on every path at once.
"""

from datetime import UTC, datetime

MAX_ID_CHARS = 200
"""Identifiers: subjects, models, families, entitlements, directives, orgs, command and key ids."""

MAX_TEXT_CHARS = 1_000
"""Free text: a directive's authority and reference, an attestation's source and evidence."""

MAX_LIST_ITEMS = 256
"""Items in one list: model selectors, citizenships, residencies, exemptions, predicate values."""

EARLIEST_TIME = datetime(1900, 1, 1, tzinfo=UTC)
LATEST_TIME = datetime(9000, 1, 1, tzinfo=UTC)
"""Every timestamp lies in [EARLIEST_TIME, LATEST_TIME): wide enough for a birth date or "for
ever", and far from the ends of Python's datetime, where converting an offset overflows."""

MAX_PREDICATE_DEPTH = 16
"""Nesting of all/any/not in a subject predicate."""

MAX_PREDICATE_NODES = 256
"""Nodes (junctions, negations and attribute tests) in one subject predicate."""

MAX_COMMAND_BYTES = 64 * 1024
"""One command as UTF-8 JSON: a line of `interlock apply`, one Kafka message, one HTTP command."""

MAX_BATCH_COMMANDS = 1_000
"""Commands in one `POST /v1/commands` body."""

MAX_DECISION_BATCH = 10_000
"""Requests in one `POST /v1/decide/batch` body or `decide --batch` chunk."""

MAX_LOG_ROWS = 10_000
"""Served decisions one `decisions query` or `GET /v1/decisions` lists (`limit`)."""

MAX_REQUEST_BYTES = 8 * 1024 * 1024
"""One HTTP request body; a larger one is refused with 413 before it is parsed."""

MAX_EVENT_BYTES = 256 * 1024
"""One stored event's state; commands within MAX_COMMAND_BYTES stay far below it."""

KAFKA_MAX_MESSAGE_BYTES = 1024 * 1024
"""`max.message.bytes` of Interlock's topics and the producers' `max_request_size`: a stored
event of MAX_EVENT_BYTES with its headers always fits."""

MAX_ENFORCEMENT_RECORD_BYTES = 256 * 1024
"""One packed `access_revoked` / `access_restored` record (its subjects listed): a larger set
of subjects is split across records. Well under KAFKA_MAX_MESSAGE_BYTES, so that a producer
batch holding one such record and smaller ones stays under it too."""

MAX_STREAM_CONNECTIONS = 16
"""Open `/v1/enforcement/stream` connections per server process; more are refused with 503."""

"""Intake attacked through the real broker: no message stops it, each one ends applied or in the
dead-letter topic exactly once, store faults are waited out, crashes lose and repeat nothing.

Fuzz knobs (README, "Tests"): INTERLOCK_FUZZ_MESSAGES (default 200), INTERLOCK_FUZZ_KILLS
(default 3), INTERLOCK_FUZZ_SEED (default: random, printed on failure).
"""

from __future__ import annotations

import json
import os
import random
import sqlite3
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from eventsourcing.persistence import OperationalError
from kafka import KafkaAdminClient

from consumers.intake import Intake
from consumers.kafka import header
from domain.aggregates import Directive, ModelVersion, Subject
from domain.application import Interlock
from domain.commands import CommandConflict, parse_command
from domain.limits import MAX_COMMAND_BYTES
from interlock.config import store_environment
from interlock.signing import generate_key, public_key_b64, sign_command
from schemas.codec import default_registry
from schemas.records import command_to_record, encode_command
from tests.adversarial.kafka_support import (
    Deployment,
    as_json,
    dead_letter_offsets,
    deployed,
    produce,
    read_topic,
    stored_events,
    stored_offset,
    wait_until,
)

pytestmark = pytest.mark.kafka

SINCE = "2026-01-01T00:00:00+00:00"


@pytest.fixture
def deployment(kafka_bootstrap: str, tmp_path: Path) -> Iterator[Deployment]:
    yield from deployed(kafka_bootstrap, tmp_path)


def register(model: str) -> dict[str, Any]:
    return {"type": "register_model", "model": model, "family": model.split("-")[0]}


def located(subject: str, source: str, country: str = "FR") -> dict[str, Any]:
    return {"type": "attest_location", "subject": subject, "country": country,
            "valid_from": SINCE, "source": source}


def nested(depth: int) -> dict[str, Any]:
    predicate: dict[str, Any] = {"everyone": True}
    for _ in range(depth):
        predicate = {"not": predicate}
    return predicate


def deep_directive(model: str, depth: int = 300) -> dict[str, Any]:
    return {"type": "issue_directive", "directive": f"deep-{depth}", "models": [model],
            "subjects": nested(depth)}


def avro_with_deep_predicate(model: str) -> bytes:
    """An Avro issue_directive whose predicate (a JSON string on the wire) nests 300 deep."""
    name, record = command_to_record(parse_command(deep_directive(model, depth=1)))
    record["subjects"] = json.dumps(nested(300))
    return default_registry().encode(name, record)


def poison(model: str) -> dict[str, bytes | None]:
    """Messages that must each be refused, whatever is wrong with them."""
    return {
        "invalid UTF-8": b'{"type": "register_model", "model": "\xff\xfe", "family": "f"}',
        "bad JSON": b'{"type": "register_model", "model": "x"',
        "year 9999 with an offset": as_json({"type": "withdraw_model", "model": model,
                                             "effective_at": "9999-12-31T23:59:59-05:00"}),
        "predicate 300 deep": as_json(deep_directive(model)),
        "Avro predicate 300 deep": avro_with_deep_predicate(model),
        "JSON nested 20,000 deep": b'{"type": "register_model", "model": '
                                    + b"[" * 20_000 + b"]" * 20_000 + b"}",
        "oversized": as_json({**register("big-1"), "family": "f" * MAX_COMMAND_BYTES}),
        "truncated Avro": encode_command(parse_command(register("avro-1")))[:-2],
        "unknown Avro fingerprint": b"\xc3\x01" + b"\x00" * 8 + b"\x02x",
        "random bytes": b"\x00\x01garbage\xfe",
        "empty": None,
        "unknown type": as_json({"type": "explode"}),
        "wrong type": as_json({"type": "register_model", "model": "m-x", "family": 5}),
        "unknown field": as_json({**register("m-y"), "colour": "red"}),
        "no offset": as_json({"type": "withdraw_model", "model": model,
                              "effective_at": "2026-01-01T00:00:00"}),
        "unknown reference": as_json({"type": "withdraw_model", "model": "ghost-1"}),
        "already registered": as_json(register(model)),
    }


def models_registered(store: str) -> Counter[str]:
    return Counter(e.model for e in stored_events(store)
                   if isinstance(e, ModelVersion.Registered))


def test_no_message_stops_intake_and_each_bad_one_is_dead_lettered_once(
    deployment: Deployment,
) -> None:
    intake = deployment.start("intake")
    bad = poison("fable-5")
    values = [as_json(register("fable-5")), *bad.values(), as_json(register("mythos-5")),
              as_json(located("u-1", "after-the-poison"))]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    wait_until(lambda: stored_offset(deployment.store, deployment.topics) == offsets[-1] + 1,
               "intake to pass every message", alive=lambda: intake.poll() is None)

    dead = read_topic(deployment.bootstrap, deployment.topics.dlq)
    assert [int(header(r, "offset")) for r in dead] == offsets[1:-2], [
        header(r, "error") for r in dead]
    for record, (what, value) in zip(dead, bad.items(), strict=True):
        assert header(record, "topic").decode() == deployment.topics.commands, what
        assert header(record, "partition") == b"0", what
        assert header(record, "error"), what
        if what == "oversized":
            assert int(header(record, "truncated")) == len(value)
            assert record.value == value[:MAX_COMMAND_BYTES]
        else:
            assert record.value == (value or b""), what
    errors = {what: header(r, "error").decode() for r, what in zip(dead, bad, strict=True)}
    assert errors["oversized"].startswith(f"message of {len(bad['oversized']):,} bytes")
    assert errors["unknown field"].startswith("colour: unknown field")
    assert errors["unknown reference"].startswith("model: unknown model")
    assert errors["already registered"] == "model: fable-5 is already registered"

    assert models_registered(deployment.store) == {"fable-5": 1, "mythos-5": 1}
    assert [e.source for e in stored_events(deployment.store)
            if isinstance(e, Subject.LocationAttested)] == ["after-the-poison"]
    assert intake.poll() is None, "intake exited"


def test_unsigned_forged_and_altered_directives_are_dead_lettered(
    deployment: Deployment,
) -> None:
    key = generate_key()
    keys = {"officer-1": public_key_b64(key)}
    intake = deployment.start("intake", env={"INTERLOCK_OFFICER_KEYS": json.dumps(keys)})
    issue = {"type": "issue_directive", "directive": "d-1", "command_id": "c-issue",
             "models": ["fable-5"], "subjects": {"citizenship": {"none_of": ["US"]}}}
    lift = {"type": "lift_directive", "directive": "d-1", "command_id": "c-lift",
            "effective_at": "2026-12-01T00:00:00+00:00"}
    signed_lift = sign_command(lift, key, "officer-1")
    other_key = sign_command(lift, generate_key(), "officer-1")
    unknown_key = sign_command(lift, key, "officer-9")
    altered = {**signed_lift, "effective_at": "2026-11-01T00:00:00+00:00"}
    unsigned_amend = {"type": "amend_directive", "directive": "d-1", "command_id": "c-amend",
                      "exempt": {"subjects": ["u-3"], "orgs": []}}
    values = [as_json(register("fable-5")), as_json(sign_command(issue, key, "officer-1")),
              as_json(lift), as_json(other_key), as_json(unknown_key), as_json(altered),
              as_json(unsigned_amend), encode_command(parse_command(lift)),
              as_json(signed_lift)]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    wait_until(lambda: stored_offset(deployment.store, deployment.topics) == offsets[-1] + 1,
               "intake to pass every message", alive=lambda: intake.poll() is None)

    dead = read_topic(deployment.bootstrap, deployment.topics.dlq)
    assert [int(header(r, "offset")) for r in dead] == offsets[2:-1]
    assert all(header(r, "error").decode().startswith("signature: ") for r in dead), [
        header(r, "error") for r in dead]
    directive_events = [(type(e).__name__, e.signed_by) for e in stored_events(deployment.store)
                        if isinstance(e, Directive.Issued | Directive.Amended | Directive.Lifted)]
    assert directive_events == [("Issued", "officer-1"), ("Lifted", "officer-1")]
    assert intake.poll() is None


def refuses_command_id_conflicts() -> bool:
    """Whether the domain refuses a command_id reused for another command (issue 9, item 4)."""
    app = Interlock(env={"PERSISTENCE_MODULE": "eventsourcing.popo"})
    app.apply(parse_command({**register("m-1"), "command_id": "c-1"}))
    try:
        app.apply(parse_command({**register("m-2"), "command_id": "c-1"}))
    except CommandConflict:
        return True
    return False


@pytest.mark.skipif(not refuses_command_id_conflicts(),
                    reason="the domain does not refuse command_id conflicts yet")
def test_a_command_id_reused_for_another_command_is_dead_lettered(
    deployment: Deployment,
) -> None:
    intake = deployment.start("intake")
    first = {**register("fable-5"), "command_id": "c-1"}
    values = [as_json(first), as_json(first), as_json({**register("mythos-5"),
                                                       "command_id": "c-1"})]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    wait_until(lambda: stored_offset(deployment.store, deployment.topics) == offsets[-1] + 1,
               "intake to pass every message", alive=lambda: intake.poll() is None)
    dead = read_topic(deployment.bootstrap, deployment.topics.dlq)
    assert [int(header(r, "offset")) for r in dead] == [offsets[2]]
    assert "c-1" in header(dead[0], "error").decode()
    assert models_registered(deployment.store) == {"fable-5": 1}


# ----------------------------------------------------------------- in-process, faults injected


class Crash(BaseException):
    """Stands for the process dying at the point it is raised."""


def in_process(of: Deployment, env: dict[str, str] | None = None) -> Intake:
    app = Interlock(env={**store_environment(of.store), **(env or {})})
    return Intake(app, of.bootstrap, of.topics)


def drain(intake: Intake, last_offset: int) -> None:
    """Polls until intake has stored the offset after `last_offset`."""
    wait_until(lambda: intake.poll(200) >= 0 and intake.stored[0] > last_offset,
               f"intake to pass offset {last_offset}")


def crash(*args: Any, **kwargs: Any) -> Any:
    raise Crash


def test_a_refusal_keeps_the_other_commands_of_its_poll(
    deployment: Deployment,
) -> None:
    values = [as_json(register("m-a")), as_json(register("m-b")),
              as_json(deep_directive("m-a")), as_json(register("m-c")),
              as_json(located("u-1", "last"))]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    intake = in_process(deployment)
    try:
        drain(intake, offsets[-1])
    finally:
        intake.close()
    assert dead_letter_offsets(deployment.bootstrap, deployment.topics) == [offsets[2]]
    assert models_registered(deployment.store) == {"m-a": 1, "m-b": 1, "m-c": 1}
    assert not [e for e in stored_events(deployment.store) if isinstance(e, Directive.Issued)]


def test_a_locked_store_is_waited_out_never_dead_lettered(
    deployment: Deployment,
    caplog: pytest.LogCaptureFixture,
) -> None:
    values = [as_json(register(f"m-{n}")) for n in range(5)]
    intake = in_process(deployment, {"SQLITE_LOCK_TIMEOUT": "1"})
    path = store_environment(deployment.store)["SQLITE_DBNAME"]
    lock = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    lock.execute("BEGIN EXCLUSIVE")
    released = threading.Timer(3.5, lock.rollback)
    released.start()
    try:
        offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
        drain(intake, offsets[-1])
    finally:
        released.join()
        intake.close()
        lock.close()
    assert "store unavailable" in caplog.text
    assert dead_letter_offsets(deployment.bootstrap, deployment.topics) == []
    assert models_registered(deployment.store) == {f"m-{n}": 1 for n in range(5)}


def test_a_store_that_keeps_failing_is_retried_and_nothing_is_skipped(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = [as_json(register("m-1")), b"garbage", as_json(register("m-2"))]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    intake = in_process(deployment)
    insert = intake.app.recorder.insert_events
    failures = iter([
        OperationalError("disk I/O error"), OperationalError("database is locked"),
        # what the hash chain raises when the log is not what a chained writer left there
        RuntimeError("position 3: unchained: an event no chained writer stored"),
        RuntimeError("position 3: unchained: an event no chained writer stored"),
    ])

    def flaky(*args: Any, **kwargs: Any) -> Any:
        failure = next(failures, None)
        if failure is not None:
            raise failure
        return insert(*args, **kwargs)

    monkeypatch.setattr(intake.app.recorder, "insert_events", flaky)
    try:
        drain(intake, offsets[-1])
    finally:
        intake.close()
    assert next(failures, None) is None, "every injected failure was met"
    assert dead_letter_offsets(deployment.bootstrap, deployment.topics) == [offsets[1]]
    assert models_registered(deployment.store) == {"m-1": 1, "m-2": 1}


def test_a_crash_after_the_dead_letter_neither_repeats_nor_applies_it(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = [as_json(register("m-1")), as_json({"type": "withdraw_model", "model": "ghost"}),
              as_json(register("m-2"))]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    first = in_process(deployment)
    insert = first.app.recorder.insert_events

    def crash_past_the_refusal(*args: Any, tracking: Any = None, **kwargs: Any) -> Any:
        if tracking is not None and tracking.notification_id > offsets[1]:
            raise Crash
        return insert(*args, tracking=tracking, **kwargs)

    monkeypatch.setattr(first.app.recorder, "insert_events", crash_past_the_refusal)
    with pytest.raises(Crash):
        drain(first, offsets[-1])
    first.close()
    assert dead_letter_offsets(deployment.bootstrap, deployment.topics) == [offsets[1]]
    assert models_registered(deployment.store) == {}

    # The refused command would apply now; it was refused, so it must not be.
    Interlock(env=store_environment(deployment.store)).apply(parse_command(register("ghost")))
    second = in_process(deployment)
    try:
        drain(second, offsets[-1])
    finally:
        second.close()
    assert dead_letter_offsets(deployment.bootstrap, deployment.topics) == [offsets[1]]
    assert models_registered(deployment.store) == {"ghost": 1, "m-1": 1, "m-2": 1}
    assert not [e for e in stored_events(deployment.store)
                if isinstance(e, ModelVersion.Withdrawn)]


def test_a_crash_before_the_dead_letter_commits_sends_it_once(
    deployment: Deployment,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    values = [as_json(register("m-1")), b"garbage", as_json(register("m-2"))]
    offsets = produce(deployment.bootstrap, deployment.topics.commands, values)
    first = in_process(deployment)
    monkeypatch.setattr(first.dlq, "commit_transaction", crash)
    monkeypatch.setattr(first.dlq, "abort_transaction", crash)
    with pytest.raises(Crash):
        drain(first, offsets[-1])
    first.consumer.close()  # the producer is left with its transaction open, as in a crash

    second = in_process(deployment)
    try:
        drain(second, offsets[-1])
    finally:
        second.close()
    assert dead_letter_offsets(deployment.bootstrap, deployment.topics) == [offsets[1]]
    assert models_registered(deployment.store) == {"m-1": 1, "m-2": 1}


# ----------------------------------------------------------------------------------- ordering


def test_a_directive_produced_after_its_model_is_never_refused_for_it(
    deployment: Deployment,
) -> None:
    admin = KafkaAdminClient(bootstrap_servers=deployment.bootstrap)
    try:
        [described] = admin.describe_topics([deployment.topics.commands])
    finally:
        admin.close()
    assert len(described["partitions"]) == 1
    intake = deployment.start("intake")
    pairs = 30
    values, keys = [], []
    for n in range(pairs):
        values += [as_json(register(f"m-{n}")),
                   as_json({"type": "issue_directive", "directive": f"d-{n}",
                            "models": [f"m-{n}"], "subjects": {"everyone": True}})]
        keys += [f"m-{n}".encode(), f"d-{n}".encode()]
    produce(deployment.bootstrap, deployment.topics.commands, values, keys=keys)

    def issued() -> list[Any]:
        return [e for e in stored_events(deployment.store) if isinstance(e, Directive.Issued)]

    wait_until(lambda: len(models_registered(deployment.store)) == pairs and len(issued())
               + len(dead_letter_offsets(deployment.bootstrap, deployment.topics)) == pairs,
               "intake to apply or refuse every command", alive=lambda: intake.poll() is None)
    assert [header(r, "error") for r in read_topic(deployment.bootstrap,
                                                   deployment.topics.dlq)] == []
    assert len(issued()) == pairs


def test_an_existing_multi_partition_commands_topic_is_consumed_with_a_warning(
    kafka_bootstrap: str, tmp_path: Path,
) -> None:
    legacy = Deployment(kafka_bootstrap, tmp_path)
    admin = KafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    try:
        admin.create_topics({legacy.topics.commands: {"num_partitions": 3,
                                                          "replication_factor": 1}},
                            wait_for_metadata=True)
    finally:
        admin.close()
    try:
        intake = legacy.start("intake")
        offsets = produce(kafka_bootstrap, legacy.topics.commands, [as_json(register("m-1"))])
        wait_until(lambda: models_registered(legacy.store) == {"m-1": 1},
                   "intake to apply the command", alive=lambda: intake.poll() is None)
        assert offsets == [0]
        warning = [line for line in legacy.stderr("intake").splitlines()
                   if "3 partitions" in line]
        assert len(warning) == 1 and "one partition" in warning[0]
    finally:
        legacy.stop_all()


# --------------------------------------------------------------------------------------- fuzz

FUZZ_MESSAGES = int(os.environ.get("INTERLOCK_FUZZ_MESSAGES", "200"))
FUZZ_KILLS = int(os.environ.get("INTERLOCK_FUZZ_KILLS", "3"))
FUZZ_SEED = int(os.environ.get("INTERLOCK_FUZZ_SEED") or random.randrange(2**32))


class Fuzz:
    """Random messages, each known valid (with a marker that says whether it was applied) or
    invalid by construction (a mutation that no command survives)."""

    def __init__(self, rng: random.Random) -> None:
        self.rng = rng
        self.models: list[str] = []

    def valid(self, n: int) -> tuple[bytes, str]:
        """A command that applies, and the marker its event carries."""
        rng = self.rng
        if rng.random() < 0.3:
            command = register(f"m-{n}")
            self.models.append(f"m-{n}")
        else:
            command = located(f"s-{n}", f"fuzz-{n}", rng.choice(["FR", "DE", "US", "JP", "BR"]))
        value = encode_command(parse_command(command)) if rng.random() < 0.5 else as_json(
            command)
        return value, f"m-{n}" if command["type"] == "register_model" else f"fuzz-{n}"

    def invalid(self, n: int) -> bytes | None:
        rng = self.rng
        command = located(f"s-{n}", f"bad-{n}")
        text = json.dumps(command)
        mutations: list[Callable[[], bytes | None]] = [
            lambda: text.replace(f"bad-{n}", f"bad-\udcff{n}", 1).encode("utf-8",
                                                                         "surrogateescape"),
            lambda: text[: rng.randrange(1, len(text) - 1)].encode(),
            lambda: as_json({**command, f"x{rng.randrange(99)}": 1}),
            lambda: as_json({**command, "country": rng.choice(["USA", "U5", "", "F"])}),
            lambda: as_json({**command, "valid_from": "9999-12-31T23:59:59-05:00"}),
            lambda: as_json({**command, "valid_from": "2026-01-01T00:00:00"}),
            lambda: as_json({**command, "valid_until": "2025-01-01T00:00:00+00:00"}),
            lambda: as_json(deep_directive("m-none", rng.randrange(300, 600))),
            lambda: as_json({**command, "source": "x" * (MAX_COMMAND_BYTES + rng.randrange(99))}),
            lambda: encode_command(parse_command(command))[: -rng.randrange(1, 5)],
            lambda: b"\xc3\x01" + rng.randbytes(8) + rng.randbytes(rng.randrange(40)),
            lambda: bytes([rng.randrange(0x80, 0xc3)]) + rng.randbytes(rng.randrange(300)),
            lambda: None,
            lambda: as_json({"type": "withdraw_model", "model": f"ghost-{n}"}),
            lambda: as_json({**command, "subject": rng.choice([5, [], None, {}])}),
            lambda: as_json({**command, "type": rng.choice(["explode", "", "Attest_location"])}),
            lambda: as_json(register(rng.choice(self.models))) if self.models else b"x",
        ]
        return rng.choice(mutations)()


def test_fuzz_intake_killed_at_random_applies_each_valid_command_once(
    deployment: Deployment,
) -> None:
    rng = random.Random(FUZZ_SEED)
    seed = f"INTERLOCK_FUZZ_SEED={FUZZ_SEED}"
    fuzz = Fuzz(rng)
    valid: dict[int, str] = {}
    """message number → the marker of its event"""
    values: list[bytes | None] = []
    for n in range(FUZZ_MESSAGES):
        if rng.random() < 0.55:
            value, marker = fuzz.valid(n)
            valid[n] = marker
            values.append(value)
        else:
            values.append(fuzz.invalid(n))
    cuts = sorted(rng.sample(range(1, FUZZ_MESSAGES), min(FUZZ_KILLS, FUZZ_MESSAGES - 1)))
    waves = [values[a:b] for a, b in zip([0, *cuts], [*cuts, FUZZ_MESSAGES], strict=True)]

    offsets: list[int] = []
    deployment.start("intake")
    started_at = 0
    """Where the running intake's stderr begins in the file every run appends to."""
    for number, wave in enumerate(waves):
        offsets += produce(deployment.bootstrap, deployment.topics.commands, wave)
        if number < len(waves) - 1:
            if rng.random() < 0.7:
                # while it works through the wave rather than while it starts
                wait_until(lambda at=started_at: "running (" in deployment.stderr("intake")[at:],
                           f"intake to start ({seed})", alive=lambda: deployment.alive("intake"))
                time.sleep(rng.uniform(0.0, 0.4))
            else:
                time.sleep(rng.uniform(0.0, 1.5))
            deployment.kill("intake")
            started_at = len(deployment.stderr("intake"))
            deployment.start("intake")
    assert offsets == list(range(FUZZ_MESSAGES))
    wait_until(lambda: stored_offset(deployment.store, deployment.topics) == FUZZ_MESSAGES,
               f"intake to pass every message ({seed})", timeout=60 + FUZZ_MESSAGES / 10,
               alive=lambda: deployment.alive("intake"))

    dead = Counter(dead_letter_offsets(deployment.bootstrap, deployment.topics))
    invalid = set(range(FUZZ_MESSAGES)) - set(valid)
    assert set(dead) == invalid, seed
    assert max(dead.values(), default=1) == 1, f"a message was dead-lettered twice ({seed})"

    events = stored_events(deployment.store)
    markers = Counter(
        e.model if isinstance(e, ModelVersion.Registered) else e.source
        for e in events if isinstance(e, ModelVersion.Registered | Subject.LocationAttested)
    )
    assert markers == Counter(valid.values()), seed
    subjects = sum(1 for e in events if isinstance(e, Subject.Registered))
    assert subjects == sum(marker.startswith("fuzz-") for marker in valid.values()), seed
    assert len(events) == len(valid) + subjects, f"something invalid was stored ({seed})"
    assert deployment.alive("intake"), seed
    assert "Traceback" not in deployment.stderr("intake"), seed


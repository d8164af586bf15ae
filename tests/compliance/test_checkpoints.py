"""`interlock checkpoint` and `verify --checkpoints`: signed chain heads kept outside the
database, in an append-only file and on Kafka; every line is checked, and a bad one is named."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from domain.commands import parse_command
from interlock.checkpoints import CHECKPOINTS_TOPIC, sign_head
from interlock.cli import app
from interlock.engine import open_engine
from interlock.signing import generate_key
from projections.checkpoints import Checkpoint, signature_holds
from tests.unit.support import nationality

runner = CliRunner()


@pytest.fixture
def keys(tmp_path: Path) -> tuple[str, str]:
    key, public = tmp_path / "server.pem", tmp_path / "server.pub"
    made = runner.invoke(app, ["checkpoint", "--key", str(key), "--generate-key"])
    assert made.exit_code == 0 and oct(key.stat().st_mode)[-3:] == "600"
    public.write_text(json.loads(made.stdout)["public_key"])
    again = runner.invoke(app, ["checkpoint", "--key", str(key), "--generate-key"])
    assert again.exit_code == 2, "an existing key is never overwritten"
    return str(key), str(public)


def checkpoint(store: str, key: str, *extra: str) -> Any:
    return runner.invoke(app, ["checkpoint", "--key", key, *extra, "--store", store])


def verify(store: str, anchors: Path, public: str) -> tuple[int, dict[str, Any], str]:
    result = runner.invoke(app, ["verify", "--json", "--no-decisions", "--checkpoints",
                                 str(anchors), "--server-key", public, "--store", store])
    return result.exit_code, json.loads(result.stdout), result.stderr


def test_checkpoints_accumulate_and_hold(demo_copy: Path, keys: tuple[str, str],
                                         tmp_path: Path) -> None:
    store = f"sqlite:///{demo_copy}"
    key, public = keys
    anchors = tmp_path / "anchors" / "checkpoints.jsonl"
    first = checkpoint(store, key, "--out", str(anchors))
    assert first.exit_code == 0, first.output
    signed = Checkpoint.model_validate_json(first.stdout)
    engine = open_engine(store, catch_up=False)
    assert signed.position == engine.app.position
    engine.app.apply(parse_command(nationality("u-late", ["DE"])))
    engine.close()
    assert checkpoint(store, key, "--out", str(anchors)).exit_code == 0
    assert checkpoint(store, key, "--out", str(anchors)).exit_code == 0, "nothing new: re-signed"
    lines = [Checkpoint.model_validate_json(line) for line in anchors.read_text().splitlines()]
    assert len(lines) == 3 and lines[1].position > signed.position
    assert (lines[2].position, lines[2].link) == (lines[1].position, lines[1].link)
    assert lines[2].time > lines[1].time
    code, data, _ = verify(store, anchors, public)
    assert code == 0 and data["checkpoints"]["ok"] and data["checkpoints"]["checked"] == 3
    assert data["checkpoints"]["latest"]["position"] == data["chain"]["head"]["position"]
    human = runner.invoke(app, ["verify", "--no-decisions", "--checkpoints", str(anchors),
                                "--server-key", public, "--store", store])
    assert human.exit_code == 0 and "checkpoints: ok" in human.stdout


def test_every_bad_line_is_named(demo_copy: Path, keys: tuple[str, str],
                                 tmp_path: Path) -> None:
    store = f"sqlite:///{demo_copy}"
    key, public = keys
    anchors = tmp_path / "checkpoints.jsonl"
    good = json.loads(checkpoint(store, key, "--out", str(anchors)).stdout)
    other = sign_head(good["position"], good["link"], generate_key())
    forged = {**good, "link": "0" * 64}
    anchors.write_text("\n".join([
        json.dumps(good), json.dumps(forged), other.line(), "{not json",
        json.dumps({**good, "extra": 1}), json.dumps({**good, "time": "2026-01-01T00:00:00"}),
        json.dumps({**good, "position": "12"}), "",
    ]) + "\n")
    code, data, stderr = verify(store, anchors, public)
    assert code == 1 and data["chain"]["ok"]
    problems = {p["line"]: (p["problem"], p["detail"]) for p in data["checkpoints"]["problems"]}
    assert sorted(problems) == [2, 3, 4, 5, 6, 7]
    assert problems[2][0] == "signature" and problems[3][0] == "key"
    assert all(problems[n][0] == "malformed" for n in (4, 5, 6, 7))
    assert problems[5][1].startswith("extra") and problems[6][1].startswith("time")
    assert problems[7][1].startswith("position")
    assert "--checkpoints: line" in stderr
    assert checkpoint(store, key, "--out", str(anchors)).exit_code == 2, \
        "the last line is not this key's checkpoint: nothing is chained from it"


def test_checkpoint_options_are_checked(demo_copy: Path, keys: tuple[str, str],
                                        tmp_path: Path) -> None:
    store = f"sqlite:///{demo_copy}"
    _, public = keys
    alone = runner.invoke(app, ["verify", "--checkpoints", str(tmp_path / "x"), "--store",
                                store])
    assert alone.exit_code == 2 and "go together" in alone.stderr
    missing = runner.invoke(app, ["verify", "--checkpoints", str(tmp_path / "x"),
                                  "--server-key", public, "--store", store])
    assert missing.exit_code == 2 and "--checkpoints" in missing.stderr
    (tmp_path / "bad.pub").write_text("not a key")
    bad = runner.invoke(app, ["verify", "--checkpoints", str(tmp_path / "x"),
                              "--server-key", str(tmp_path / "bad.pub"), "--store", store])
    assert bad.exit_code == 2 and "--server-key" in bad.stderr
    assert checkpoint(store, public).exit_code == 2, "a public key cannot sign"


@pytest.mark.kafka
def test_checkpoints_are_published_to_kafka(
    demo_copy: Path, keys: tuple[str, str], tmp_path: Path, kafka_bootstrap: str
) -> None:
    """The topic gets the same line as the file; a file rebuilt from the topic verifies."""
    from kafka import KafkaConsumer, TopicPartition

    store = f"sqlite:///{demo_copy}"
    key, public = keys
    prefix = f"t-{uuid.uuid4().hex[:8]}."
    anchors = tmp_path / "checkpoints.jsonl"
    for _ in range(2):
        published = checkpoint(store, key, "--out", str(anchors), "--kafka", kafka_bootstrap,
                               "--topic-prefix", prefix)
        assert published.exit_code == 0, published.output
    topic = TopicPartition(f"{prefix}{CHECKPOINTS_TOPIC}", 0)
    consumer = KafkaConsumer(bootstrap_servers=kafka_bootstrap, enable_auto_commit=False)
    try:
        consumer.assign([topic])
        consumer.seek_to_beginning(topic)
        records: list[Any] = []
        for _ in range(50):
            for batch in consumer.poll(timeout_ms=500).values():
                records.extend(batch)
            if len(records) >= 2:
                break
    finally:
        consumer.close()
    lines = anchors.read_text().splitlines()
    assert [r.value.decode() for r in records] == lines
    assert all(signature_holds(Checkpoint.model_validate_json(line), _public(public))
               for line in lines)
    rebuilt = tmp_path / "from-kafka.jsonl"
    rebuilt.write_text("".join(r.value.decode() + "\n" for r in records))
    assert verify(store, rebuilt, public)[0] == 0


def _public(path: str) -> Any:
    from interlock.checkpoints import load_public_key

    return load_public_key(path)

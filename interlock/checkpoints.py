"""`interlock checkpoint`: sign the store's chain head with the server key and publish it outside
the database, to an append-only JSON-lines file and optionally the Kafka topic
`<prefix>interlock.checkpoints` (see `projections.checkpoints` for what a checkpoint proves).

The server key is an Ed25519 private key in an unencrypted PKCS#8 PEM file, as
`interlock sign --generate-key` writes officer keys; it belongs to the checkpoint job alone,
never to the database or its users. Verifiers need only its public key.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
from datetime import UTC, datetime
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from interlock.auth import ConfigError
from projections.checkpoints import (
    Checkpoint,
    CheckpointProblem,
    key_id,
    parse_line,
    signature_holds,
    signed_message,
)

CHECKPOINTS_TOPIC = "interlock.checkpoints"


def load_public_key(path: str) -> Ed25519PublicKey:
    """The server's public key from a file: base64 of the raw 32 bytes (as `interlock checkpoint
    --generate-key` prints it) or a PEM public key."""
    try:
        text = Path(path).read_text(encoding="utf-8").strip()
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_public_key(text.encode())
        else:
            key = Ed25519PublicKey.from_public_bytes(base64.b64decode(text, validate=True))
    except (ValueError, binascii.Error, TypeError):
        raise ConfigError(f"{path}: expected base64 of a 32-byte Ed25519 public key, or a PEM "
                          "public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ConfigError(f"{path}: not an Ed25519 public key")
    return key


def public_key_b64(key: Ed25519PrivateKey) -> str:
    raw = key.public_key().public_bytes(serialization.Encoding.Raw,
                                        serialization.PublicFormat.Raw)
    return base64.b64encode(raw).decode("ascii")


def sign_head(position: int, link: str, key: Ed25519PrivateKey,
              now: datetime | None = None) -> Checkpoint:
    """A checkpoint of the head (position, link) at `now` (default: the clock)."""
    moment = (now or datetime.now(UTC)).astimezone(UTC)
    signer = key_id(key.public_key())
    value = key.sign(signed_message(position, link, moment, signer))
    return Checkpoint(position=position, link=link, time=moment, key_id=signer,
                      signature=base64.b64encode(value).decode("ascii"))


def last_checkpoint(path: Path, key: Ed25519PublicKey) -> Checkpoint | None:
    """The last checkpoint in the file (None when it does not exist or is empty), which must be
    one this key signed: the next is verified from it."""
    try:
        with path.open(encoding="utf-8") as stream:
            last = None
            for number, text in enumerate(stream, start=1):
                if text.strip():
                    last = (number, text)
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as error:
        raise ConfigError(f"{path}: {getattr(error, 'strerror', None) or error}") from None
    if last is None:
        return None
    found = parse_line(*last)
    if isinstance(found, CheckpointProblem):
        raise ConfigError(f"{path}: {found}")
    if found.key_id != key_id(key) or not signature_holds(found, key):
        raise ConfigError(f"{path}: line {last[0]}: not signed by this server key")
    return found


def append_checkpoint(path: Path, checkpoint: Checkpoint) -> None:
    """One more line, on disk before this returns."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a", encoding="utf-8") as stream:
        stream.write(checkpoint.line() + "\n")
        stream.flush()
        os.fsync(stream.fileno())


def publish_checkpoint(bootstrap: str, prefix: str, checkpoint: Checkpoint) -> str:
    """Sends the checkpoint to `<prefix>interlock.checkpoints` (created on first use: one
    partition, kept forever) and waits for the broker's acknowledgement; returns the topic."""
    from kafka import KafkaAdminClient, KafkaProducer
    from kafka.admin import NewTopic
    from kafka.errors import TopicAlreadyExistsError

    topic = f"{prefix}{CHECKPOINTS_TOPIC}"
    admin = KafkaAdminClient(bootstrap_servers=bootstrap, client_id="interlock-checkpoint")
    try:
        if topic not in set(admin.list_topics()):
            with contextlib.suppress(TopicAlreadyExistsError):
                admin.create_topics([NewTopic(topic, 1, replication_factor=1,
                                              topic_configs={"retention.ms": "-1"})])
    finally:
        admin.close()
    producer = KafkaProducer(bootstrap_servers=bootstrap, client_id="interlock-checkpoint",
                             acks="all")
    try:
        producer.send(topic, key=str(checkpoint.position).encode(),
                      value=checkpoint.line().encode()).get(timeout=30)
    finally:
        producer.close()
    return topic

"""`interlock intake`: commands from Kafka into the store, each exactly once, whatever they hold.

Every message ends in exactly one of two places:

- **applied**: its events and the Kafka offset after it are stored in one store transaction
  (eventsourcing tracking); on start intake seeks to the stored offset, so a crash or a
  redelivery never duplicates or loses a fact;
- **refused**: sent to the dead-letter topic, its value and key as they came (a value over
  `MAX_COMMAND_BYTES` cut to that size, with a `truncated` header giving its length), with
  `error` (why), `topic`, `partition` and `offset` headers.

Any exception raised while decoding, validating or applying one message is that message's
refusal: a wrong field, invalid UTF-8, an out-of-range time, a predicate too deep to serialise,
a missing signature, a `command_id` reused for another command. Faults of the store itself
(`STORE_FAULTS`: locked, unreachable, I/O) are not: the messages not yet stored are retried with
backoff, never dead-lettered and never skipped. Nor is any failure of the store write that
ends a poll: the commands are validated and applied by then, so it is the store's (the hash
chain refusing a log it did not write, say), and it is retried until the store takes it. A
refusal does not cost the other commands of the poll: those before it are stored with it, those
after it are applied after it.

**Refusals and offsets are committed together.** Each poll first commits its refusals to the
DLQ in one Kafka transaction (transactional id `<prefix>interlock-intake`), then stores its
commands' events with the offset after its last message. A crash between the two leaves
refusals in the DLQ whose offsets the store has not passed. On start, once `init_transactions`
has settled any transaction an earlier run left open, intake reads the DLQ's committed records
back from its end until their `offset` headers fall below the stored offsets, and takes the
offsets found as refused already: they are neither sent again nor applied. So each message is
dead-lettered at most once and never both dead-lettered and applied. (An outbox table in the
store would do the same, but the store holds facts only, each in the hash chain, and the DLQ
would then need a publisher of its own; the DLQ's own transactions and headers suffice.)

Run one intake per deployment: a second one fences the first's DLQ producer, which then stops
on its next refusal.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import threading
from collections.abc import Sequence
from dataclasses import dataclass

from eventsourcing.persistence import Tracking
from kafka import KafkaProducer, TopicPartition
from kafka.consumer.fetcher import ConsumerRecord
from kafka.errors import KafkaError

from consumers import kafka
from consumers.kafka import (
    DEFAULT_TOPICS,
    STORE_FAULTS,
    Backoff,
    Topics,
    header,
    headers,
    read_backwards,
)
from domain.application import CommandBatch, Interlock
from domain.commands import Command, CommandError, parse_command_json
from domain.limits import MAX_COMMAND_BYTES
from schemas.codec import MAGIC, CodecError
from schemas.records import decode_command

log = logging.getLogger(__name__)

MAX_ERROR_CHARS = 1_000
"""The `error` header of a dead letter is cut to this many characters."""
POLL_RECORDS = 2_000
"""Messages applied per poll, in one store transaction unless one of them fails unexpectedly."""


def decode(value: bytes | None) -> Command:
    """An Avro single-object command, or for convenience one JSON command document, of at most
    MAX_COMMAND_BYTES."""
    if not value:
        raise CommandError("", "empty message")
    if len(value) > MAX_COMMAND_BYTES:
        raise CommandError("", f"message of {len(value):,} bytes; the limit is "
                           f"{MAX_COMMAND_BYTES:,}")
    if value.startswith(MAGIC):
        return decode_command(value)
    if value.lstrip()[:1] == b"{":
        return parse_command_json(value)
    raise CodecError("neither an Avro single-object message nor a JSON command")


def reason(error: BaseException) -> str:
    """What a dead letter's `error` header says: the refusal's own message for a command or
    codec error (it names the field), else the exception's type and message."""
    text = str(error) if isinstance(error, CommandError | CodecError) else (
        f"{type(error).__name__}: {error}")
    return text if len(text) <= MAX_ERROR_CHARS else text[: MAX_ERROR_CHARS - 1] + "…"


class StoreRefused(Exception):
    """The store refused a write for a reason of its own (the hash chain refusing a log it did
    not write, say): a fault of the store, waited out like STORE_FAULTS, never a refusal."""


@dataclass(frozen=True)
class Refusal:
    record: ConsumerRecord
    error: BaseException


def refused_before(bootstrap: str, topics: Topics, stored: dict[int, int]) -> dict[int, set[int]]:
    """The offsets, per partition of the commands topic, that the DLQ holds committed and the
    store has not passed (`stored`: partition → next offset to apply): refused by a run that
    stopped before it stored their offset."""
    found: dict[int, set[int]] = {partition: set() for partition in stored}
    below: set[int] = set()
    """Partitions for which a dead letter below the stored offset was met: nothing older counts."""
    consumer = kafka.consumer(bootstrap, topics.name("intake"), enable_auto_commit=False,
                              group_id=None, isolation_level="read_committed")
    try:
        for chunk in read_backwards(consumer, TopicPartition(topics.dlq, 0)):
            for record in chunk:
                source = dead_letter_source(record, topics.commands)
                if source is None or source[0] not in stored:
                    continue
                partition, offset = source
                if offset >= stored[partition]:
                    found[partition].add(offset)
                else:
                    below.add(partition)
            if below >= set(stored):
                break
    finally:
        consumer.close()
    return found


def dead_letter_source(record: ConsumerRecord, commands: str) -> tuple[int, int] | None:
    """The (partition, offset) of the commands-topic message a dead letter holds, if it is one."""
    try:
        if (header(record, "topic") or b"").decode() != commands:
            return None
        return int(header(record, "partition") or b""), int(header(record, "offset") or b"")
    except ValueError:
        return None


class Intake:
    """Applies the commands of every partition of the commands topic, in offset order."""

    def __init__(self, app: Interlock, bootstrap: str, topics: Topics = DEFAULT_TOPICS) -> None:
        self.app = app
        self.topics = topics
        name = topics.name("intake")
        self.consumer = kafka.consumer(bootstrap, name, enable_auto_commit=False, group_id=None)
        self.dlq: KafkaProducer = kafka.producer(bootstrap, name, transactional_id=name)
        self.dlq.init_transactions()
        partitions = sorted(self.consumer.partitions_for_topic(topics.commands) or {0})
        if len(partitions) > 1:
            log.warning(
                "interlock intake: %s has %d partitions; Kafka orders each partition alone, so "
                "a command naming what another created may arrive first and be refused: "
                "recreate the topic with one partition (see README, Kafka)",
                topics.commands, len(partitions))
        self.partitions = [TopicPartition(topics.commands, p) for p in partitions]
        self.consumer.assign(self.partitions)
        self.stored = {p.partition: self._stored_offset(p.partition) for p in self.partitions}
        """Per partition, the offset of the next message to apply, as the store has it."""
        self.dead_lettered = refused_before(bootstrap, topics, self.stored)
        """Per partition, offsets at or past `stored` that are in the DLQ already."""
        for partition in self.partitions:
            self.consumer.seek(partition, self.stored[partition.partition])
        self.applied = 0
        self.repeated = 0
        self.refused = 0
        self._stop = threading.Event()

    def _tracking_name(self, partition: int) -> str:
        return f"kafka:{self.topics.commands}:{partition}"

    def _stored_offset(self, partition: int) -> int:
        return self.app.recorder.max_tracking_id(self._tracking_name(partition)) or 0

    def poll(self, timeout_ms: int = 500) -> int:
        """Consumes what has arrived; returns how many messages were handled."""
        handled = 0
        polled = self.consumer.poll(timeout_ms, max_records=POLL_RECORDS)
        for partition, records in polled.items():
            backoff = Backoff()
            while (fault := self._handle(partition.partition, records, resync=backoff.tried)):
                log.warning("interlock intake: store unavailable (%s); retrying in %.1f s",
                            fault, backoff.delay)
                backoff.wait(self._stop)
                if self._stop.is_set():
                    return handled
            handled += len(records)
        return handled

    def _handle(self, partition: int, records: Sequence[ConsumerRecord], resync: bool
                ) -> BaseException | None:
        """Applies or refuses each record the store has not passed yet; returns the store's
        fault if it failed on the way (what is stored stays stored, the rest is to retry).
        With `resync`, first rereads how far the store has got: a write whose commit raised
        may have been stored all the same."""
        try:
            if resync:
                self.stored[partition] = max(self.stored[partition],
                                             self._stored_offset(partition))
            pending = [r for r in records if r.offset >= self.stored[partition]]
            while pending:
                pending = pending[self._segment(partition, pending):]
        except STORE_FAULTS as fault:
            return fault
        except StoreRefused as fault:
            return fault.__cause__
        return None

    def _segment(self, partition: int, records: Sequence[ConsumerRecord]) -> int:
        """Applies records in one store transaction up to the end or up to the first one whose
        apply failed unexpectedly (the working set may then hold part of it, so it is dropped);
        returns how many records it consumed."""
        batch = CommandBatch(self.app, flush_every=sys.maxsize)
        try:
            refusals: list[Refusal] = []
            applied = repeated = consumed = 0
            for record in records:
                consumed += 1
                batch.track(Tracking(self._tracking_name(partition), record.offset + 1))
                if record.offset in self.dead_lettered[partition]:
                    continue
                try:
                    command = decode(record.value)
                except Exception as error:  # anything wrong with a message is its refusal
                    refusals.append(Refusal(record, error))
                    continue
                try:
                    if batch.apply(command):
                        applied += 1
                    else:
                        repeated += 1
                except CommandError as error:
                    refusals.append(Refusal(record, error))
                except STORE_FAULTS:
                    raise
                except Exception as error:
                    refusals.append(Refusal(record, error))
                    break
            self._dead_letter(partition, refusals)
        except BaseException:
            batch.discard()  # the write lock must not outlive the segment (nothing was stored)
            raise
        try:
            batch.flush()
        except STORE_FAULTS:
            raise
        except Exception as error:
            raise StoreRefused(error) from error
        self.stored[partition] = records[consumed - 1].offset + 1
        self.dead_lettered[partition] = {o for o in self.dead_lettered[partition]
                                         if o >= self.stored[partition]}
        self.applied += applied
        self.repeated += repeated
        return consumed

    def _dead_letter(self, partition: int, refusals: list[Refusal]) -> None:
        """Commits the refusals to the DLQ in one transaction, before the store passes them."""
        if not refusals:
            return
        self.dlq.begin_transaction()
        try:
            for refusal in refusals:
                self.dlq.send(self.topics.dlq, **dead_letter(refusal))
            self.dlq.commit_transaction()
        except BaseException:
            with contextlib.suppress(KafkaError):
                self.dlq.abort_transaction()
            raise
        for refusal in refusals:
            record = refusal.record
            self.dead_lettered[partition].add(record.offset)
            log.warning("interlock intake: refused %s[%s]@%s: %s", record.topic,
                        record.partition, record.offset, reason(refusal.error))
        self.refused += len(refusals)

    def run(self, stop: threading.Event) -> None:
        self._stop = stop
        while not stop.is_set():
            self.poll()

    def close(self) -> None:
        self.consumer.close()
        self.dlq.close(timeout=kafka.CLOSE_TIMEOUT_S)


def dead_letter(refusal: Refusal) -> dict[str, object]:
    """The DLQ record of a refusal, within MAX_COMMAND_BYTES of value and of key."""
    record = refusal.record
    value, key = record.value or b"", record.key
    extra = {}
    if value is not None and len(value) > MAX_COMMAND_BYTES:
        extra["truncated"] = len(value)
        value = value[:MAX_COMMAND_BYTES]
    if key is not None and len(key) > MAX_COMMAND_BYTES:
        key = key[:MAX_COMMAND_BYTES]
    return {"key": key, "value": value, "headers": headers(
        error=reason(refusal.error), topic=record.topic, partition=record.partition,
        offset=record.offset, **extra)}

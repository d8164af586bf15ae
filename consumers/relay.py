"""`interlock relay`: every stored event onto `interlock.events`, in position order, once.

Each batch is published in a Kafka transaction and its last position then recorded as
tracking in the store. On start the relay resumes after the later of that tracking and the last
position committed on the topic, so a crash between the two sends nothing twice. Should a
duplicate ever reach the topic, its `position` header gives it away and every reader skips
positions it has already applied.

An event the relay cannot publish (one larger than the topic takes, say, from a store written
before events were bounded) is never skipped: the events before it are published, then the
relay stops with `Unpublishable`, naming the position, and stops there again on every restart
until the operator acts. Faults of the store are waited out and retried.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Sequence

from eventsourcing.persistence import Notification, Tracking
from kafka import KafkaProducer, TopicPartition
from kafka.errors import (
    CorruptRecordError,
    InvalidRecordError,
    KafkaError,
    MessageSizeTooLargeError,
    RecordListTooLargeError,
)
from kafka.producer.future import FutureRecordMetadata

from consumers import kafka
from consumers.kafka import (
    DEFAULT_TOPICS,
    STORE_FAULTS,
    Backoff,
    KafkaProcessError,
    Topics,
    headers,
    message_limit,
    positions,
    read_backwards,
)
from domain.application import Interlock
from domain.limits import KAFKA_MAX_MESSAGE_BYTES
from schemas.records import encode_event

log = logging.getLogger(__name__)

REFUSED_RECORD = (MessageSizeTooLargeError, RecordListTooLargeError, InvalidRecordError,
                  CorruptRecordError)
"""What a broker answers for a record it will not take, whatever the producer thought of it."""


class Unpublishable(KafkaProcessError):
    """A stored event that cannot go onto the events topic; the relay stops before it."""

    def __init__(self, position: int, what: str, reason: str) -> None:
        super().__init__(f"cannot publish position {position} ({what}): {reason}; "
                         f"positions before {position} are published")
        self.position = position


def _event_type(notification: Notification) -> str:
    """`Subject.NationalityAttested` for `domain.aggregates:Subject.NationalityAttested`."""
    return notification.topic.rsplit(":")[-1]


def _failed(future: FutureRecordMetadata) -> bool:
    """Waits for a record's delivery (kafka-python's flush() can fail on batches it split);
    True when it was not delivered."""
    try:
        future.get(timeout=kafka.DELIVERY_TIMEOUT_S)
    except KafkaError:
        return True
    return False


def last_published_position(bootstrap: str, topics: Topics) -> int:
    """The highest position committed on the events topic (0 when it is empty)."""
    consumer = kafka.consumer(bootstrap, topics.name("relay"), enable_auto_commit=False,
                              group_id=None, isolation_level="read_committed")
    try:
        for chunk in read_backwards(consumer, TopicPartition(topics.events, 0)):
            found = positions(chunk)
            if found:
                return max(found)
        return 0
    finally:
        consumer.close()


class Relay:
    """Publishes stored events after the last published position."""

    def __init__(
        self,
        app: Interlock,
        bootstrap: str,
        topics: Topics = DEFAULT_TOPICS,
        batch_size: int = 2000,
    ) -> None:
        self.app = app
        self.bootstrap = bootstrap
        self.topics = topics
        self.topic = topics.events
        self.tracking_name = f"relay:{topics.events}"
        self.batch_size = batch_size
        self.limit = min(KAFKA_MAX_MESSAGE_BYTES, message_limit(bootstrap, topics, self.topic))
        """The largest record the producer sends: what the events topic takes, if less than
        Interlock's own limit, so that the producer refuses a record before the broker would."""
        self.producer = self._producer()
        tracked = app.recorder.max_tracking_id(self.tracking_name) or 0
        self.position = max(tracked, last_published_position(bootstrap, topics))

    def _producer(self) -> KafkaProducer:
        name = self.topics.name("relay")
        producer = kafka.producer(self.bootstrap, name, transactional_id=name, linger_ms=5,
                                  max_request_size=self.limit,
                                  batch_size=min(16 * 1024, self.limit))
        producer.init_transactions()
        return producer

    def publish(self) -> int:
        """Publishes the next batch of stored events; returns how many."""
        notifications = self.app.recorder.select_notifications(
            start=self.position, limit=self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        return self._transaction(notifications)

    def _transaction(self, notifications: Sequence[Notification]) -> int:
        """Publishes the events in one transaction, up to the first that cannot be encoded or
        sent or that the broker refuses; records the position reached; raises Unpublishable
        for that first one."""
        problem: Unpublishable | None = None
        sent: list[FutureRecordMetadata] = []
        self.producer.begin_transaction()
        try:
            for notification in notifications:
                future_or_problem = self._send(notification)
                if isinstance(future_or_problem, Unpublishable):
                    problem = future_or_problem
                    break
                sent.append(future_or_problem)
            refused = next((n for n, future in enumerate(sent) if _failed(future)), None)
            if refused is None:
                self.producer.commit_transaction()
        except BaseException:
            self._abort()
            raise
        if refused is not None:
            self._refused(notifications[: refused + 1], sent[refused].exception)
        if sent:
            self.position = notifications[len(sent) - 1].id
            self._track()
        if problem is not None:
            raise problem
        return len(sent)

    def _refused(self, notifications: Sequence[Notification], error: Exception) -> None:
        """The broker refused the last of `notifications`, so its transaction cannot commit:
        abort it, start afresh (kafka-python's producer does not recover its sequence numbers
        after a refused batch), publish the ones before it, and raise Unpublishable for it."""
        self._abort()
        if not isinstance(error, REFUSED_RECORD):
            raise error
        self.producer.close(timeout=kafka.CLOSE_TIMEOUT_S)
        self.producer = self._producer()
        *before, last = notifications
        if before:
            self._transaction(before)
        raise Unpublishable(last.id, _event_type(last),
                            f"the broker refused it ({type(error).__name__})")

    def _track(self) -> None:
        """Records the position published in the store, to resume from. The events topic has it
        too (a restart takes the later of the two), so a store that refuses the write costs a
        warning, not the relay."""
        try:
            self.app.recorder.insert_tracking(Tracking(self.tracking_name, self.position))
        except Exception as error:
            log.warning("interlock relay: published up to %d; could not record it in the store "
                        "(%s)", self.position, error)

    def _abort(self) -> None:
        with contextlib.suppress(KafkaError):
            self.producer.abort_transaction()

    def _send(self, notification: Notification) -> FutureRecordMetadata | Unpublishable:
        what = _event_type(notification)
        try:
            event = self.app.mapper.to_domain_event(notification)
            value = encode_event(event)
            record = {"key": str(notification.originator_id).encode(), "value": value,
                      "headers": headers(position=notification.id,
                                         recorded_at=event.timestamp.isoformat())}
        except Exception as error:
            return Unpublishable(notification.id, what, f"cannot encode it: {error}")
        try:
            return self.producer.send(self.topic, **record)
        except MessageSizeTooLargeError:
            return Unpublishable(notification.id, what, f"{len(value):,} bytes, over the "
                                 f"{self.limit:,}-byte limit of {self.topic}")

    def run(self, stop: threading.Event, interval: float = 0.01) -> None:
        """Publishes until `stop`, looking for new events every `interval` seconds when idle:
        that wait is on every order's way to the replicas (half of it on average), and an
        idle look is one indexed query."""
        backoff = Backoff()
        while not stop.is_set():
            try:
                published = self.publish()
            except STORE_FAULTS as fault:
                log.warning("interlock relay: store unavailable (%s); retrying in %.1f s",
                            fault, backoff.delay)
                backoff.wait(stop)
                continue
            backoff.reset()
            if published == 0:
                stop.wait(interval)

    def close(self) -> None:
        self.producer.close(timeout=kafka.CLOSE_TIMEOUT_S)

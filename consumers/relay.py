"""`interlock relay`: every stored event onto `interlock.events`, in position order, once.

Each batch is published in a Kafka transaction and its last position then recorded as
tracking in the store. On start the relay resumes after the later of that tracking and the last
position committed on the topic, so a crash between the two sends nothing twice. Should a
duplicate ever reach the topic, its `position` header gives it away and every reader skips
positions it has already applied.
"""

from __future__ import annotations

import threading

from eventsourcing.persistence import Tracking
from kafka import KafkaConsumer, KafkaProducer, TopicPartition

from consumers.kafka import DEFAULT_TOPICS, Topics, headers, positions
from domain.application import Interlock
from schemas.records import encode_event

TRACKING_NAME = "relay:interlock.events"


def last_published_position(bootstrap: str, topic: str) -> int:
    """The highest position committed on the events topic (0 when it is empty)."""
    consumer = KafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False,
                             group_id=None, isolation_level="read_committed",
                             client_id="interlock-relay-tail")
    try:
        partition = TopicPartition(topic, 0)
        consumer.assign([partition])
        end = consumer.end_offsets([partition])[partition]
        span = 64
        while end > 0:
            start = max(0, end - span)
            consumer.seek(partition, start)
            found: list[int] = []
            while consumer.position(partition) < end:
                batch = consumer.poll(1000).get(partition, [])
                if not batch:
                    break
                found += positions(batch)
            if found:
                return max(found)
            if start == 0:
                break
            span *= 4
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
        transactional_id: str = "interlock-relay",
    ) -> None:
        self.app = app
        self.topic = topics.events
        self.batch_size = batch_size
        self.producer = KafkaProducer(
            bootstrap_servers=bootstrap, transactional_id=transactional_id,
            client_id="interlock-relay", linger_ms=5,
        )
        self.producer.init_transactions()
        tracked = app.recorder.max_tracking_id(TRACKING_NAME) or 0
        self.position = max(tracked, last_published_position(bootstrap, self.topic))

    def publish(self) -> int:
        """Publishes the next batch of stored events; returns how many."""
        notifications = self.app.recorder.select_notifications(
            start=self.position, limit=self.batch_size, inclusive_of_start=False
        )
        if not notifications:
            return 0
        to_domain_event = self.app.mapper.to_domain_event
        self.producer.begin_transaction()
        try:
            for notification in notifications:
                event = to_domain_event(notification)
                self.producer.send(
                    self.topic, key=str(notification.originator_id).encode(),
                    value=encode_event(event),
                    headers=headers(position=notification.id,
                                    recorded_at=event.timestamp.isoformat()),
                )
            self.producer.commit_transaction()
        except BaseException:
            self.producer.abort_transaction()
            raise
        self.position = notifications[-1].id
        self.app.recorder.insert_tracking(Tracking(TRACKING_NAME, self.position))
        return len(notifications)

    def run(self, stop: threading.Event, interval: float = 0.05) -> None:
        while not stop.is_set():
            if self.publish() == 0:
                stop.wait(interval)

    def close(self) -> None:
        self.producer.close()

"""A polled batch on its way to ClickHouse, before any I/O: each message decoded and
validated (a bad one bound for the dead-letter topic with its reason), copies within the
batch dropped, and a token naming the batch's offsets, so a retried insert of the same batch
is deduplicated by ClickHouse. Pure, so it runs while the previous batch is being written.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord

from services.metering.store import StoredEvent
from shared.events import EventValidator, InvalidEvent

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ClaimedBatch:
    batch: PreparedBatch
    to_store: list[StoredEvent]
    dead: list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]]


@dataclass(frozen=True, slots=True)
class PreparedBatch:
    generation: int
    valid: int
    unique: list[StoredEvent]
    dead: list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]]
    outcomes: list[bool]  # per record in stream order: True when dead-lettered
    records: list[ConsumerRecord[bytes, bytes]]
    token: str
    offsets: dict[TopicPartition, int]


def accept(validator: EventValidator, max_bytes: int, record: ConsumerRecord[bytes, bytes]
           ) -> StoredEvent:
    """One message as an event to store, or InvalidEvent naming what is wrong with it."""
    value = record.value
    if value is None:
        raise InvalidEvent("invalid_json", "body", "empty message")
    if len(value) > max_bytes:
        raise InvalidEvent("too_large", "body", f"{len(value)} bytes is over {max_bytes}")
    event = validator.decode(value)
    return StoredEvent(event, record.topic, record.partition, record.offset,
                       record.timestamp)


def prepare(batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]],
            decode: Callable[[ConsumerRecord[bytes, bytes]], StoredEvent], generation: int
            ) -> PreparedBatch:
    """Decode, validate and drop in-batch copies: no I/O, so it overlaps the last write."""
    records = [r for tp in sorted(batch) for r in batch[tp]]
    unique: list[StoredEvent] = []
    dead: list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]] = []
    outcomes: list[bool] = []  # per record, in order: dead-lettered or not
    seen: set[tuple[str, str]] = set()
    for record in records:
        try:
            row = decode(record)
        except InvalidEvent as error:
            dead.append((record, error))
            outcomes.append(True)
            continue
        except Exception as error:  # a message no check foresaw: its fault, not ours
            log.exception("unexpected failure reading %s:%d:%d", record.topic,
                          record.partition, record.offset)
            dead.append((record, InvalidEvent("unprocessable", "body", repr(error))))
            outcomes.append(True)
            continue
        outcomes.append(False)
        key = row.event.key
        if key not in seen:
            seen.add(key)
            unique.append(row)
    return PreparedBatch(
        generation=generation, unique=unique, dead=dead, outcomes=outcomes,
        records=records,
        valid=len(records) - len(dead), token=batch_token(batch),
        offsets={tp: rs[-1].offset + 1 for tp, rs in batch.items() if rs})


def refusals(batch: PreparedBatch, refused: list[StoredEvent]
              ) -> list[tuple[ConsumerRecord[bytes, bytes], InvalidEvent]]:
    """Events whose live counters valkey refused (a key of another type, written by hand),
    as dead letters: nothing of them was written."""
    if not refused:
        return []
    by_position = {(r.partition, r.offset): r for r in batch.records}
    error = InvalidEvent("counter_conflict", "subject",
                         "a live counter of this tenant holds a value of another type")
    return [(by_position[(row.partition, row.offset)], error) for row in refused]


def batch_token(batch: dict[TopicPartition, list[ConsumerRecord[bytes, bytes]]]) -> str:
    """Names the batch by its topics' partitions and offsets: the same batch read again gets
    the same token (its insert is then a no-op), any other batch another one."""
    spans = sorted((tp.topic, tp.partition, rs[0].offset, rs[-1].offset)
                   for tp, rs in batch.items() if rs)
    return hashlib.blake2b(repr(spans).encode(), digest_size=16).hexdigest()

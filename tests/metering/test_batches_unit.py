"""A polled batch before any I/O (services/metering/batches.py): each message accepted or
bound for the dead-letter topic with a code, copies within the batch dropped keeping the
first, the offsets to commit, and the token that makes a retried insert a no-op.

Records are built in memory; expected values are worked out by hand in the docstrings.
"""

from __future__ import annotations

import logging
from typing import TypeAlias

import orjson
import pytest
from aiokafka import TopicPartition
from aiokafka.structs import ConsumerRecord
from hypothesis import given
from hypothesis import strategies as st

from services.metering.batches import accept, batch_token, prepare, refusals
from services.metering.store import StoredEvent
from shared.events import EventValidator, InvalidEvent

pytestmark = pytest.mark.unit

TOPIC = "usage-events"
VALIDATOR = EventValidator()
MAX_BYTES = 10_000
Record: TypeAlias = ConsumerRecord[bytes, bytes]
Batch: TypeAlias = dict[TopicPartition, list[Record]]


def body(event_id: str, source: str = "crm") -> bytes:
    return orjson.dumps({"specversion": "1.0", "id": event_id, "source": source,
                         "type": "email.sent", "subject": "acme",
                         "time": "2026-01-15T10:00:00Z", "data": {"count": 1}})


def record(partition: int, offset: int, value: bytes | None) -> Record:
    return ConsumerRecord(TOPIC, partition, offset, 1_768_471_200_000, 0, b"acme", value,
                          None, 4, len(value or b""), [])


def decode(rec: Record) -> StoredEvent:
    return accept(VALIDATOR, MAX_BYTES, rec)


def tp(partition: int) -> TopicPartition:
    return TopicPartition(TOPIC, partition)


def refused(rec: Record, max_bytes: int = MAX_BYTES) -> InvalidEvent:
    with pytest.raises(InvalidEvent) as error:
        accept(VALIDATOR, max_bytes, rec)
    return error.value


# --- accept -----------------------------------------------------------------------------------

def test_a_valid_message_is_kept_with_where_it_was_read() -> None:
    """R9.6: topic, partition, offset and the broker's timestamp travel with the event."""
    row = accept(VALIDATOR, MAX_BYTES, record(3, 41, body("e-1")))
    assert (row.topic, row.partition, row.offset, row.ingested_ms) == (
        TOPIC, 3, 41, 1_768_471_200_000)
    assert row.event.key == ("crm", "e-1")


def test_an_empty_message_is_dead_lettered_as_invalid_json() -> None:
    """A tombstone (no value at all) and an empty value are both no JSON."""
    none = refused(record(0, 0, None))
    assert (none.code, none.field, none.reason) == ("invalid_json", "body", "empty message")
    empty = refused(record(0, 0, b""))
    assert (empty.code, empty.field) == ("invalid_json", "body")


def test_a_message_of_the_limit_is_read_and_one_byte_more_is_too_large() -> None:
    """With the limit set to the body's own length n the body is read; with n − 1 it is
    refused before decoding: 'n bytes is over n − 1'."""
    raw = body("e-1")
    size = len(raw)
    assert accept(VALIDATOR, size, record(0, 0, raw)).event.id == "e-1"
    error = refused(record(0, 0, raw), size - 1)
    assert (error.code, error.field) == ("too_large", "body")
    assert error.reason == f"{size} bytes is over {size - 1}"


@pytest.mark.parametrize(("value", "code", "field"), [
    (b"{not json", "invalid_json", "body"),
    (b"\xff\xfe", "invalid_json", "body"),  # not UTF-8
    (b"[1, 2]", "not_an_object", "body"),
    (orjson.dumps({"specversion": "1.0"}), "missing_field", "id"),
])
def test_an_unreadable_message_is_refused_with_a_code(value: bytes, code: str,
                                                      field: str) -> None:
    error = refused(record(0, 0, value))
    assert (error.code, error.field) == (code, field)


# --- prepare ----------------------------------------------------------------------------------

def test_dead_letters_keep_stream_order_partition_by_partition() -> None:
    """Partitions are read in order (0 before 1, whatever the dict's order), records in
    offset order: p0@5 bad, p0@6 good, p1@10 good, p1@11 bad → outcomes T F F T."""
    batch: Batch = {tp(1): [record(1, 10, body("b")), record(1, 11, b"oops")],
                    tp(0): [record(0, 5, None), record(0, 6, body("a"))]}
    prepared = prepare(batch, decode, generation=7)
    assert prepared.outcomes == [True, False, False, True]
    assert [(r.partition, r.offset) for r in prepared.records] == [(0, 5), (0, 6), (1, 10),
                                                                   (1, 11)]
    assert [(r.partition, r.offset, e.code) for r, e in prepared.dead] == [
        (0, 5, "invalid_json"), (1, 11, "invalid_json")]
    assert [row.event.id for row in prepared.unique] == ["a", "b"]
    assert (prepared.valid, prepared.generation) == (2, 7)


def test_a_copy_within_the_batch_is_dropped_keeping_the_first() -> None:
    """(crm, e-1) at p0@1 and again at p0@3 and p1@0: the first reading, p0@1, is kept; the
    copies still count as valid (they are no dead letters). (web, e-1) is another event."""
    batch: Batch = {tp(0): [record(0, 1, body("e-1")), record(0, 2, body("e-2")),
                            record(0, 3, body("e-1"))],
                    tp(1): [record(1, 0, body("e-1")), record(1, 1, body("e-1", "web"))]}
    prepared = prepare(batch, decode, generation=0)
    assert [(r.partition, r.offset, r.event.key) for r in prepared.unique] == [
        (0, 1, ("crm", "e-1")), (0, 2, ("crm", "e-2")), (1, 1, ("web", "e-1"))]
    assert prepared.valid == 5
    assert prepared.dead == []
    assert prepared.outcomes == [False] * 5


def test_offsets_to_commit_are_the_last_offset_plus_one_per_partition() -> None:
    """p0 read to 6 → commit 7; p2 read to 12 (all dead) → 13: a dead letter is consumed too.
    A partition polled empty commits nothing."""
    batch: Batch = {tp(0): [record(0, 5, body("a")), record(0, 6, body("b"))],
                    tp(2): [record(2, 12, None)], tp(4): []}
    assert prepare(batch, decode, generation=0).offsets == {tp(0): 7, tp(2): 13}


def test_an_unforeseen_failure_is_a_dead_letter_not_a_crash(
        caplog: pytest.LogCaptureFixture) -> None:
    """A decoder bug on one message must not stop the partition: it becomes 'unprocessable'
    and is logged; the message after it is read as usual."""
    def fragile(rec: Record) -> StoredEvent:
        if rec.offset == 0:
            raise KeyError("boom")
        return decode(rec)

    batch: Batch = {tp(0): [record(0, 0, body("a")), record(0, 1, body("b"))]}
    with caplog.at_level(logging.ERROR, logger="services.metering.batches"):
        prepared = prepare(batch, fragile, generation=0)
    [(rec, error)] = prepared.dead
    assert (rec.offset, error.code, error.field) == (0, "unprocessable", "body")
    assert error.reason == repr(KeyError("boom"))
    assert [row.event.id for row in prepared.unique] == ["b"]
    assert "usage-events:0:0" in caplog.text


def test_the_prepared_token_is_the_batch_token() -> None:
    batch: Batch = {tp(0): [record(0, 5, body("a"))]}
    assert prepare(batch, decode, generation=0).token == batch_token(batch)


# --- batch_token --------------------------------------------------------------------------------

def test_the_token_names_the_spans_not_the_contents() -> None:
    """The same offsets read again (a retried insert) give the same token, whatever the
    dict's order; another first or last offset, or another partition, gives another one. An
    empty partition adds nothing. 16 bytes of blake2b: 32 hex digits."""
    first: Batch = {tp(0): [record(0, 5, body("a")), record(0, 6, body("b"))],
                    tp(1): [record(1, 9, body("c"))]}
    again: Batch = {tp(1): [record(1, 9, None)], tp(4): [],
                    tp(0): [record(0, 5, b"x"), record(0, 6, b"y")]}
    token = batch_token(first)
    assert len(token) == 32
    assert int(token, 16) >= 0
    assert batch_token(again) == token
    assert batch_token({tp(0): first[tp(0)]}) != token  # partition 1 missing
    assert batch_token({**first, tp(0): [record(0, 5, body("a"))]}) != token  # ends at 5
    assert batch_token({**first, tp(0): [record(0, 6, body("b"))]}) != token  # starts at 6
    assert batch_token({tp(2): first[tp(0)], tp(1): first[tp(1)]}) != token  # p2, not p0


def test_the_same_offsets_of_another_topic_are_another_batch() -> None:
    """Two usage topics on one broker (a second platform, a test's own topic): the first
    batch of each is partition 0, offsets 0 to 1. Were their tokens equal, ClickHouse would
    take the second insert for a retry of the first and drop it, while its offsets are
    committed: accepted events lost."""
    first: Batch = {TopicPartition("usage-events", 0): [record(0, 0, b"a"), record(0, 1, b"b")]}
    other: Batch = {TopicPartition("usage-events-2", 0): first[
        TopicPartition("usage-events", 0)]}
    assert batch_token(first) != batch_token(other)


SPANS = st.dictionaries(st.integers(0, 5),
                        st.tuples(st.integers(0, 1_000), st.integers(1, 4)), max_size=4)


def batch_of(spans: dict[int, tuple[int, int]], value: bytes) -> Batch:
    return {tp(p): [record(p, start + i, value) for i in range(length)]
            for p, (start, length) in spans.items()}


@given(SPANS, SPANS)
def test_tokens_are_equal_exactly_when_the_spans_are(a: dict[int, tuple[int, int]],
                                                     b: dict[int, tuple[int, int]]) -> None:
    """A span is (partition, first offset, last offset); the token of a batch is stable
    across readings and insertion orders, and (128 bits) tells different spans apart."""
    reversed_a = dict(reversed(list(a.items())))
    assert batch_token(batch_of(a, b"x")) == batch_token(batch_of(reversed_a, b"y"))

    def spans(s: dict[int, tuple[int, int]]) -> set[tuple[int, int, int]]:
        return {(p, start, start + length - 1) for p, (start, length) in s.items()}

    same = batch_token(batch_of(a, b"x")) == batch_token(batch_of(b, b"x"))
    assert same == (spans(a) == spans(b))


# --- prepare never loses a record ----------------------------------------------------------------

# Per partition, its messages: an event id from a small pool (so copies happen) or None for
# a message that is no JSON.
MESSAGES = st.dictionaries(st.integers(0, 3),
                           st.lists(st.one_of(st.none(), st.sampled_from("abcd")), max_size=6),
                           max_size=4)


@given(MESSAGES)
def test_every_record_is_stored_dropped_as_a_copy_or_dead_lettered(
        messages: dict[int, list[str | None]]) -> None:
    """Counted independently: in stream order (partition 0 first), an id seen before is a
    copy, None is a dead letter; unique + copies + dead = all records."""
    batch: Batch = {tp(p): [record(p, 100 + i, body(m) if m else b"{")
                            for i, m in enumerate(ids)] for p, ids in messages.items()}
    prepared = prepare(batch, decode, generation=0)
    firsts: list[str] = []
    copies = dead = 0
    for p in sorted(messages):
        for m in messages[p]:
            if m is None:
                dead += 1
            elif m in firsts:
                copies += 1
            else:
                firsts.append(m)
    total = sum(len(ids) for ids in messages.values())
    assert len(prepared.dead) == dead == sum(prepared.outcomes)
    assert len(prepared.unique) + copies + len(prepared.dead) == total == len(prepared.records)
    assert len(prepared.outcomes) == total
    assert prepared.valid == total - dead
    assert [row.event.id for row in prepared.unique] == firsts


# --- refusals ----------------------------------------------------------------------------------

def test_events_valkey_refused_become_dead_letters_of_their_records() -> None:
    """A live counter of another type (written by hand) refuses its events: each goes back
    to its own record, found by partition and offset, as 'counter_conflict' on `subject`."""
    batch: Batch = {tp(0): [record(0, 5, body("a")), record(0, 6, body("b"))],
                    tp(1): [record(1, 5, body("c"))]}
    prepared = prepare(batch, decode, generation=0)
    assert refusals(prepared, []) == []
    dead = refusals(prepared, [prepared.unique[2], prepared.unique[0]])
    assert [(r.partition, r.offset) for r, _ in dead] == [(1, 5), (0, 5)]
    assert dead[0][0] is batch[tp(1)][0]
    assert {(e.code, e.field) for _, e in dead} == {("counter_conflict", "subject")}

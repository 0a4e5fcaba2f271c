"""Acknowledgements by event key (services/metering/acks.py): a request is answered once the
consumer has reported every one of its events stored, whichever copy carried it."""

from __future__ import annotations

import asyncio

import pytest

from services.metering.acks import EventsNotStored, StoredEvents

pytestmark = pytest.mark.unit

A, B, C = ("src", "a"), ("src", "b"), ("src", "c")


async def test_answered_once_every_key_is_reported_even_before_the_wait() -> None:
    """Two events; one reported before the request waits (the consumer was quicker than the
    producer's acknowledgement), the other while it waits: the wait returns."""
    acks = StoredEvents()
    waiter = acks.expect("cluster-1", [A, B])
    acks.stored([A, C])  # C belongs to no one: ignored
    waiting = asyncio.create_task(acks.wait(waiter, timeout_s=5))
    await asyncio.sleep(0)
    assert not waiting.done()
    acks.stored([B])
    await asyncio.wait_for(waiting, 1)


async def test_a_key_never_reported_is_a_503_after_the_timeout() -> None:
    """The broker acknowledged the produce but no batch ever held event B (a record the log
    lost): the request must not be answered 202."""
    acks = StoredEvents()
    waiter = acks.expect("cluster-1", [A, B])
    acks.stored([A])
    with pytest.raises(EventsNotStored, match="not stored within"):
        await acks.wait(waiter, timeout_s=0.05)
    acks.stored([B])  # too late: forgotten, nothing raises


async def test_two_requests_with_the_same_event_are_both_answered() -> None:
    """A client's resend waits on the same key as its first attempt: one report answers
    both."""
    acks = StoredEvents()
    first, second = acks.expect("cluster-1", [A]), acks.expect("cluster-1", [A])
    acks.stored([A])
    await acks.wait(first, timeout_s=1)
    await acks.wait(second, timeout_s=1)


async def test_the_consumer_leaving_the_cluster_fails_its_waiters_only() -> None:
    """Events produced to cluster-1 and not yet stored are gone when the consumer moves to
    cluster-2; a request whose events were all stored is still answered."""
    acks = StoredEvents()
    lost = acks.expect("cluster-1", [A])
    kept = acks.expect("cluster-1", [B])
    other = acks.expect("cluster-2", [C])
    acks.stored([B])
    acks.left("cluster-1")
    with pytest.raises(EventsNotStored, match="replaced"):
        await acks.wait(lost, timeout_s=1)
    await acks.wait(kept, timeout_s=1)
    acks.stored([C])
    await acks.wait(other, timeout_s=1)
    late = acks.expect("cluster-1", [A])
    with pytest.raises(EventsNotStored, match="replaced"):
        await acks.wait(late, timeout_s=1)


async def test_a_forgotten_waiter_leaves_nothing_behind() -> None:
    acks = StoredEvents()
    waiter = acks.expect("cluster-1", [A, B])
    acks.forget(waiter)
    acks.stored([A, B])
    assert not waiter.done.done()


def test_the_offsets_produced_are_forgotten_with_the_broker_left() -> None:
    """By hand: events at offsets 4 and 9 of partition 0 and 2 of partition 1: the barrier
    waits past 10 and 3. The broker is replaced: the new one counts from 0 again, so those
    offsets are forgotten (waiting for 10 there would never end); an event at 0 of the new
    one: past 1."""
    acks = StoredEvents()
    for partition, offset in ((0, 9), (0, 4), (1, 2)):
        acks.sent(partition, offset)
    assert acks.produced == {0: 10, 1: 3}
    acks.left("cluster-1")
    assert acks.produced == {}
    acks.sent(0, 0)
    assert acks.produced == {0: 1}

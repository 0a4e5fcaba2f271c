"""When `POST /v1/events` may answer 202: once the broker has the events, or once they are
stored (`INGEST_ACK`).

`broker` is enough against a replicated Kafka (`acks=all`): the log keeps what it
acknowledged. The embedded broker keeps its log in memory, so there an acknowledgement means
something only once the consumer has stored the events in ClickHouse and committed them:
`stored`. A request registers its events' keys (source, id) before it produces them; the
consumer reports the keys of every batch it commits, whichever copy of an event that batch
held (a copy already counted is as good as the first). Keys rather than offsets: an offset
committed past says nothing of a record the broker's log lost or a fetch skipped (the embedded
broker has been seen to answer a produce and never serve the records), while a key reported
is an event stored. A request whose keys are not all reported within the timeout is answered
503, and so is one whose events went to a broker cluster the consumer has left (or that
cannot tell which cluster took them: the broker was replaced while it produced); its caller
sends the events again and the same ids count once.

The consumer of this process reports here, so `stored` needs the partitions consumed in the
process that answers the request: the embedded platform, or one metering process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from dataclasses import dataclass, field

from shared.errors import Unavailable

_SEND_AGAIN = "send them again (the same ids are counted once)"

EventKey = tuple[str, str]  # (source, id)


class EventsNotStored(Unavailable, code="events_not_stored"):
    """The broker took the events, but they were not stored (in time, or on this broker)."""


@dataclass(eq=False)
class _Waiter:
    cluster: str
    pending: set[EventKey]
    done: asyncio.Future[None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future())


class StoredEvents:
    """The requests waiting for their events to be stored, by event key, and how far this
    process has produced on the broker being read."""

    def __init__(self) -> None:
        self._by_key: dict[EventKey, list[_Waiter]] = {}
        self._left: set[str] = set()
        # Next offset after the last event this process produced, per partition: the clock's
        # barrier waits for these even where the broker's end offsets lag (tansu reports the
        # end of a multi-record batch as its first record + 1).
        self.produced: dict[int, int] = {}

    def sent(self, partition: int, offset: int) -> None:
        """The broker took an event of this process at `offset` of `partition`."""
        self.produced[partition] = max(self.produced.get(partition, 0), offset + 1)

    def expect(self, cluster: str, keys: Iterable[EventKey]) -> _Waiter:
        """Register before producing, so no report can come before the registration."""
        waiter = _Waiter(cluster, set(keys))
        for key in waiter.pending:
            self._by_key.setdefault(key, []).append(waiter)
        if not waiter.pending:
            waiter.done.set_result(None)
        return waiter

    def forget(self, waiter: _Waiter) -> None:
        for key in waiter.pending:
            waiters = self._by_key.get(key)
            if waiters is None:
                continue
            waiters.remove(waiter)
            if not waiters:
                del self._by_key[key]
        waiter.pending.clear()

    def stored(self, keys: Iterable[EventKey]) -> None:
        """The consumer committed a batch holding these events."""
        for key in keys:
            for waiter in self._by_key.pop(key, ()):
                waiter.pending.discard(key)
                if not waiter.pending and not waiter.done.done():
                    waiter.done.set_result(None)

    def left(self, cluster: str) -> None:
        """The consumer reads another cluster now: nothing more will be stored from this one,
        and its offsets say nothing of the new one's (which counts from 0 again)."""
        self._left.add(cluster)
        self.produced.clear()
        for waiter in {w for waiters in self._by_key.values() for w in waiters}:
            if waiter.cluster == cluster and not waiter.done.done():
                waiter.done.set_exception(EventsNotStored(
                    f"the broker was replaced before the events were stored; {_SEND_AGAIN}"))

    async def wait(self, waiter: _Waiter, timeout_s: float) -> None:
        """Until every event of `waiter` is stored; forgets it either way."""
        try:
            if waiter.cluster in self._left and not waiter.done.done():
                raise EventsNotStored(f"the broker was replaced before the events were "
                                      f"stored; {_SEND_AGAIN}")
            await asyncio.wait_for(asyncio.shield(waiter.done), timeout_s)
        except TimeoutError:
            raise EventsNotStored(f"the events were not stored within {timeout_s:.0f} s; "
                                  f"{_SEND_AGAIN}") from None
        finally:
            self.forget(waiter)


def produced_elsewhere() -> EventsNotStored:
    return EventsNotStored(f"the broker was replaced while the events were sent; {_SEND_AGAIN}")

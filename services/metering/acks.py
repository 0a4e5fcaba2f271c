"""When `POST /v1/events` may answer 202: once the broker has the events, or once they are
stored (`INGEST_ACK`).

`broker` is enough against a replicated Kafka (`acks=all`): the log keeps what it
acknowledged. The embedded broker keeps its log in memory, so there an acknowledgement means
something only once the consumer has stored the events in ClickHouse and committed their
offsets: `stored`. The consumer reports each commit here, with the broker cluster it read
from; a request waits until its own messages' offsets are committed in the cluster that took
them. Offsets of one cluster say nothing of another's: a request that cannot tell which
cluster took its events (the broker was replaced while it produced), or whose cluster the
consumer has left, is answered 503, and its caller sends the events again (the same ids
count once).

The consumer of this process reports here, so `stored` needs the partitions consumed in the
process that answers the request: the embedded platform, or one metering process.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping

from shared.errors import Unavailable

_SEND_AGAIN = "send them again (the same ids are counted once)"


class EventsNotStored(Unavailable):
    code = "events_not_stored"


class StoredOffsets:
    """Per broker cluster, the next offset not yet stored, per partition."""

    def __init__(self) -> None:
        self._next: dict[str, dict[int, int]] = {}
        self._left: set[str] = set()
        self._changed = asyncio.Condition()

    async def committed(self, cluster: str, offsets: Mapping[int, int]) -> None:
        async with self._changed:
            stored = self._next.setdefault(cluster, {})
            for partition, following in offsets.items():
                if following > stored.get(partition, 0):
                    stored[partition] = following
            self._changed.notify_all()

    async def left(self, cluster: str) -> None:
        """The consumer reads another cluster now: nothing more will be stored from this one."""
        async with self._changed:
            self._left.add(cluster)
            self._next.pop(cluster, None)
            self._changed.notify_all()

    async def wait(self, cluster: str, needed: Mapping[int, int], timeout_s: float) -> None:
        """Until every partition's stored offset in `cluster` reaches `needed`."""
        try:
            async with asyncio.timeout(timeout_s), self._changed:
                await self._changed.wait_for(lambda: self._reached(cluster, needed))
        except TimeoutError:
            raise EventsNotStored(f"the events were not stored within {timeout_s:.0f} s; "
                                  f"{_SEND_AGAIN}") from None

    def _reached(self, cluster: str, needed: Mapping[int, int]) -> bool:
        if cluster in self._left:
            raise EventsNotStored(f"the broker was replaced before the events were stored; "
                                  f"{_SEND_AGAIN}")
        stored = self._next.get(cluster, {})
        return all(stored.get(p, 0) >= offset for p, offset in needed.items())


def produced_elsewhere() -> EventsNotStored:
    return EventsNotStored(f"the broker was replaced while the events were sent; {_SEND_AGAIN}")

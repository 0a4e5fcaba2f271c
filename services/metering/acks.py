"""When `POST /v1/events` may answer 202: once the broker has the events, or once they are
stored (`INGEST_ACK`).

`broker` is enough against a replicated Kafka (`acks=all`): the log keeps what it
acknowledged. The embedded broker keeps its log in memory, so there an acknowledgement means
something only once the consumer has stored the events in ClickHouse and committed their
offsets: `stored`. The consumer reports each commit here; a request waits until the offsets
of its own messages are committed. Offsets are only comparable within one incarnation of the
broker: when the consumer meets a new one, every waiter of the old one is told its events may
be lost, and its caller re-sends them (the same ids count once).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping

from shared.errors import Unavailable

# Reads the group's committed offsets for partitions this process does not consume (another
# metering process owns them); None where nothing is committed yet.
CommittedReader = Callable[[list[int]], Awaitable[Mapping[int, int | None]]]


class BrokerRestarted(Unavailable):
    code = "events_not_stored"


class StoredOffsets:
    """The next offset not yet stored, per partition, as the consumer commits."""

    def __init__(self, poll_s: float = 0.2) -> None:
        self._next: dict[int, int] = {}
        self._changed = asyncio.Condition()
        self._epoch = 0
        self._poll_s = poll_s
        self.read_committed: CommittedReader | None = None

    @property
    def epoch(self) -> int:
        return self._epoch

    async def committed(self, offsets: Mapping[int, int]) -> None:
        async with self._changed:
            for partition, following in offsets.items():
                if following > self._next.get(partition, 0):
                    self._next[partition] = following
            self._changed.notify_all()

    async def new_incarnation(self) -> None:
        async with self._changed:
            self._epoch += 1
            self._next.clear()
            self._changed.notify_all()

    async def wait(self, needed: Mapping[int, int], epoch: int, timeout_s: float) -> None:
        """Until every partition's stored offset reaches `needed`; raises `Unavailable`
        after `timeout_s` or when the broker was replaced meanwhile."""
        try:
            async with asyncio.timeout(timeout_s):
                while not self._reached(needed, epoch):
                    # Woken by a commit here; polled besides, for partitions that another
                    # process consumes.
                    if not await self._woken():
                        await self._refresh(needed)
        except TimeoutError:
            raise Unavailable(f"the events were not stored within {timeout_s:.0f} s; send "
                              "them again (the same ids are counted once)",
                              code="events_not_stored") from None

    async def _woken(self) -> bool:
        async with self._changed:
            try:
                async with asyncio.timeout(self._poll_s):
                    await self._changed.wait()
            except TimeoutError:
                return False
        return True

    def _reached(self, needed: Mapping[int, int], epoch: int) -> bool:
        if epoch != self._epoch:
            raise BrokerRestarted("the broker restarted before the events were stored; send "
                                  "them again (the same ids are counted once)")
        return all(self._next.get(p, 0) >= offset for p, offset in needed.items())

    async def _refresh(self, needed: Mapping[int, int]) -> None:
        if self.read_committed is None:
            return
        behind = [p for p, offset in needed.items() if self._next.get(p, 0) < offset]
        for partition, following in (await self.read_committed(behind)).items():
            if following is not None and following > self._next.get(partition, 0):
                self._next[partition] = following

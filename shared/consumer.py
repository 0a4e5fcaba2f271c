"""What every background loop of the platform shares: how it retries, dead-letters, and
tells `/readyz` that it cannot go on.

A consumer polls a bounded batch, validates, writes, and commits after the write. Two kinds
of failure meet it, handled differently:
- a dependency outage (valkey, ClickHouse or the broker unreachable): nothing is wrong with
  the messages, so the step is retried with exponential back-off, forever; after a few
  failures in a row the loop reports itself unready, and ready again once a step succeeds;
- anything else is the fault of one message: it goes to its topic's dead-letter queue with
  the reason, and the stream goes on. A run of dead letters longer than a limit means the
  fault is ours, not the messages': the consumer stops loudly instead of dead-lettering the
  whole stream, and `/readyz` says so.
A loop task that ends with an error is logged and reported the same way.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError
from aiokafka.errors import RequestTimedOutError as KafkaRequestTimedOut
from aiokafka.structs import ConsumerRecord, TopicPartition
from clickhouse_connect.driver.exceptions import DatabaseError as ClickHouseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.kafka import make_consumer
from shared.observability import CONSUMER_LAG
from shared.settings import CommonSettings

log = logging.getLogger(__name__)

T = TypeVar("T")

# The errors that mean "a dependency is away", not "this message is bad". Any error
# ClickHouse answers counts: every value a consumer writes or looks up was validated first,
# so a refused query means ClickHouse or its schema is not as it should be (a table
# detached, a disk full), which an operator mends while the consumer waits.
OUTAGES: tuple[type[BaseException], ...] = (
    RedisConnectionError, RedisTimeoutError,  # BusyLoadingError (LOADING) among them
    KafkaConnectionError, KafkaTimeoutError, KafkaRequestTimedOut, NodeNotReadyError,
    ClickHouseError, ConnectionError, TimeoutError)


class Stopping(Exception):
    """Raised out of a retry loop when the loop is asked to stop."""


class TooManyDeadLetters(Exception):
    """More consecutive dead letters than the limit: the fault is ours, not the stream's."""


class LoopHealth:
    """The background loops that cannot go on, with why; `/readyz` answers 503 while any
    is listed.

    A consumer loop beats at each poll and each step it retries; one that has beaten and
    then stays quiet for `stall_after_s` is listed as stalled. Hung on an answer that never
    comes (a broker client asking for a group coordinator for ever, say), it is as stopped
    as a loop that died, only silent."""

    def __init__(self, stall_after_s: float = 300.0,
                 now: Callable[[], float] = time.monotonic) -> None:
        self._problems: dict[str, str] = {}
        self._beats: dict[str, float] = {}
        self._stall_after_s = stall_after_s
        self._now = now

    def report(self, loop: str, problem: str | None) -> None:
        if problem is None:
            self._problems.pop(loop, None)
        else:
            self._problems[loop] = problem

    def beat(self, loop: str) -> None:
        self._beats[loop] = self._now()

    def forget(self, loop: str) -> None:
        """A loop stopped on purpose: its silence is no stall."""
        self._beats.pop(loop, None)

    def problems(self) -> dict[str, str]:
        now = self._now()
        found = {loop: f"stalled: no progress for {now - at:.0f} s"
                 for loop, at in self._beats.items() if now - at > self._stall_after_s}
        found.update(self._problems)  # why a loop stopped says more than its silence
        return found

    def supervise(self, task: asyncio.Task[None]) -> None:
        """Log and report a loop task that ends with an error instead of dying silently."""
        def ended(done: asyncio.Task[None]) -> None:
            if done.cancelled():
                return
            error = done.exception()
            if error is not None:
                log.error("%s stopped: %r", done.get_name(), error, exc_info=error)
                self.report(done.get_name(), f"stopped: {type(error).__name__}: {error}")

        task.add_done_callback(ended)


@dataclass(eq=False)
class Retrier:
    """Retries a step through dependency outages; other errors go to the caller. After
    `unready_after` failures in a row the loop is reported unready, until a step succeeds."""

    loop: str
    health: LoopHealth
    _: KW_ONLY
    initial_s: float
    max_s: float
    on_retry: Callable[[str], None] = lambda step: None
    unready_after: int = 5
    stopping: bool = field(default=False, init=False)

    async def run(self, step: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = self.initial_s
        failures = 0
        while True:
            self.health.beat(self.loop)
            try:
                result = await attempt()
            except OUTAGES as exc:
                if self.stopping:
                    raise Stopping from exc
                failures += 1
                self.on_retry(step)
                if failures == self.unready_after:
                    self.health.report(self.loop, f"{step} failing: {exc}")
                log.warning("%s: %s failed, retrying in %.1f s: %s", self.loop, step, delay,
                            exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self.max_s)
                continue
            if failures >= self.unready_after:
                self.health.report(self.loop, None)
            return result


class DeadLetterLimit:
    """Counts dead letters in a row across batches; a valid message resets the count."""

    def __init__(self, loop: str, health: LoopHealth, limit: int) -> None:
        self._loop = loop
        self._health = health
        self._limit = limit
        self._in_a_row = 0

    def observe(self, outcomes: Sequence[bool]) -> None:
        """`outcomes` in stream order, True for a dead letter. Raises before a commit."""
        for dead in outcomes:
            self._in_a_row = self._in_a_row + 1 if dead else 0
            if self._in_a_row > self._limit:
                problem = (f"more than {self._limit} dead letters in a row: stopped rather "
                           "than dead-letter the stream")
                self._health.report(self._loop, problem)
                raise TooManyDeadLetters(problem)


def dead_letter_headers(record: ConsumerRecord[bytes, bytes], code: str, field: str,
                        reason: str) -> list[tuple[str, bytes]]:
    """The headers a dead letter carries: the message's own, why, and where it came from."""
    return [*list(record.headers or ()),
            ("error.code", code.encode()),
            ("error.field", field.encode()),
            ("error.message", reason.encode()[:1024]),
            ("source.topic", record.topic.encode()),
            ("source.partition", str(record.partition).encode()),
            ("source.offset", str(record.offset).encode())]


async def send_dead_letters(producer: AIOKafkaProducer, topic: str,
                            letters: Sequence[tuple[ConsumerRecord[bytes, bytes],
                                                    list[tuple[str, bytes]]]]) -> None:
    """Each message unchanged, with its headers; returns once the broker acked them all."""
    futures = [await producer.send(topic, record.value, key=record.key, headers=headers)
               for record, headers in letters]
    await asyncio.gather(*futures)


# A group consumer's start waits for its first assignment, and its stop for leaving the group:
# both wait on a group coordinator, for ever if none answers.
CONSUMER_START_S = 60.0
CONSUMER_STOP_S = 15.0
# A commit or a committed-offset read retries for ever while no coordinator answers: one try
# the broker neither takes nor refuses within this is retried as an outage.
COMMIT_TIMEOUT_S = 10.0


async def start_consumer(consumer: AIOKafkaConsumer, name: str) -> None:
    """Start a group consumer, within `CONSUMER_START_S`: past it, the process fails to
    start and says why, rather than wait without end."""
    try:
        await asyncio.wait_for(consumer.start(), CONSUMER_START_S)
    except TimeoutError:
        await stop_consumer(consumer)
        raise TimeoutError(f"{name}: no partitions assigned within {CONSUMER_START_S:g} s "
                           "(is a group coordinator answering?)") from None


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a consumer, within `CONSUMER_STOP_S`; a shutdown goes on whatever it meets."""
    with contextlib.suppress(Exception):
        await asyncio.wait_for(consumer.stop(), CONSUMER_STOP_S)


async def committed_up_to(consumer: AIOKafkaConsumer, ends: dict[TopicPartition, int]) -> None:
    """Return once the group's committed offset of each partition reaches its end in `ends`.

    Unbounded, like the broker's answers it waits on (asking for a committed offset waits
    for a group coordinator, for ever if none comes back): the caller's timeout bounds it."""
    pending = dict(ends)
    while pending:
        for tp, end in list(pending.items()):
            if ((await consumer.committed(tp)) or 0) >= end:
                del pending[tp]
        if pending:
            await asyncio.sleep(0.02)


@dataclass(eq=False)
class SubscribedLoop:
    """A loop reading one topic, run as a supervised task: `start` subscribes, watches the
    consumer's lag and runs the loop, which polls and commits through the retrier; `stop`
    ends its retries (the loop's task then ends quietly), cancels it (waiting 5 s at most)
    and leaves the group."""

    consumer: AIOKafkaConsumer
    topic: str
    name: str  # of the task, the retrier's reports and the lag metric
    health: LoopHealth
    retrier: Retrier
    _task: asyncio.Task[None] | None = field(default=None, init=False)

    @classmethod
    def on_subscription_events(cls, settings: CommonSettings, group: str, name: str,
                               health: LoopHealth, *, max_poll_records: int,
                               fetch_max_wait_ms: int = 500) -> SubscribedLoop:
        """The loop of consumer group `group` on the subscription events, retried as the
        settings say."""
        return cls(make_consumer(settings, group, max_poll_records=max_poll_records,
                                 fetch_max_wait_ms=fetch_max_wait_ms),
                   settings.subscription_events_topic, name, health,
                   Retrier(name, health, initial_s=settings.retry_initial_s,
                           max_s=settings.retry_max_s))

    async def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self.consumer.subscribe([self.topic])
        await start_consumer(self.consumer, self.name)
        CONSUMER_LAG.watch(self.name, self.consumer)
        self._task = asyncio.create_task(_until_stopped(run), name=self.name)
        self.health.supervise(self._task)

    async def poll(self, max_records: int) -> dict[TopicPartition,
                                                   list[ConsumerRecord[bytes, bytes]]]:
        """A batch of at most `max_records`, read through outages."""
        return await self.retrier.run("poll", lambda: self.consumer.getmany(
            timeout_ms=100, max_records=max_records))

    async def commit(self, ends: dict[TopicPartition, int]) -> None:
        """Commit these next offsets through outages (each try within `COMMIT_TIMEOUT_S`),
        and report the lag they leave."""
        await self.retrier.run("commit", lambda: asyncio.wait_for(
            self.consumer.commit(ends), COMMIT_TIMEOUT_S))
        CONSUMER_LAG.committed(self.name, ends)

    async def stop(self) -> None:
        self.retrier.stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)
        self.health.forget(self.name)
        await stop_consumer(self.consumer)


class LoopConsumer(ABC):
    """A consumer whose loop, `run`, reads through the `SubscribedLoop` it keeps in `loop`."""

    loop: SubscribedLoop

    async def start(self) -> None:
        await self.loop.start(self.run)

    async def stop(self) -> None:
        await self.loop.stop()

    @abstractmethod
    async def run(self) -> None:
        """Poll, handle and commit until stopped."""


async def _until_stopped(run: Callable[[], Coroutine[Any, Any, None]]) -> None:
    with contextlib.suppress(Stopping):  # the retrier's way out once `stop` is called
        await run()

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
from collections.abc import Awaitable, Callable, Coroutine, Sequence
from typing import Any, TypeVar

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError
from aiokafka.errors import RequestTimedOutError as KafkaRequestTimedOut
from aiokafka.structs import ConsumerRecord
from clickhouse_connect.driver.exceptions import DatabaseError as ClickHouseError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from shared.observability import CONSUMER_LAG

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
    is listed."""

    def __init__(self) -> None:
        self._problems: dict[str, str] = {}

    def report(self, loop: str, problem: str | None) -> None:
        if problem is None:
            self._problems.pop(loop, None)
        else:
            self._problems[loop] = problem

    def problems(self) -> dict[str, str]:
        return dict(self._problems)

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


class Retrier:
    """Retries a step through dependency outages; other errors go to the caller."""

    def __init__(self, loop: str, health: LoopHealth, *, initial_s: float, max_s: float,
                 on_retry: Callable[[str], None] = lambda step: None,
                 unready_after: int = 5) -> None:
        self._loop = loop
        self._health = health
        self._initial_s = initial_s
        self._max_s = max_s
        self._on_retry = on_retry
        self._unready_after = unready_after
        self.stopping = False

    async def run(self, step: str, attempt: Callable[[], Awaitable[T]]) -> T:
        delay = self._initial_s
        failures = 0
        while True:
            try:
                result = await attempt()
            except OUTAGES as exc:
                if self.stopping:
                    raise Stopping from exc
                failures += 1
                self._on_retry(step)
                if failures == self._unready_after:
                    self._health.report(self._loop, f"{step} failing: {exc}")
                log.warning("%s: %s failed, retrying in %.1f s: %s", self._loop, step, delay,
                            exc)
                await asyncio.sleep(delay * (0.5 + random.random()))
                delay = min(delay * 2, self._max_s)
                continue
            if failures >= self._unready_after:
                self._health.report(self._loop, None)
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


class SubscribedLoop:
    """A loop reading one topic, run as a supervised task: `start` subscribes, watches the
    consumer's lag and runs the loop; `stop` ends its retries, cancels it (waiting 5 s at
    most) and leaves the group."""

    def __init__(self, consumer: AIOKafkaConsumer, topic: str, name: str, lag_name: str,
                 health: LoopHealth, retrier: Retrier) -> None:
        self._consumer = consumer
        self._topic = topic
        self._name = name
        self._lag_name = lag_name
        self._health = health
        self._retrier = retrier
        self._task: asyncio.Task[None] | None = None

    async def start(self, run: Callable[[], Coroutine[Any, Any, None]]) -> None:
        self._consumer.subscribe([self._topic])
        await self._consumer.start()
        CONSUMER_LAG.watch(self._lag_name, self._consumer)
        self._task = asyncio.create_task(run(), name=self._name)
        self._health.supervise(self._task)

    async def stop(self) -> None:
        self._retrier.stopping = True
        if self._task is not None:
            self._task.cancel()
            await asyncio.wait([self._task], timeout=5.0)
        with contextlib.suppress(Exception):
            await self._consumer.stop()

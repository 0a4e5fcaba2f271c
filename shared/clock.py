"""The platform clock (R2.4): every service reads "now" here, never from datetime directly.

`WallClock` in production. `ManualClock` keeps the instant in Redis so that every service
process reads the same one; it moves only forward, through `Scheduler.advance_to`, which
runs every job that fell due on the way, in time order, as if that time had passed.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import NoReturn, Protocol

from redis.asyncio import Redis

from shared.errors import Conflict, Unavailable, ValidationFailed
from shared.keys import MANUAL_CLOCK
from shared.redis import text
from shared.times import within_domain

log = logging.getLogger(__name__)

class Clock(Protocol):
    manual: bool

    async def now(self) -> datetime: ...


class WallClock:
    manual = False

    async def now(self) -> datetime:
        return datetime.now(UTC)  # noqa: TID251 - the one place that reads the wall clock


class ManualClock:
    manual = True

    def __init__(self, redis: Redis, start: datetime) -> None:
        self._redis = redis
        self._start = start

    async def init(self) -> None:
        """Keep an instant set by an earlier run: a restart must not move time backwards."""
        await self._redis.set(MANUAL_CLOCK, self._start.isoformat(), nx=True)

    async def now(self) -> datetime:
        raw = await self._redis.get(MANUAL_CLOCK)
        if raw is None:
            return self._start
        return datetime.fromisoformat(text(raw))

    async def set(self, instant: datetime) -> None:
        await self._redis.set(MANUAL_CLOCK, instant.astimezone(UTC).isoformat())


class DueJob(Protocol):
    """Work that falls due at instants of the platform clock (renewals, expiries, billing)."""

    name: str

    async def next_due(self) -> datetime | None:
        """The earliest instant at which this job has work, or None."""
        ...

    async def run_due(self, now: datetime) -> None:
        """Do all the work due at or before `now`."""
        ...


class DueWork(Protocol):
    async def next_due(self) -> datetime | None: ...

    async def run_due(self, now: datetime) -> object: ...


@dataclass
class ServiceJob:
    """The `DueJob` of a service that knows its own due work; `on_run` counts the runs."""

    name: str
    service: DueWork
    on_run: Callable[[], None] = lambda: None

    async def next_due(self) -> datetime | None:
        return await self.service.next_due()

    async def run_due(self, now: datetime) -> None:
        self.on_run()
        await self.service.run_due(now)


Barrier = Callable[[], Awaitable[None]]


@dataclass(frozen=True)
class AdvanceResult:
    now: datetime
    jobs_run: int


class Scheduler:
    """Runs due jobs: on a tick under the wall clock, on `advance_to` under the manual one.

    One move of the manual clock is at most `max_step` long and never leaves the platform's
    time domain: every billing date on the way is run, so a move of centuries would keep the
    scheduler busy for hours. A move stops between two jobs once `stop` is called, so a
    shutdown never waits for it.
    """

    def __init__(self, clock: Clock, max_step: timedelta) -> None:
        self.clock = clock
        self.max_step = max_step
        self._jobs: list[DueJob] = []
        self._barriers: list[Barrier] = []
        self._lock = asyncio.Lock()
        self._stopping = False

    def stop(self) -> None:
        self._stopping = True

    def register(self, job: DueJob) -> None:
        self._jobs.append(job)

    def register_barrier(self, barrier: Barrier) -> None:
        """Awaited before the manual clock moves (metering catching up with its input)."""
        self._barriers.append(barrier)

    async def advance_to(self, target: datetime) -> AdvanceResult:
        if not isinstance(self.clock, ManualClock):
            raise Conflict("the clock is the wall clock; start with CLOCK=manual to set it",
                           code="clock_not_manual")
        within_domain(target, "now")
        async with self._lock:
            current = await self.clock.now()
            if target < current:
                raise Conflict(f"the clock moves forward only: it is {current.isoformat()}",
                               code="clock_backwards")
            if target - current > self.max_step:
                raise ValidationFailed(f"now: one move of the clock spans at most "
                                       f"{self.max_step.days} days", field="now")
            for barrier in self._barriers:
                await barrier()
            jobs_run = 0
            ran_at: dict[int, datetime] = {}  # by the job's identity: its last run in this move
            while (due := await self._earliest_due(target)) is not None:
                if self._stopping:
                    raise Unavailable("the platform is stopping; the clock stopped at "
                                      f"{(await self.clock.now()).isoformat()}")
                instant, job = due
                if id(job) in ran_at and instant <= ran_at[id(job)]:
                    _stuck(job, instant, ran_at[id(job)])
                now = ran_at[id(job)] = max(instant, current)
                await self.clock.set(now)
                await job.run_due(now)
                jobs_run += 1
            await self.clock.set(target)
            return AdvanceResult(now=target, jobs_run=jobs_run)

    async def tick(self) -> int:
        """Run whatever is due now; returns how many jobs ran."""
        async with self._lock:
            now = await self.clock.now()
            ran = 0
            for job in self._jobs:
                due = await job.next_due()
                if due is not None and due <= now:
                    await job.run_due(now)
                    ran += 1
            return ran

    async def run_forever(self, interval_s: float) -> None:
        while not self._stopping:
            try:
                await self.tick()
            except Exception:  # a failing job must not stop the others' schedule
                log.exception("scheduler tick failed")
            await asyncio.sleep(interval_s)

    async def _earliest_due(self, limit: datetime) -> tuple[datetime, DueJob] | None:
        best: tuple[datetime, DueJob] | None = None
        for job in self._jobs:
            due = await job.next_due()
            if due is not None and due <= limit and (best is None or due < best[0]):
                best = (due, job)
        return best


def _stuck(job: DueJob, left: datetime, ran_at: datetime) -> NoReturn:
    """A job run at `ran_at` still has work due by then: run again and again, it would keep
    the clock from its target for ever. The move stops there instead, and says so."""
    log.error("%s left work due at %s undone after running at %s; the clock stops here",
              job.name, left.isoformat(), ran_at.isoformat())
    raise Unavailable(f"{job.name} could not do the work due at {left.isoformat()}; the "
                      f"clock stopped at {ran_at.isoformat()}", code="clock_stuck")

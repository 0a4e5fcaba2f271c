"""Support plans as pure math (R8): rounding, allocation of sessions, renewal pricing.

No I/O, no clock. The invoicing service reads the sessions from ClickHouse and the contracts
from the tenant document, then calls `allocate`; entitlements calls `renewal_terms` and
`round_session`.

Allocation (R8.1–R8.3), session by session in time order (ties by id):
1. the session is rounded up to the increment (R8.1: 50 → 60 minutes);
2. level 1–2 work is taken from the day's allowance of a daily contract active that local day
   (R8.3: minutes per user per day × subscribed users); level-3 work never is;
3. what is left is drawn from the bank contracts active that day, in order: banks that do not
   cover level 3 first (so that a level-3-capable bank is kept for the work only it can do),
   then the one ending first (R8.2); level-3 work only from banks that cover it (R8.3);
4. what is still left is overage, billed in arrears at the overage rate (R8.2, R8.3).
A session may be split: part from the allowance or a bank, the rest billed.

A bank renewed on time carries over the minutes left at its end into the next contract
(R8.4): `Bank.carry_from` names the previous contract, whose remainder is final by then.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal
from fractions import Fraction
from typing import Literal

from shared.billing.money import round_fraction
from shared.billing.periods import add_years

__all__ = [
    "INCREMENT_MINUTES",
    "Allocation",
    "Bank",
    "Daily",
    "RenewalTerms",
    "Session",
    "allocate",
    "renewal_terms",
    "round_session",
]

INCREMENT_MINUTES = 15  # R8.1


def round_session(minutes: int, increment: int = INCREMENT_MINUTES) -> int:
    """R8.1: a session counts in whole increments, rounded up (50 → 60, 15 → 15, 1 → 15).

    Raises ValueError for a session of zero or negative minutes or a non-positive increment
    (metering refuses such events before they are stored)."""
    if increment <= 0:
        raise ValueError(f"increment must be positive, got {increment}")
    if minutes <= 0:
        raise ValueError(f"a session lasts at least one minute, got {minutes}")
    return -(-minutes // increment) * increment


@dataclass(frozen=True, slots=True)
class Session:
    id: str
    day: date  # the tenant's local day of the session
    minutes: int  # as reported
    level: int  # 1, 2 or 3
    order: str = ""  # sort key among sessions of one day (the instant, as ISO text)


@dataclass(frozen=True, slots=True)
class Daily:
    """A daily contract (R8.3), active on local days [start, end)."""

    key: str
    start: date
    end: date
    minutes_per_day: int  # minutes per user per day × subscribed users


@dataclass(frozen=True, slots=True)
class Bank:
    """A bank contract (R8.2), active on local days [start, end)."""

    key: str
    start: date
    end: date
    minutes: int  # hours per year × 60
    covers_level_3: bool = False
    carry_from: str | None = None  # R8.4: renewed on time, the previous contract's remainder


@dataclass(slots=True)
class Allocation:
    """Where one session's rounded minutes went."""

    session: Session
    rounded: int
    daily: int = 0
    daily_key: str | None = None
    banks: dict[str, int] = field(default_factory=dict)
    overage: int = 0


def allocate(sessions: Iterable[Session], dailies: Sequence[Daily],
             banks: Sequence[Bank], increment: int = INCREMENT_MINUTES
             ) -> tuple[list[Allocation], dict[str, int]]:
    """Allocate every session (R8.1–R8.4, see the module docstring).

    Returns the allocations in time order and the minutes left in each bank at the end."""
    ordered = sorted(sessions, key=lambda s: (s.day, s.order, s.id))
    left: dict[str, int] = {b.key: b.minutes for b in banks}
    carried: set[str] = set()
    used_today: dict[tuple[str, date], int] = {}
    by_key = {b.key: b for b in banks}
    result: list[Allocation] = []
    for session in ordered:
        rounded = round_session(session.minutes, increment)
        alloc = Allocation(session, rounded)
        rest = rounded
        if session.level != 3:  # R8.3: level-3 work never from the daily allowance
            daily = next((d for d in dailies if d.start <= session.day < d.end), None)
            if daily is not None:
                spent = used_today.get((daily.key, session.day), 0)
                take = min(rest, max(0, daily.minutes_per_day - spent))
                used_today[(daily.key, session.day)] = spent + take
                alloc.daily, alloc.daily_key = take, daily.key
                rest -= take
        active = [b for b in banks if b.start <= session.day < b.end
                  and (session.level != 3 or b.covers_level_3)]
        active.sort(key=lambda b: (b.covers_level_3, b.end, b.key))
        for bank in active:
            if rest == 0:
                break
            if bank.carry_from is not None and bank.key not in carried:
                previous = by_key.get(bank.carry_from)
                if previous is not None and previous.end <= session.day:
                    left[bank.key] += left[previous.key]  # R8.4: unused time carried over
                    left[previous.key] = 0
                carried.add(bank.key)
            take = min(rest, left[bank.key])
            if take:
                left[bank.key] -= take
                alloc.banks[bank.key] = take
                rest -= take
        alloc.overage = rest
        result.append(alloc)
    for bank in banks:  # carry-overs of contracts not used yet
        if bank.carry_from is not None and bank.key not in carried:
            previous = by_key.get(bank.carry_from)
            if previous is not None:
                left[bank.key] += left[previous.key]
                left[previous.key] = 0
    return result, left


RenewalKind = Literal["on_time", "late", "new"]


@dataclass(frozen=True, slots=True)
class RenewalTerms:
    """What a renewal costs and covers (R8.4)."""

    kind: RenewalKind
    start: date  # the new contract's first day
    end: date  # its end (excluded)
    amount: Decimal  # rounded once (R3.2)
    factor: Fraction  # the discount or proration factor applied to the full price
    carry_over: bool


def renewal_terms(price: Decimal, previous_end: date, today: date, currency: str,
                  discount: Decimal = Decimal("0.10"), grace_days: int = 30) -> RenewalTerms:
    """R8.4, for a contract that ends (ended) on `previous_end` (excluded), renewed `today`:
    - before expiry (`today < previous_end`): the next year [end, end + 1 y) at
      price × (1 − discount), unused bank time carried over;
    - up to `grace_days` late: the same next year (the anniversary is kept), charged
      price × days left of it / its days, full rate, no discount, no carry-over;
    - later: a new one-year contract from today at the full price.
    Example: 680.00 renewed 10 days late → 680 × 355/365 = 661.37."""
    if today < previous_end:
        end = add_years(previous_end)
        factor = 1 - Fraction(discount)
        return RenewalTerms("on_time", previous_end, end,
                            round_fraction(Fraction(price) * factor, currency), factor, True)
    late = (today - previous_end).days
    if late <= grace_days:
        end = add_years(previous_end)
        factor = Fraction((end - today).days, (end - previous_end).days)
        return RenewalTerms("late", previous_end, end,
                            round_fraction(Fraction(price) * factor, currency), factor, False)
    return RenewalTerms("new", today, add_years(today),
                        round_fraction(Fraction(price), currency), Fraction(1), False)


def overage_by_price(allocations: Iterable[Allocation],
                     price_of: Mapping[str, Decimal | None], default: Decimal | None
                     ) -> dict[Decimal, list[Allocation]]:
    """Group sessions with overage by the hourly rate they are billed at: `price_of` gives
    the rate of each session (by id); `default` for the others; None → not billed."""
    groups: dict[Decimal, list[Allocation]] = {}
    for alloc in allocations:
        if alloc.overage <= 0:
            continue
        rate = price_of.get(alloc.session.id, default)
        if rate is None:
            continue
        groups.setdefault(rate, []).append(alloc)
    return groups

"""Seats and licences from access grants and revocations (R6.3, R6.4, R4.12): pure
functions, no I/O.

Input rows are `(module, user_id, time, kind)` with kind `user.access.granted` or
`user.access.revoked`, deduplicated, in any order.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import datetime

from shared import events

# --- seats (R6.4) ------------------------------------------------------------------------

# Per (module, user), the spans [from, to) of access; `to` None while access is held.
Intervals = dict[tuple[str, str], list[tuple[datetime, datetime | None]]]


def access_intervals(rows: Iterable[tuple[str, str, datetime, str]]) -> Intervals:
    """Per (module, user), the intervals of access, from grants and revocations in any order.

    Events are sorted by time (a revocation wins a tie); a grant while access is held and a
    revocation without access change nothing.
    """
    by_user: dict[tuple[str, str], list[tuple[datetime, int]]] = defaultdict(list)
    for module, user, time, kind in rows:
        by_user[(module, user)].append((time, 1 if kind == events.USER_ACCESS_REVOKED else 0))
    intervals: dict[tuple[str, str], list[tuple[datetime, datetime | None]]] = {}
    for key, changes in by_user.items():
        spans: list[tuple[datetime, datetime | None]] = []
        opened: datetime | None = None
        for time, revoked in sorted(changes):
            if not revoked and opened is None:
                opened = time
            elif revoked and opened is not None:
                if time > opened:  # access revoked the instant it was granted was never held
                    spans.append((opened, time))
                opened = None
        if opened is not None:
            spans.append((opened, None))
        intervals[key] = spans
    return intervals


def users_with_access(intervals: Intervals,
                      start: datetime, end: datetime) -> dict[str, set[str]]:
    """Per module, the distinct users who held access at any moment of [start, end) (R6.4)."""
    return users_by_window(intervals, [(start, end)])[0]


def users_by_window(intervals: Intervals, windows: Sequence[tuple[datetime, datetime]],
                    modules: Collection[str] | None = None) -> list[dict[str, set[str]]]:
    """For each window [start, end) of `windows`, per module (of `modules`, or all), the
    distinct users who held access at any moment of it (R6.4). The windows come in order and
    do not overlap (a tenant's periods), so each span finds the windows it meets by
    bisection: one pass over the spans for all the windows, however many."""
    starts = [start for start, _ in windows]
    ends = [end for _, end in windows]
    found: list[dict[str, set[str]]] = [defaultdict(set) for _ in windows]
    for (module, user), spans in intervals.items():
        if modules is not None and module not in modules:
            continue
        for opened, closed in spans:
            # A span meets the windows ending after it opens and starting before it closes.
            last = len(windows) if closed is None else bisect_left(starts, closed)
            for k in range(bisect_right(ends, opened), last):
                found[k][module].add(user)
    return found


# --- licences (R4.12) ----------------------------------------------------------------------

def holders_at(intervals: Intervals, instant: datetime) -> dict[str, set[str]]:
    """Per module, the users holding access at `instant` (a span is [from, to))."""
    users: dict[str, set[str]] = defaultdict(set)
    for (module, user), spans in intervals.items():
        if any(opened <= instant and (closed is None or closed > instant)
               for opened, closed in spans):
            users[module].add(user)
    return users


def licence_holders(users: Mapping[str, Collection[str]], modules: Collection[str],
                    admin: str) -> set[str]:
    """The account's licences (R4.12): the distinct users holding access to at least one of
    `modules` (the plan's), the administrator always among them since the plan includes
    them on every module (R6.1) whether or not a grant was ever sent for them."""
    holders = {admin}
    for module in modules:
        holders.update(users.get(module, ()))
    return holders

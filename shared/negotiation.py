"""Content negotiation on the `Accept` header (HTTP semantics, RFC 9110 §12.5.1), pure.

A route offers a few media types, its default first; the caller's `Accept` lists media
ranges (`application/pdf`, `text/*`, `*/*`), each with an optional weight `q` from 0 to 1.
Each offered type takes the weight of the most specific range that matches it; the heaviest
type above 0 wins, ties going to the route's order. No header, or an empty one, accepts
anything. Nothing acceptable is None: the route answers 406.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Final

# A header longer than this is cut: enough for any browser's, and parsing stays bounded.
ACCEPT_MAX_CHARS: Final = 2_048
ACCEPT_MAX_RANGES: Final = 64

_Range = tuple[str, str, float]  # (type, subtype, q)


def preferred(accept: str | None, offered: Sequence[str]) -> str | None:
    """The offered media type the caller prefers, or None if it accepts none of them."""
    if accept is None or not accept.strip():
        return offered[0] if offered else None
    ranges = _ranges(accept[:ACCEPT_MAX_CHARS])
    best: str | None = None
    best_q = 0.0
    for media_type in offered:
        q = _weight(media_type, ranges)
        if q > best_q:
            best, best_q = media_type, q
    return best


def _ranges(accept: str) -> list[_Range]:
    """The well-formed media ranges of a header; a malformed one is ignored."""
    found: list[_Range] = []
    for item in accept.split(",")[:ACCEPT_MAX_RANGES]:
        media, *params = (part.strip() for part in item.split(";"))
        kind, slash, sub = media.lower().partition("/")
        if not slash or not kind or not sub or (kind == "*" and sub != "*"):
            continue
        q = _quality(params)
        if q is not None:
            found.append((kind, sub, q))
    return found


def _quality(params: list[str]) -> float | None:
    """The `q` parameter (1 when absent); None when it is not a weight from 0 to 1."""
    for param in params:
        name, _, value = param.partition("=")
        if name.strip().lower() != "q":
            continue
        try:
            q = float(value.strip())
        except ValueError:
            return None
        return q if 0.0 <= q <= 1.0 else None
    return 1.0


def _weight(media_type: str, ranges: list[_Range]) -> float:
    """The weight of the most specific range matching `media_type` (0 when none does)."""
    kind, _, sub = media_type.lower().partition("/")
    best_specificity = -1
    weight = 0.0
    for range_kind, range_sub, q in ranges:
        if range_kind == kind and range_sub == sub:
            specificity = 2
        elif range_kind == kind and range_sub == "*":
            specificity = 1
        elif range_kind == "*":
            specificity = 0
        else:
            continue
        if specificity > best_specificity:
            best_specificity, weight = specificity, q
    return weight

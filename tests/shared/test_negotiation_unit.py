"""Content negotiation on `Accept` (shared/negotiation.py): the offered type the caller
weighs heaviest, ties to the route's order, the most specific range deciding a type's
weight, None when nothing offered is acceptable (the route answers 406)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from shared.negotiation import ACCEPT_MAX_CHARS, preferred

pytestmark = pytest.mark.unit

OFFERED = ("application/json", "text/csv", "application/pdf")


@pytest.mark.parametrize(("accept", "chosen"), [
    (None, "application/json"),  # no header: anything, so the default
    ("", "application/json"),
    ("   ", "application/json"),
    ("*/*", "application/json"),  # a tie: the route's order
    ("application/*", "application/json"),
    ("APPLICATION/PDF", "application/pdf"),  # media types are case-insensitive
    ("application/pdf", "application/pdf"),
    ("text/csv; charset=utf-8", "text/csv"),
    ("text/*", "text/csv"),
    # 0.5 for JSON, 1 for the PDF: the heavier wins whatever the order written.
    ("application/json;q=0.5, application/pdf", "application/pdf"),
    # The most specific range decides: PDF is 0 although application/* says 1.
    ("application/*, application/pdf;q=0", "application/json"),
    ("application/pdf;q=0, */*", "application/json"),
    ("application/json;q=0, */*;q=0.1", "text/csv"),
    # A browser: */* at 0.8 for all three, a tie, so JSON.
    ("text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8", "application/json"),
    ("text/csv;q=0.2, application/pdf;q=0.3, application/json;q=0.1", "application/pdf"),
    # Malformed ranges and weights are ignored, the rest still counts.
    ("nonsense, application/pdf", "application/pdf"),
    ("application/json;q=2, text/csv;q=abc, application/pdf;q=0.4", "application/pdf"),
    ("*/pdf, text/csv", "text/csv"),
])
def test_the_heaviest_acceptable_type_is_chosen(accept: str | None, chosen: str) -> None:
    assert preferred(accept, OFFERED) == chosen


@pytest.mark.parametrize("accept", [
    "text/html", "image/*", "application/pdf;q=0, application/json;q=0, text/csv;q=0",
    "*/*;q=0", "nonsense", "application/json;q=-1", "application/json;q=nan", ",,,;",
])
def test_nothing_acceptable_is_none(accept: str) -> None:
    assert preferred(accept, OFFERED) is None


def test_a_header_is_read_up_to_its_bound() -> None:
    """Ranges past ACCEPT_MAX_CHARS characters are not read: the PDF named after 3,000
    characters of unknown types does not count."""
    padding = ", ".join(f"x-type/n{i}" for i in range(300))
    assert len(padding) > ACCEPT_MAX_CHARS
    assert preferred(f"{padding}, application/pdf", OFFERED) is None
    assert preferred(f"application/pdf, {padding}", OFFERED) == "application/pdf"


media_types = st.sampled_from([*OFFERED, "text/html", "application/*", "text/*", "*/*",
                               "image/png"])
weights = st.sampled_from(["", ";q=0", ";q=0.1", ";q=0.5", ";q=1", ";q=0.500"])


@given(st.lists(st.tuples(media_types, weights), max_size=8))
def test_the_choice_is_offered_and_never_refused_by_the_caller(
        ranges: list[tuple[str, str]]) -> None:
    """Whatever the header: the answer is an offered type, or None; never a type the header
    itself gives weight 0 by name."""
    accept = ", ".join(media + weight for media, weight in ranges)
    chosen = preferred(accept, OFFERED)
    if not ranges:
        assert chosen == OFFERED[0]
        return
    assert chosen is None or chosen in OFFERED
    refused = {media for media, weight in ranges if weight == ";q=0"}
    named = {media for media, weight in ranges if weight != ";q=0"}
    if chosen is not None:
        assert chosen not in refused - named
    if {media for media, _ in ranges} == {"*/*"} and ranges[0][1] != ";q=0":
        # Every type weighs what the first `*/*` says: the route's default.
        assert chosen == OFFERED[0]

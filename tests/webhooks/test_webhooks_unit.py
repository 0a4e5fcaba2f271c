"""The pure rules of webhooks: the retry schedule, the URL and address checks, which
endpoints an event goes to and the delivery id it gets."""

from __future__ import annotations

import ipaddress
import itertools

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from services.webhooks.routing import deliveries_for, delivery_id
from services.webhooks.schedule import Backoff
from services.webhooks.store import Endpoint
from services.webhooks.urls import Target, address_allowed, parse_url, refused_address
from shared.errors import ValidationFailed

DEFAULT = Backoff(first_s=5, cap_s=3_600, window_h=24)
HOUR_US = 3_600_000_000


@pytest.mark.unit
def test_the_default_schedule_by_hand() -> None:
    """5 s, then doubled: 10, 20, 40, 80, 160, 320, 640, 1280, 2560, then the 1-hour cap."""
    assert [DEFAULT.delay_us(n) // 1_000_000 for n in range(1, 13)] == [
        5, 10, 20, 40, 80, 160, 320, 640, 1280, 2560, 3600, 3600]


@pytest.mark.unit
def test_attempts_every_delay_apart_span_the_whole_window_then_fail() -> None:
    """Failing at once every time from t=0: attempts at 0, 5, 15, 35, 75, 155, 315, 635,
    1275, 2555, 5115 s, then hourly, the last one at exactly 24 h, after which it fails."""
    now, failures, attempts = 0, 0, [0]
    while (nxt := DEFAULT.next_attempt_us(0, now, failures + 1)) is not None:
        now, failures = nxt, failures + 1
        attempts.append(now // 1_000_000)
    assert attempts[:11] == [0, 5, 15, 35, 75, 155, 315, 635, 1275, 2555, 5115]
    assert attempts[-1] == 24 * 3_600
    hourly = attempts[11:-1]
    assert all(b - a == 3_600 for a, b in itertools.pairwise(hourly))


@pytest.mark.unit
@given(first=st.integers(1, 3_600), cap=st.integers(1, 86_400), window=st.integers(24, 720),
       start=st.integers(0, 10**15), elapsed=st.integers(0, 800 * HOUR_US),
       failures=st.integers(1, 10_000))
def test_a_retry_is_never_before_now_nor_after_the_window(
        first: int, cap: int, window: int, start: int, elapsed: int, failures: int) -> None:
    backoff = Backoff(first, cap, window)
    now = start + elapsed
    nxt = backoff.next_attempt_us(start, now, failures)
    closes = start + window * HOUR_US
    if now >= closes:
        assert nxt is None
    else:
        assert nxt is not None
        assert now < nxt <= closes
        assert nxt - now <= cap * 1_000_000


@pytest.mark.unit
@given(st.integers(1, 100))
def test_delays_never_shrink(failures: int) -> None:
    assert DEFAULT.delay_us(failures) <= DEFAULT.delay_us(failures + 1)


@pytest.mark.unit
@pytest.mark.parametrize(("address", "scheme", "loopback", "allowed"), [
    ("93.184.216.34", "https", False, True),
    ("2606:2800:220:1:248:1893:25c8:1946", "https", False, True),
    ("93.184.216.34", "http", True, False),  # http only to loopback
    ("127.0.0.1", "https", False, False),
    ("127.0.0.1", "http", True, True),
    ("::1", "https", True, True),
    ("10.0.0.1", "https", True, False),
    ("172.16.5.4", "https", False, False),
    ("100.64.0.1", "https", False, False),  # shared address space
    ("169.254.169.254", "https", False, False),
    ("fe80::1", "https", False, False),
    ("::ffff:192.168.1.1", "https", False, False),
    ("::ffff:127.0.0.1", "http", True, True),
    ("224.0.0.1", "https", False, False),
    ("0.0.0.0", "https", False, False),
])
def test_addresses(address: str, scheme: str, loopback: bool, allowed: bool) -> None:
    assert address_allowed(ipaddress.ip_address(address), scheme, loopback) is allowed


@pytest.mark.unit
def test_urls_parse_to_their_target() -> None:
    assert parse_url("https://Hooks.Example.com/x?y=1", False) == Target(
        "https", "hooks.example.com", 443)
    assert parse_url("http://localhost:8080/h", True) == Target("http", "localhost", 8080)
    assert parse_url("https://[2606:2800:220:1::1]:8443/h", False) == Target(
        "https", "2606:2800:220:1::1", 8443)


@pytest.mark.unit
@pytest.mark.parametrize("url", [
    "", "hooks.example.com", "https://exa mple.com/", "https://example.com/\n",
    "http://localhost/h", "http://example.com/h", "https://10.0.0.1/", "javascript:alert(1)",
])
def test_urls_refused_without_loopback(url: str) -> None:
    with pytest.raises(ValidationFailed) as refused:
        parse_url(url, False)
    assert refused.value.field == "url"


@pytest.mark.unit
def test_http_to_a_name_other_than_localhost_is_refused_even_in_development() -> None:
    with pytest.raises(ValidationFailed):
        parse_url("http://hooks.example.com/h", True)


@pytest.mark.unit
def test_a_name_is_refused_when_any_address_it_resolves_to_is() -> None:
    target = Target("https", "hooks.example.com", 443)
    assert refused_address(["93.184.216.34", "10.0.0.7"], target, False) == "10.0.0.7"
    assert refused_address(["93.184.216.34"], target, False) is None
    assert refused_address(["fe80::1%eth0"], target, False) == "fe80::1%eth0"


ALL = Endpoint("wh-all", "https://a.example.com", ("invoice.issued", "lot.expired"), None,
               "2026-01-01T00:00:00Z")
ACME = Endpoint("wh-acme", "https://b.example.com", ("invoice.issued",), "acme",
                "2026-01-01T00:00:00Z")


def _event(event_type: str, tenant: str, event_id: str = "e-1") -> bytes:
    return orjson.dumps({"id": event_id, "type": event_type, "subject": tenant})


@pytest.mark.unit
def test_an_event_goes_to_the_endpoints_listing_its_type_for_its_tenant() -> None:
    assert [d.endpoint for d in deliveries_for(_event("invoice.issued", "acme"),
                                               [ALL, ACME])] == ["wh-all", "wh-acme"]
    assert [d.endpoint for d in deliveries_for(_event("invoice.issued", "globex"),
                                               [ALL, ACME])] == ["wh-all"]
    assert [d.endpoint for d in deliveries_for(_event("lot.expired", "acme"),
                                               [ALL, ACME])] == ["wh-all"]
    assert deliveries_for(_event("plan.changed", "acme"), [ALL, ACME]) == []
    assert deliveries_for(b"not json", [ALL]) == []
    assert deliveries_for(b"[1]", [ALL]) == []


@pytest.mark.unit
@given(st.text(min_size=1, max_size=64))
def test_the_delivery_id_is_stable_per_endpoint_and_event(event_id: str) -> None:
    body = _event("invoice.issued", "acme", event_id)
    first, again = deliveries_for(body, [ALL]), deliveries_for(body, [ALL])
    assert first[0].id == again[0].id == delivery_id("wh-all", event_id)
    assert first[0].id != delivery_id("wh-acme", event_id)
    assert first[0].id.startswith("msg_")
    assert len(first[0].id) == 36

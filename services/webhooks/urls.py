"""Which URLs a webhook endpoint may have, as pure functions (docs/webhooks.md, "URLs").

An endpoint is `https://` to a public address. Deliveries are POSTs the platform makes from
inside its network, so an address of that network (private, loopback, link-local such as a
cloud metadata service, reserved, multicast) is refused: otherwise an admin key could make
the platform reach what only it can reach. For local development a setting
(`WEBHOOKS_ALLOW_HTTP_LOOPBACK`) admits `http://` and `https://` to loopback addresses.

A host name is resolved when the endpoint is created and again before every delivery, and
each address it resolves to must pass (sender.py).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final
from urllib.parse import urlsplit

from shared.errors import ValidationFailed

MAX_URL_CHARS: Final = 2_048
_LOCAL_NAMES: Final = ("localhost", "localhost.")

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


@dataclass(frozen=True, slots=True)
class Target:
    """Where an endpoint's URL points: what is resolved and checked before each delivery."""

    scheme: str
    host: str
    port: int


def _refuse(reason: str) -> ValidationFailed:
    return ValidationFailed(f"url: {reason}", field="url", code="invalid_url")


def parse_url(url: str, allow_loopback: bool) -> Target:
    """The endpoint URL's target, or a 422 naming `url`. Host names are checked once
    resolved (`address_allowed`); an address written in the URL is checked here."""
    if not url or len(url) > MAX_URL_CHARS:
        raise _refuse(f"1 to {MAX_URL_CHARS} characters")
    if any(ch.isspace() or ord(ch) < 0x20 or ord(ch) == 0x7F for ch in url):
        raise _refuse("no spaces or control characters")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as error:
        raise _refuse(f"not a URL ({error})") from None
    scheme = parts.scheme.lower()
    if scheme not in ("https", "http"):
        raise _refuse("must start with https://")
    if scheme == "http" and not allow_loopback:
        raise _refuse("must start with https:// (http:// is for local development only)")
    if parts.username is not None or parts.password is not None:
        raise _refuse("credentials in the URL are refused: they would be shown with it")
    if parts.fragment:
        raise _refuse("no #fragment")
    host = (parts.hostname or "").lower()
    if not host or len(host) > 253:
        raise _refuse("a host name or address is required (at most 253 characters)")
    literal = _literal(host)
    if literal is not None and not address_allowed(literal, scheme, allow_loopback):
        raise _refuse(f"{host} is not a public address")
    if scheme == "http" and literal is None and host not in _LOCAL_NAMES:
        raise _refuse("http:// only to a loopback address or localhost")
    return Target(scheme, host, port or (443 if scheme == "https" else 80))


def address_allowed(address: Address, scheme: str, allow_loopback: bool) -> bool:
    """A public address for `https`; loopback as well when local development allows it, and
    loopback only for `http`."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if allow_loopback and address.is_loopback:
        return True
    return scheme == "https" and address.is_global and not address.is_multicast


def refused_address(addresses: Iterable[str], target: Target, allow_loopback: bool
                    ) -> str | None:
    """The first resolved address the target may not reach, or None when all pass."""
    for text in addresses:
        address = _literal(text.split("%", 1)[0])
        if address is None or not address_allowed(address, target.scheme, allow_loopback):
            return text
    return None


def is_address(host: str) -> bool:
    return _literal(host) is not None


def _literal(host: str) -> Address | None:
    try:
        return ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return None

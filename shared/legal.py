"""The shapes of the legal identities printed on invoices and credit notes (R9.8): a legal
name, a postal address, a VAT id and an e-mail address, each bounded. Pure.

The seller's come from the platform settings and the buyer's from the tenant's billing
profile (`POST /v1/tenants`, `PATCH /v1/tenants/{t}`); both are checked by these same rules.
The VAT id's shape is loose on purpose: every country writes its own (`FR12345678901`,
`CHE-123.456.789 MWST`), so it is bounded, not verified against a registry.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Annotated, Final

from annotated_types import GroupedMetadata
from pydantic import AfterValidator, StringConstraints

LEGAL_NAME_MAX: Final = 200
ADDRESS_MAX: Final = 500
VAT_ID_MAX: Final = 32
EMAIL_MAX: Final = 254  # the longest address SMTP carries (RFC 5321)

# Control characters would break the CSV export and a printed page; an address may span
# lines, nothing else may.
_CONTROL: Final = re.compile(r"[\x00-\x1f\x7f]")
_CONTROL_BUT_NEWLINE: Final = re.compile(r"[\x00-\x09\x0b-\x1f\x7f]")
# Letters, digits, spaces, dots, hyphens and slashes, starting with a letter or a digit and
# holding at least one digit: what VAT and tax ids are written with, the world over.
_VAT_ID: Final = re.compile(r"(?=[^0-9]*[0-9])[A-Za-z0-9][A-Za-z0-9 ./-]*", re.ASCII)
# local@domain.tld: one '@', no spaces, a dot in the domain; no more is checked (only
# sending a message proves an address).
_EMAIL: Final = re.compile(r"[^@\s]{1,64}@[^@\s.]+(\.[^@\s.]+)+")
# Invoicing numbers a document by filling `@@…@@` placeholders in its stored text, so free
# text printed on it may not hold that marker.
_PLACEHOLDER_MARK: Final = "@@"


def _free_text(value: str, control: re.Pattern[str]) -> str:
    if control.search(value):
        raise ValueError("may not contain control characters")
    if _PLACEHOLDER_MARK in value:
        raise ValueError(f"may not contain '{_PLACEHOLDER_MARK}'")
    return value


def checked_name(value: str) -> str:
    """A legal name: one line of text."""
    return _free_text(value, _CONTROL)


def checked_address(value: str) -> str:
    """A postal address: text, new lines allowed between its parts."""
    return _free_text(value, _CONTROL_BUT_NEWLINE)


def checked_vat_id(value: str) -> str:
    if not _VAT_ID.fullmatch(value):
        raise ValueError("a VAT id is letters, digits, spaces, '.', '-' or '/', starting with "
                         "a letter or a digit and holding a digit, e.g. 'FR12345678901'")
    return value


def checked_email(value: str) -> str:
    if not _EMAIL.fullmatch(value):
        raise ValueError("not an e-mail address such as 'billing@example.com'")
    return value


@dataclass(frozen=True)
class _Text(GroupedMetadata):
    """A string stripped of surrounding white space, of a bounded length, that `check`
    accepts: the constraints each field below is declared with."""

    min_length: int
    max_length: int
    check: Callable[[str], str]

    def __iter__(self) -> Iterator[object]:
        yield from StringConstraints(strip_whitespace=True, min_length=self.min_length,
                                     max_length=self.max_length)
        yield AfterValidator(self.check)


LegalName = Annotated[str, _Text(1, LEGAL_NAME_MAX, checked_name)]
PostalAddress = Annotated[str, _Text(1, ADDRESS_MAX, checked_address)]
VatId = Annotated[str, _Text(2, VAT_ID_MAX, checked_vat_id)]
EmailAddress = Annotated[str, _Text(3, EMAIL_MAX, checked_email)]

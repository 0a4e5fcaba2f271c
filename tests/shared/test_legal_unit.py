"""The legal identities printed on invoices (shared/legal.py, R9.8): a legal name, a postal
address, a VAT id and an e-mail address, each stripped, bounded and checked by one rule."""

from __future__ import annotations

import pytest
from pydantic import BaseModel, ValidationError

from shared.legal import (
    ADDRESS_MAX,
    EMAIL_MAX,
    LEGAL_NAME_MAX,
    VAT_ID_MAX,
    EmailAddress,
    LegalName,
    PostalAddress,
    VatId,
)

pytestmark = pytest.mark.unit


class Identity(BaseModel):
    name: LegalName | None = None
    address: PostalAddress | None = None
    vat_id: VatId | None = None
    email: EmailAddress | None = None


def _refusal(field: str, value: str) -> str:
    with pytest.raises(ValidationError) as refused:
        Identity.model_validate({field: value})
    [error] = refused.value.errors()
    assert error["loc"] == (field,)
    return str(error["msg"])


@pytest.mark.parametrize(("field", "given", "kept"), [
    ("name", "  Acme SAS ", "Acme SAS"),
    ("address", "1 rue de la Paix\n75002 Paris", "1 rue de la Paix\n75002 Paris"),
    ("vat_id", " FR12345678901 ", "FR12345678901"),
    ("vat_id", "CHE-123.456.789 MWST", "CHE-123.456.789 MWST"),
    ("email", "billing@example.com", "billing@example.com"),
])
def test_accepted_values_are_kept_stripped(field: str, given: str, kept: str) -> None:
    assert getattr(Identity.model_validate({field: given}), field) == kept


@pytest.mark.parametrize(("field", "value", "message"), [
    ("name", "Acme\nSAS", "control characters"),  # a name is one line
    ("address", "1 rue\tde la Paix", "control characters"),  # new lines only
    ("name", "Acme @@NUMBER@@", "'@@'"),  # the numbering placeholder's marker
    ("address", "@@", "'@@'"),
    ("vat_id", "FR-ABC", "holding a digit"),  # no digit
    ("vat_id", "-FR123", "starting with a letter or a digit"),
    ("vat_id", "FR 123 é", "letters, digits"),  # ASCII only
    ("email", "billing@example", "e-mail address"),  # no dot in the domain
    ("email", "bill ing@example.com", "e-mail address"),
    ("email", "a@b@example.com", "e-mail address"),
])
def test_refused_values_say_why(field: str, value: str, message: str) -> None:
    assert message in _refusal(field, value)


@pytest.mark.parametrize(("field", "shortest", "longest"), [
    ("name", 1, LEGAL_NAME_MAX),  # 200
    ("address", 1, ADDRESS_MAX),  # 500
    ("vat_id", 2, VAT_ID_MAX),  # 32
])
def test_lengths_are_bounded_after_stripping(field: str, shortest: int, longest: int) -> None:
    """A value of digits (every rule's alphabet) at each bound is kept, one more or one
    fewer is refused; white space around it does not count."""
    assert Identity.model_validate({field: " " + "1" * longest + " "})
    assert Identity.model_validate({field: "1" * shortest})
    assert "at most" in _refusal(field, "1" * (longest + 1))
    assert "at least" in _refusal(field, " " * 3 + "1" * (shortest - 1))


def test_an_email_is_at_most_254_characters() -> None:
    """RFC 5321: 64 + '@' + 185 + '.com' = 254 is the longest kept."""
    local, domain = "a" * 64, "b" * 185
    longest = f"{local}@{domain}.com"
    assert len(longest) == EMAIL_MAX == 254
    assert Identity.model_validate({"email": longest}).email == longest
    assert "at most" in _refusal("email", f"{local}@{domain}b.com")

"""Who may do what in a tenant's account (R5), and the checks of values a tenant is created
with: pure rules, raising the error the caller gets."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

from shared.auth import Principal, Role
from shared.errors import Forbidden, ValidationFailed
from shared.subscription import Actor

# R5: who may do what (docs/rules.md, R5). Owner "—" for feature requests: an owner buys instead.
ACTION_TEXT = {"buy": "buy now", "quote": "request a quote", "trial": "start a free trial",
               "request_feature": "request a feature", "renew": "renew a support plan"}


def check_role(action: str, actor: Actor) -> None:
    """R5 table (docs/rules.md, R5); a refusal names the role and the action (R5.2)."""
    role = actor.role
    if role == "sub_account":
        # R5.1: payments belong to the main account; a secondary or multi-user account's
        # user may not even ask, so every action is refused before the table is read.
        raise Forbidden(f"role 'sub_account' may not {ACTION_TEXT[action]}: only the owner "
                        "of the main account acts on purchases (R5.1)",
                        field="actor.role", code="role_forbidden")
    allowed = {
        "buy": role == "owner",  # R5.1: only the owner pays
        "quote": role in ("owner", "admin"),  # admin: if the account allows it (below)
        "trial": role in ("owner", "admin"),
        "request_feature": role in ("admin", "supervisor"),
        "renew": role == "owner",  # R5.1: only the owner pays
    }[action]
    if not allowed:
        raise Forbidden(f"role '{role}' may not {ACTION_TEXT[action]} (R5)",
                        field="actor.role", code="role_forbidden")


def actor_may_manage(actor: Actor | None, principal: Principal, what: str) -> None:
    """Renewal and lot changes commit the owner's money: the owner or the account admin;
    a platform admin key may act without naming an actor."""
    if actor is None:
        if principal.role != Role.ADMIN:
            raise ValidationFailed("actor: name the user acting (R5)", field="actor")
        return
    if actor.role not in ("owner", "admin"):
        raise Forbidden(f"role '{actor.role}' may not {what} (R5)", field="actor.role",
                        code="role_forbidden")


def parse_vat_rate(text: str) -> Decimal:
    try:
        rate = Decimal(text)
    except (InvalidOperation, TypeError):
        rate = Decimal("NaN")
    if not rate.is_finite() or not Decimal(0) <= rate <= Decimal(1) \
            or not text.replace(".", "", 1).isdigit():
        raise ValidationFailed(f"vat_rate: '{text}' must be a decimal string from 0 to 1, "
                               "e.g. \"0.20\"", field="vat_rate")
    return rate

"""The audit log: one JSON line on `meterbill.audit` per change an API caller made.

Who (the key's id, role and tenant scope, and the product's actor when the body names one),
what (`action`) and the ids involved. Written by the routes after the change succeeded, so a
refused call leaves no audit line (its access line says it was refused). Callers pass ids
and plain fields only: never a key's secret.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import BaseModel

from shared.auth import Principal

AUDIT = logging.getLogger("meterbill.audit")
_RESERVED = set(logging.makeLogRecord({}).__dict__) | {"message", "asctime"}


def audit(action: str, principal: Principal | None, *, actor: BaseModel | None = None,
          **ids: Any) -> None:
    """Record `action` done by `principal` (None: by the platform itself, e.g. the
    scheduler), with `ids` naming what it touched (None values are left out)."""
    who: dict[str, Any] = {"key_id": None, "role": None, "scope": None}
    if principal is not None:
        who = {"key_id": principal.key_id, "role": principal.role.value,
               "scope": principal.tenant}
    entry: dict[str, Any] = {"action": action, **who,
                             "actor": None if actor is None else actor.model_dump(mode="json")}
    entry.update({k: v for k, v in ids.items() if v is not None})
    # Extra fields may not shadow a LogRecord's own (`msg`, `args`, …): prefix the rare clash.
    AUDIT.info("%s", action, extra={(f"audit_{k}" if k in _RESERVED else k): v
                                    for k, v in entry.items()})

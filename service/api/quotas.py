"""The per-owner caps (service/owner_quotas.py) as the API answers them: 429 problem+json."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

from sqlalchemy.orm import Session

from service.api.errors import ApiProblem
from service.config import Settings
from service.owner_quotas import QuotaExceeded


def enforce_quota(check: Callable[..., None], session: Session, owner_id: str, settings: Settings,
                  **options: Any) -> None:
    """Run `check` (it locks the owner until commit); over a cap, a 429 naming the limit and its setting."""
    try:
        check(session, owner_id, settings, **options)
    except QuotaExceeded as exc:
        session.rollback()  # let the owner's lock go now, not when the request's session closes
        raise ApiProblem(429, exc.detail, code="quota_exceeded", limit=exc.limit, setting=exc.setting,
                         value=exc.value,
                         headers={"Retry-After": str(settings.quota_retry_after_seconds)}) from None

"""The errors domain code raises for a bad request; the API maps them to problems (no web framework
here): `InvalidReference` → 422 naming the field, `Conflict` → 409."""
from __future__ import annotations


class DomainError(Exception):
    def __init__(self, detail: str, *, code: str, field: str | None = None) -> None:
        super().__init__(detail)
        self.detail, self.code, self.field = detail, code, field


class InvalidReference(DomainError):
    """A request names something that does not exist for this owner, or is not usable yet."""


class Conflict(DomainError):
    """The request is valid but clashes with the current state (e.g. a round already running)."""

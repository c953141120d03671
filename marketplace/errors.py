"""The error hierarchy of the service; each class carries its HTTP status and becomes problem+json in one handler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class FieldError:
    field: str
    message: str


class MarketplaceError(Exception):
    status_code: int = 400
    title: str = "Bad request"
    type_slug: str = "bad-request"

    def __init__(
        self,
        detail: str,
        *,
        errors: Sequence[FieldError] = (),
        extra: dict[str, object] | None = None,
    ) -> None:
        super().__init__(detail)
        self.detail = detail
        self.errors = list(errors)
        self.extra = extra or {}


class BadRequest(MarketplaceError):
    status_code, title, type_slug = 400, "Malformed request", "malformed-request"


class Unauthorized(MarketplaceError):
    status_code, title, type_slug = 401, "Not authenticated", "not-authenticated"


class Forbidden(MarketplaceError):
    status_code, title, type_slug = 403, "Not allowed", "forbidden"


class NotFound(MarketplaceError):
    status_code, title, type_slug = 404, "Not found", "not-found"


class NotAcceptable(MarketplaceError):
    status_code, title, type_slug = 406, "Not acceptable", "not-acceptable"


class Conflict(MarketplaceError):
    status_code, title, type_slug = 409, "Conflict with the current state", "conflict"


class InsufficientFunds(Conflict):
    title, type_slug = "Insufficient funds", "insufficient-funds"


class Gone(MarketplaceError):
    status_code, title, type_slug = 410, "Gone", "gone"


class UnsupportedMediaType(MarketplaceError):
    status_code, title, type_slug = 415, "Unsupported media type", "unsupported-media-type"


class InvalidInput(MarketplaceError):
    status_code, title, type_slug = 422, "Invalid input", "invalid-input"

    @classmethod
    def field(cls, field: str, message: str) -> InvalidInput:
        return cls(f"{field}: {message}", errors=[FieldError(field, message)])


class FieldErrors:
    """What is wrong with several fields, gathered to refuse them all in one answer (a client fixing a form wants
    every field named at once, not one per round trip)."""

    def __init__(self) -> None:
        self.errors: list[FieldError] = []

    def add(self, field: str, message: str) -> None:
        self.errors.append(FieldError(field, message))

    def check(self, check: Callable[..., T], *args: Any) -> T | None:
        """`check(*args)`'s result, or None with its errors gathered when it refuses the input."""
        try:
            return check(*args)
        except InvalidInput as exc:
            self.errors += exc.errors
            return None

    def refuse_if_any(self, what: str) -> None:
        if len(self.errors) == 1:
            raise InvalidInput.field(self.errors[0].field, self.errors[0].message)
        if self.errors:
            raise InvalidInput(what, errors=self.errors)


class ServiceUnavailable(MarketplaceError):
    status_code, title, type_slug = 503, "Service unavailable", "service-unavailable"


class TooManyRequests(MarketplaceError):
    status_code, title, type_slug = 429, "Too many requests", "too-many-requests"

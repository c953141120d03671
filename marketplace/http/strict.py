"""Strict JSON bodies: a body is converted into the handler's msgspec type with strict typing.

Litestar converts bodies leniently (`"1500"` or `1500.0` becomes the integer 1500, `"true"` a boolean);
the wire contract wants a wrong type refused with the field named, never coerced, so that amounts stay exact.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar import Request
from litestar.exceptions import ValidationException
from litestar.handlers.base import BaseRouteHandler


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _body_type(handler: BaseRouteHandler) -> Any:
    """The handler's `data` type when it is (or optionally is) a msgspec Struct; None otherwise."""
    field = handler.parsed_data_field
    if field is None or not field.match_predicate_recursively(lambda f: _is_struct(f.annotation)):
        return None
    return field.annotation


class StrictRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        # Malformed JSON is still Litestar's 400; only well-formed JSON reaches the strict conversion.
        data = await super().json()
        target = _body_type(self.route_handler)
        if target is None:
            return data
        try:
            # Litestar's lenient conversion afterwards passes an instance of the target type through unchanged.
            return msgspec.convert(data, type=target, strict=True)
        except msgspec.ValidationError as exc:
            # The same shape as Litestar's own validation errors; problems.py names the field from the message.
            raise ValidationException(
                detail="Validation failed", extra=[{"message": str(exc), "source": "body"}]
            ) from exc

"""Strict JSON bodies and integer and time query parameters: a body is converted into the handler's msgspec type with
strict typing, an integer query parameter (`QueryInt`) is plain decimal digits, and a time (`QueryTime`) is RFC 3339.

Litestar converts bodies leniently (`"1500"` or `1500.0` becomes the integer 1500, `"true"` a boolean);
the wire contract wants a wrong type refused with the field named, never coerced, so that amounts stay exact.
Its query integers are read as JSON numbers are, so `?limit=1e2` was 100 and `?limit=05` refused; its query times
take a number for seconds since the epoch, so `?since=2026` was 1970-01-01T00:33:46Z.
"""

from __future__ import annotations

import json
import re
import types
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, Union, get_args, get_origin

import msgspec
from litestar import Request
from litestar.exceptions import SerializationException, ValidationException
from litestar.handlers.base import BaseRouteHandler
from litestar.params import Parameter

from marketplace.errors import BadRequest, UnsupportedMediaType


class QueryInt(int):
    """An integer query parameter (`limit: FromQuery[QueryInt] = QueryInt(50)`): decimal digits and nothing else
    (`05` is 5); a float, an exponent, a sign or a space is a 422 naming the parameter. A plain `int` query
    parameter is refused at start-up (access.check_declared): Litestar would read it as a JSON number."""


_DIGITS = re.compile(r"[0-9]+")  # ASCII digits only: `\d` would take other scripts' digits too
_QUERY_INT_MESSAGE = "must be a whole number written in the digits 0-9 alone (no sign, decimal point or exponent)"


def _is_query_int(target: Any) -> bool:
    return target is QueryInt


def _query_int(_: Any, value: Any) -> QueryInt:
    """Litestar's type decoder for QueryInt, given the parameter's text (a default never reaches it). A ValueError
    becomes a validation error at the parameter's name (problems.validation_error: a 422)."""
    if not isinstance(value, str) or not _DIGITS.fullmatch(value):
        raise ValueError(_QUERY_INT_MESSAGE)
    try:
        return QueryInt(value)
    except ValueError:  # more digits than Python converts (4,300): no list has a use for such a number
        raise ValueError("too large a number") from None


class QueryTime(datetime):
    """A time query parameter (`since: FromQuery[QueryTime | None] = None`): an RFC 3339 time with its offset
    (`2026-01-01T00:00:00Z`), never a number (which Litestar would read as seconds since the epoch). A plain
    `datetime` query parameter is refused at start-up (access.check_declared)."""


_QUERY_TIME_MESSAGE = "must be an RFC 3339 time with its offset, e.g. 2026-01-01T00:00:00Z"


def _is_query_time(target: Any) -> bool:
    return target is QueryTime


def _query_time(_: Any, value: Any) -> QueryTime:
    """Litestar's type decoder for QueryTime, given the parameter's text; a ValueError is a 422 at its name."""
    if not isinstance(value, str):
        raise ValueError(_QUERY_TIME_MESSAGE)
    try:
        at = msgspec.convert(value, type=datetime, strict=True)  # a string only: RFC 3339 and nothing else
    except msgspec.ValidationError:
        raise ValueError(_QUERY_TIME_MESSAGE) from None
    if at.tzinfo is None:
        raise ValueError(_QUERY_TIME_MESSAGE)
    return QueryTime.combine(at.date(), at.timetz())


# For Litestar(type_decoders=...).
TYPE_DECODERS = [(_is_query_int, _query_int), (_is_query_time, _query_time)]


def _is_struct(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, msgspec.Struct)


def _body_type(handler: BaseRouteHandler) -> Any:
    """The handler's `data` type when it is (or optionally is) a msgspec Struct; None otherwise."""
    field = handler.parsed_data_field
    if field is None or not field.match_predicate_recursively(lambda f: _is_struct(f.annotation)):
        return None
    return field.annotation


# A body of thousands of wrong items is answered with the first of them, not an answer larger than the body.
MAX_ERRORS_LISTED = 50
_AT = re.compile(r" - at `\$(?P<path>[^`]*)`$")


def _struct_in(annotation: Any) -> type[msgspec.Struct] | None:
    """The Struct type of `annotation`, also when it is optional (`Struct | None`)."""
    if _is_struct(annotation):
        return annotation
    if get_origin(annotation) in (Union, types.UnionType):
        structs = [a for a in get_args(annotation) if _is_struct(a)]
        if len(structs) == 1:
            return structs[0]
    return None


def _at(message: str, path: str) -> str:
    return f"{message} - at `${path}`" if path else message


def every_error(value: Any, annotation: Any, path: str = "") -> list[str]:
    """What is wrong with each field of a body, in msgspec's words with each one's path: msgspec stops at the
    first, and a client fixing a form wants them all at once. Objects are walked field by field (missing,
    unknown and wrong fields), anything else is converted alone. Empty when every field is right on its own
    (the whole may still be wrong: the caller then keeps msgspec's own message)."""
    struct = _struct_in(annotation)
    if struct is None or not isinstance(value, dict):
        try:
            msgspec.convert(value, type=annotation, strict=True)
        except msgspec.ValidationError as exc:
            message = str(exc)
            inner = _AT.search(message)
            return [_at(message[: inner.start()], path + inner.group("path")) if inner else _at(message, path)]
        return []
    errors: list[str] = []
    fields = msgspec.structs.fields(struct)
    for f in fields:
        if f.encode_name in value:
            errors += every_error(value[f.encode_name], f.type, f"{path}.{f.encode_name}")
        elif f.required:
            errors.append(_at(f"Object missing required field `{f.encode_name}`", path))
    if struct.__struct_config__.forbid_unknown_fields:
        known = {f.encode_name for f in fields}
        errors += [_at(f"Object contains unknown field `{key}`", path) for key in value if key not in known]
    return errors


def nul_at(value: Any) -> str | None:
    """The dotted path of the first string (or object key) holding a NUL character, or None.

    JSON may carry `\\u0000`, but no text column can: PostgreSQL refuses it with an error (a 500 if it got
    that far) and SQLite would keep it, so a NUL is refused at the door as invalid input, naming the field.
    """
    return first_text_at(value, _has_nul)


def _has_nul(text: str) -> bool:
    return "\x00" in text


def first_text_at(value: Any, bad: Callable[[str], bool], path: str = "") -> str | None:
    """The dotted path of the first string or object key of a decoded body that `bad` refuses, or None.

    This runs on every body (the NUL check): a key's path is written out only for what was found or a nested value
    to look into, never for every key.
    """
    if isinstance(value, str):
        return (path or "body") if bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if bad(key) or (isinstance(item, str) and bad(item)):
                return _key_path(path, key)
            if isinstance(item, dict | list):
                found = first_text_at(item, bad, _key_path(path, key))
                if found:
                    return found
    if isinstance(value, list):
        for i, item in enumerate(value):
            if isinstance(item, str | dict | list):
                found = first_text_at(item, bad, f"{path}[{i}]")
                if found:
                    return found
    return None


def _key_path(path: str, key: Any) -> str:
    key = _readable(str(key))
    return f"{path}.{key}" if path else key


# The end of every object key: a string's closing quote, optional JSON whitespace and a colon. A string value may hold
# the same characters (`"a \\": b"`), so the count is never below the number of keys written, only above it.
_KEY_END = re.compile(rb'"[ \t\n\r]*:')
_REPEATED = "given more than once; it takes one value"
_NOT_UNICODE = "is not valid Unicode: it holds an unpaired surrogate escape (\\ud800-\\udfff without its pair)"


def _key_count(value: Any) -> int:
    """How many distinct keys the objects of a decoded body hold, all levels together."""
    # `type(...) is` rather than isinstance: the decoder makes plain dicts and lists, and this runs on every body.
    if type(value) is dict:
        count = len(value)
        for item in value.values():
            if type(item) is dict or type(item) is list:
                count += _key_count(item)
        return count
    if type(value) is list:
        count = 0
        for item in value:
            if type(item) is dict or type(item) is list:
                count += _key_count(item)
        return count
    return 0


class _Pairs(dict[str, Any]):
    """An object read by the slow path, with the keys it was given more than once, in the order they came."""

    repeated: list[str]


def _pairs(pairs: list[tuple[str, Any]]) -> _Pairs:
    obj = _Pairs(pairs)
    seen: set[str] = set()
    obj.repeated = []
    for key, _ in pairs:
        if key in seen and key not in obj.repeated:
            obj.repeated.append(key)
        seen.add(key)
    return obj


def _repeated_in(value: Any, path: str = "") -> list[str]:
    """The paths of the keys given more than once in a body read with `_pairs`, in document order."""
    found: list[str] = []
    if isinstance(value, _Pairs):
        found += [f"{path}.{key}" if path else key for key in value.repeated]
        for key, item in value.items():
            found += _repeated_in(item, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found += _repeated_in(item, f"{path}[{i}]")
    return found


def repeated_keys(body: bytes, data: Any) -> list[str]:
    """The paths of the keys a JSON body gives more than once in one object (`{"name": "a", "name": "b"}`).

    The decoder keeps the last value of a repeated key, so a client that sends two would have one silently dropped.
    Checked cheaply: every key written is followed by a colon, so a body with no more colons than its decoded objects
    hold distinct keys repeats none; failing that (a string holding a time or an address has colons of its own),
    no more key endings (`"` and a colon); only when there are more still (a repeated key, or a string holding `":`)
    is it read again with every pair kept, to tell which.
    """
    keys = _key_count(data)
    if body.count(b":") <= keys or len(_KEY_END.findall(body)) <= keys:
        return []
    # Only the keys matter: numbers are not converted (Python refuses an integer of more than 4,300 digits).
    return _repeated_in(json.loads(body, object_pairs_hook=_pairs, parse_int=_ignored, parse_float=_ignored))


def _ignored(_: str) -> None:
    return None


def _readable(text: str) -> str:
    """Text with its unpaired surrogates written as escapes (`\\ud800`), so that it can be put in an answer."""
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


# A pair written as two escapes reads as one character above U+FFFF, so any surrogate left is unpaired.
_SURROGATE = re.compile("[\ud800-\udfff]")


def _has_surrogate(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def surrogate_at(value: Any) -> str | None:
    """The dotted path of the first string (or object key) holding an unpaired surrogate, or None."""
    return first_text_at(value, _has_surrogate)


def unpaired_surrogate(body: bytes) -> str | None:
    """Where a body the decoder refused holds an unpaired surrogate escape (`"\\ud800"`), or None when that is not why.

    The JSON grammar allows such an escape but no Unicode text holds the character, so the decoder refuses it, in
    misleading words (`Input data was truncated`). Read again by a decoder that keeps it (only once refused: this
    is the error path) to name the field; any other fault keeps the decoder's own answer.
    """

    def refuse(constant: str) -> None:
        raise ValueError(constant)  # NaN and Infinity are not JSON, whatever Python's decoder takes

    try:
        data = json.loads(body.decode("utf-8"), parse_constant=refuse, parse_int=_ignored, parse_float=_ignored)
    except (ValueError, RecursionError):
        return None
    return surrogate_at(data)


def is_json(content_type: str) -> bool:
    """application/json or a JSON-based type (application/problem+json ...), whatever its parameters."""
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or (media.startswith("application/") and media.endswith("+json"))


def invalid_body(errors: list[tuple[str, str]]) -> ValidationException:
    """A 422 naming fields of the body, each with its reason (at most MAX_ERRORS_LISTED), as Litestar's own are."""
    return ValidationException(
        detail="Validation failed",
        extra=[{"message": message, "key": key, "source": "body"} for key, message in errors[:MAX_ERRORS_LISTED]],
    )


def refuse_other_media(content_type: str | None, body: bytes, content_encoding: str | None = None) -> None:
    """A body sent as another type (a form, plain text) is a 415, not read as JSON anyway, on every call that reads
    one (a call that takes none reads it to refuse it); a body without a Content-Type is taken for JSON, and no body
    at all is no body whatever the header says. So is a body in a content coding (gzip, br: RFC 9110 15.5.16): the
    service reads plain JSON only, and a compressed body read as JSON would be a misleading 400, a body labelled
    compressed but sent plain read as though the label were not there."""
    if content_type is not None and not is_json(content_type) and body:
        raise UnsupportedMediaType(f"the body must be JSON (Content-Type: application/json), not {content_type}")
    if body and content_encoding is not None and content_encoding.strip().lower() not in ("", "identity"):
        raise UnsupportedMediaType(
            f"the body must be sent uncompressed: Content-Encoding {content_encoding} is not accepted"
        )


class StrictRequest(Request[Any, Any, Any]):
    async def json(self) -> Any:
        refuse_other_media(
            self.headers.get("content-type"), await self.body(), self.headers.get("content-encoding")
        )
        # Malformed JSON is still Litestar's 400; only well-formed JSON reaches the strict conversion.
        try:
            try:
                data = await super().json()
            except SerializationException:
                surrogate = unpaired_surrogate(await self.body())
                if surrogate is None:
                    raise
                raise invalid_body([(surrogate, _NOT_UNICODE)]) from None
            field = nul_at(data)
            repeated = repeated_keys(await self.body(), data) if field is None else []
        except RecursionError as exc:
            # `[[[[...]]]]` thousands deep fits in the size limit but not in the decoder's stack.
            raise BadRequest("the JSON body is nested too deeply") from exc
        except UnicodeDecodeError as exc:  # a string holding bytes that are not UTF-8
            raise BadRequest("the JSON body is not valid UTF-8") from exc
        if field is not None:
            raise invalid_body([(field, "must not contain a NUL character")])
        if repeated:
            # Refused rather than read as its last value, as a query parameter given twice is.
            raise invalid_body([(key, _REPEATED) for key in repeated])
        target = _body_type(self.route_handler)
        if target is None:
            return data
        try:
            # Litestar's lenient conversion afterwards passes an instance of the target type through unchanged.
            return msgspec.convert(data, type=target, strict=True)
        except msgspec.ValidationError as exc:
            # The same shape as Litestar's own validation errors; problems.py names each field from its message.
            messages = every_error(data, target)[:MAX_ERRORS_LISTED] or [str(exc)]
            raise ValidationException(
                detail="Validation failed", extra=[{"message": m, "source": "body"} for m in messages]
            ) from exc


def one_of(values: Iterable[str], description: str) -> Any:
    """A query filter's parameter whose allowed values the served schema lists (`enum`): `status: Annotated[str |
    None, one_of(STATUSES, "...")] = None`. The handler still checks the value and answers a 422 naming the
    parameter and the values (problems: Litestar's own refusal would not say which values are allowed)."""
    return Parameter(description=description, schema_extra={"enum": list(values)})

"""Wire shapes shared by every part: money as `{"amount_minor": int, "currency": "ILS"}`."""

from __future__ import annotations

from typing import Annotated

import msgspec

from marketplace.money import MAX_AMOUNT_MINOR

# What each pattern a field must match means, in words: a client is told these (and the OpenAPI schema shows them),
# not the regular expression (problems.py puts them in place of msgspec's "Expected `str` matching regex '...'").
PATTERN_WORDS: dict[str, str] = {}


def pattern(regex: str, words: str) -> msgspec.Meta:
    """A string field's pattern, with what it means in words."""
    PATTERN_WORDS[regex] = words
    return msgspec.Meta(pattern=regex, description=words)


def pattern_in_words(shown: str) -> str | None:
    """The words of a pattern as msgspec shows it in a message (backslashes doubled), or None."""
    for regex, words in PATTERN_WORDS.items():
        if shown in (regex, regex.replace("\\", "\\\\")):
            return words
    return None


CURRENCY_CODE = pattern("^[A-Z]{3}$", "a currency code: three capital letters (ISO 4217), e.g. ILS")


class MoneyIn(msgspec.Struct, forbid_unknown_fields=True):
    # strict msgspec typing: 12.5 or "100" is refused, never rounded
    amount_minor: Annotated[int, msgspec.Meta(ge=0, le=MAX_AMOUNT_MINOR)]
    currency: Annotated[str, CURRENCY_CODE]


class MoneyOut(msgspec.Struct):
    amount_minor: int
    currency: str

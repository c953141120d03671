"""Rules for free text people write (names, descriptions): what counts as blank."""

from __future__ import annotations

import unicodedata

# Characters that show nothing: spaces and line breaks of every kind (Z*), control characters (Cc) and format
# characters (Cf: zero-width space and joiners, the byte order mark, soft hyphen, direction marks).
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


def blank(text: str) -> bool:
    """True when the text shows nothing: empty, or spaces and invisible characters alone (`"\\u200b"`, `" \\ufeff "`).

    A name or a description is what customers, businesses and operators read; one that shows nothing is no name.
    """
    return all(ch.isspace() or unicodedata.category(ch) in _INVISIBLE for ch in text)

"""Rules for free text people write (names, descriptions): what counts as blank, and when two names are one."""

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


def name_key(name: str) -> str:
    """What a reader tells a name by: its letters and digits, compatibility-normalised (NFKC: full-width, ligatures)
    and case-folded over all of Unicode ("ÖKO" is "öko", "STRASSE" is "straße"), without punctuation or spaces of
    any kind. "SHADY  PIPES." and "Shady Pipes" are one name; a business taking it would carry the other's name."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    letters = "".join(ch for ch in folded if ch.isalnum())
    # A name of signs alone ("!!!") is told by its signs, not taken for every other such name.
    return letters or "".join(ch for ch in folded if not (ch.isspace() or unicodedata.category(ch) in _INVISIBLE))

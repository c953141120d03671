"""Rules for free text people write (names, descriptions): what counts as blank, and when two names are one."""

from __future__ import annotations

import re
import unicodedata

# Characters that show nothing: spaces and line breaks of every kind (Z*), control characters (Cc) and format
# characters (Cf: zero-width space and joiners, the byte order mark, soft hyphen, direction marks).
_INVISIBLE = frozenset({"Zs", "Zl", "Zp", "Cc", "Cf"})


# Characters of other categories that show nothing either: fillers drawn as blank (Hangul's, the braille blank), the
# combining grapheme joiner, and the variation selectors (which only choose how the character before them looks).
_SHOWS_NOTHING = frozenset(
    "\u034f\u115f\u1160\u17b4\u17b5\u180b\u180c\u180d\u180f\u2800\u3164\uffa0"
    + "".join(chr(c) for c in range(0xFE00, 0xFE10))
    + "".join(chr(c) for c in range(0xE0100, 0xE01F0))
)


def blank(text: str) -> bool:
    """True when the text shows nothing: empty, or spaces and invisible characters alone (`"\\u200b"`, `" \\ufeff "`,
    a Hangul filler `"\\u3164"`, the braille blank `"\\u2800"`).

    A name or a description is what customers, businesses and operators read; one that shows nothing is no name.
    """
    return all(ch.isspace() or ch in _SHOWS_NOTHING or unicodedata.category(ch) in _INVISIBLE for ch in text)


# A link written in a name: what a name is shown beside (a survey's greeting, an operator's alert, the public list of
# unreliable businesses) must not carry one the marketplace would then send out under its own name.
_LINK = re.compile(
    r"[a-z][a-z0-9+.-]*://"  # a scheme's link
    r"|(?<![a-z0-9])www\."  # a web address without one (not "Awww.Cakes")
    r"|\bmailto:"
    r"|[\w.+-]+@[\w-]+(\.[\w-]+)+"  # an email address (mail programs show it as a link)
    # A domain with a path after it (secure-pay.example/deposit), its last label in lower-case letters as domains are
    # written: not "Dr.Cohen/Levi", "Studio 2.0/3D", "Rated 4.9/5".
    r"|\b[\w-]+(\.[\w-]+)*\.(?-i:[a-z]{2,})/",
    re.IGNORECASE,
)
# Line breaks of every kind and control characters (tabs included): a name is one line of text.
_NOT_ONE_LINE = frozenset({"Cc", "Zl", "Zp"})
# Embeddings, overrides and isolates of the bidirectional algorithm: they reorder what a reader sees ("Dana\u202eevil"
# shows "Dana" and the rest backwards). The marks (U+200E, U+200F) a Hebrew name may need are not among them.
_BIDI_CONTROLS = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def name_problem(name: str) -> str | None:
    """Why this is no name (None: it is one). A name shows something (`blank`), is one line without control
    characters, and holds no link: it is written into the messages the marketplace sends (a survey's "Hello Dana",
    an alert's "A fraud alert opened for ..."), and a name of several lines with a link in it ("Dana\\n\\nYour account
    is suspended. Verify at http://...") made those messages say what the marketplace never wrote."""
    name = name.strip()  # as every name is stored: a line break or tab after it (a form's, a paste's) is not in it
    if blank(name):
        return "must not be blank"
    if any(unicodedata.category(ch) in _NOT_ONE_LINE or ch in _BIDI_CONTROLS for ch in name):
        return "must be one line, without line breaks, control characters or direction overrides"
    if _LINK.search(unicodedata.normalize("NFKC", name)):  # full-width letters and stops are `www.` to a reader
        return "must be a name, not a link or an email address"
    return None


def name_key(name: str) -> str:
    """What a reader tells a name by: its letters and digits, compatibility-normalised (NFKC: full-width, ligatures)
    and case-folded over all of Unicode ("ÖKO" is "öko", "STRASSE" is "straße"), without punctuation or spaces of
    any kind. "SHADY  PIPES." and "Shady Pipes" are one name; a business taking it would carry the other's name."""
    folded = unicodedata.normalize("NFKC", name).casefold()
    letters = "".join(ch for ch in folded if ch.isalnum())
    # A name of signs alone ("!!!") is told by its signs, not taken for every other such name.
    return letters or "".join(ch for ch in folded if not (ch.isspace() or unicodedata.category(ch) in _INVISIBLE))

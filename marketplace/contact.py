"""Normalising contact details: phones to E.164 (libphonenumber), emails checked and lower-cased; and hiding the
contact details a customer writes into free text from those who have not paid for them."""

from __future__ import annotations

import bisect
import functools
import re
import unicodedata

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from marketplace.errors import InvalidInput

# Numbers written without a country code are read as numbers of the marketplace's country.
DEFAULT_REGION_BY_CURRENCY = {"ILS": "IL", "EUR": "DE"}


# What libphonenumber could not read, said without its own wording (which numbers its reasons).
_UNREADABLE = {
    phonenumbers.NumberParseException.INVALID_COUNTRY_CODE: "not a phone number: its country code is unknown",
    phonenumbers.NumberParseException.TOO_SHORT_AFTER_IDD: "not a phone number: too short after the country code",
    phonenumbers.NumberParseException.TOO_SHORT_NSN: "not a phone number: too short",
    phonenumbers.NumberParseException.TOO_LONG: "not a phone number: too long",
}


def normalise_phone(raw: str, field: str, default_region: str = "IL") -> str:
    if not raw.strip():
        raise InvalidInput.field(field, "required: a phone number (one is written like +972 50 123 4567)")
    written, after = _without_what_follows(raw)
    try:
        # Without what follows its last digit: libphonenumber reads three letters or more anywhere as a keypad spelling,
        # a label's too ("054-1234567 (cell)" would be 054-1234567-2355).
        number = phonenumbers.parse(written, default_region)
    except phonenumbers.NumberParseException as exc:
        if after:  # "+972 5 CALL": its letters may be the rest of it
            raise InvalidInput.field(field, _LETTERS) from exc
        message = _UNREADABLE.get(exc.error_type, "not a phone number (one is written like +972 50 123 4567)")
        raise InvalidInput.field(field, message) from exc
    if _letters_among_the_digits(written, number.extension) or (after and _may_be_its_digits(number, after)):
        raise InvalidInput.field(field, _LETTERS)
    # A number of a length its country's numbers have. Not checked against the ranges allocated today: the
    # library's list of them lags the carriers (+972 50-123-4567 is a mobile number it calls invalid), and a
    # customer refused for a number that works is a lead lost.
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput.field(field, "not a possible phone number (too short or too long for its country)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


_LETTERS = "not a phone number: letters in it (write the number in digits)"
_AFTER_THE_LAST_DIGIT = re.compile(r"\D+$")


def _without_what_follows(raw: str) -> tuple[str, str]:
    """The phone as written up to its last digit (of any script), and what follows it when that has letters in it (a
    label, "054-1234567 (cell)", or the end of a number spelled in letters, "+972 54 CALL NOW"); else the phone
    whole and nothing ("054-1234567 ext 12#")."""
    end = next((i + 1 for i in range(len(raw) - 1, -1, -1) if raw[i].isdigit()), 0)
    if end and any(c.isalpha() for c in raw[end:]):
        return raw[:end], raw[end:]
    return raw, ""


def _letters_among_the_digits(written: str, extension: str | None) -> bool:
    """Whether letters are written among the number's digits. libphonenumber reads them as a keypad spelling (three
    or more: "1-800-FLOWERS") or leaves them out ("054-12l4567" is 054-124567): either way a number the customer did
    not give, which its lead would sell as its contact. Letters before the number (a label: "tel: 054-...") and an
    extension's marker ("054-1234567 ext 12", the extension the library read) change no digit of it."""
    start = next((i for i, c in enumerate(written) if c.isdigit() or c in "+\uff0b"), len(written))
    number = written[start:]
    if extension:
        # The library reads an extension only at the end, its digits as written, then perhaps a #.
        number = number.rstrip().removesuffix("#").rstrip().removesuffix(extension)
        number = _AFTER_THE_LAST_DIGIT.sub("", number)  # the marker
    return any(c.isalpha() for c in number)


def _may_be_its_digits(number: phonenumbers.PhoneNumber, after: str) -> bool:
    """Whether the letters after the number's last digit may be the rest of it, spelled on a keypad: when the number is
    not whole without them, of a length and a shape its country's numbers have ("+972 54 CALL NOW" is +972 54; "054
    12345 AB" a mobile prefix with seven digits, where mobile numbers have nine), and read as digits they would not
    make it too long (a label would: "054 123 4567 - Dana" is 054-1234567-3262). The shape is libphonenumber's pattern
    of all its country's numbers (+972 5 and any eight digits), not the ranges allocated today, which lag the carriers;
    a label after a number of a range it lacks is taken as one when it is long enough ("(cell)"). Letters of other
    scripts have no keypad digits."""
    if not phonenumbers.is_possible_number(number):
        return True
    calling_code = number.country_code or 0  # parse sets it
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        calling_code, phonenumbers.region_code_for_country_code(calling_code)
    )
    pattern = metadata.general_desc.national_number_pattern if metadata and metadata.general_desc else None
    if pattern is None or re.fullmatch(pattern, phonenumbers.national_significant_number(number)):
        return False
    keyed = phonenumbers.convert_alpha_characters_in_number(unicodedata.normalize("NFKC", after))
    digits = "".join(c for c in keyed if c in "0123456789")
    if not digits:
        return False
    spelled = phonenumbers.PhoneNumber()
    spelled.merge_from(number)
    spelled.national_number = int(f"{number.national_number}{digits}")
    return phonenumbers.is_possible_number(spelled)


def normalise_email(raw: str, field: str) -> str:
    if not raw.strip():
        raise InvalidInput.field(field, "required: an email address")
    try:
        # Mailboxes are case-insensitive in practice; one spelling keeps sign-ups unique.
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidInput.field(field, str(exc)) from exc


# Gmail delivers v.ictim@ and victim@ (and @googlemail.com) to one mailbox; other providers differ on dots.
_GMAIL_DOMAINS = frozenset({"gmail.com", "googlemail.com"})


def mailbox(email: str) -> str:
    """The mailbox a normalised address (normalise_email) delivers to, for counting what is sent to one person: the
    address without its +tag (dana+leads@ is dana's, for every domain), and for Gmail without the dots of its local
    part, googlemail.com read as gmail.com. A key only: mail goes to the address as given."""
    local, domain = _local_part(email.lower()), email.lower().rpartition("@")[2]
    if domain in _GMAIL_DOMAINS:
        local, domain = local.replace(".", "") or local, "gmail.com"
    return f"{local}@{domain}"


# --- contact details written into free text -------------------------------------------------------------------

PHONE_HIDDEN = "[phone hidden]"
EMAIL_HIDDEN = "[email hidden]"
# An address in a customer's words: what a business would copy to write to it (letters of any script: müller@gmx.de,
# an address in Hebrew).
_ADDRESS = r"[\w.%+-]+@[\w-]+(?:\.[\w-]+)*\.\w{2,}"
# Searched for only from where a run of the local part's characters begins (the lookbehind), or right where the address
# before ends (`_plain_address_spans`): a search that tried every character of a long run as a start would read the
# rest of the run from each, a time quadratic in the run (seconds over a description of mere letters). No address
# starts inside a run otherwise (the one from the run's start would be found first), so each run is read once, and each
# domain once: a try of it starts at an @, and none of its labels can hold one.
_EMAIL_IN_TEXT = re.compile(rf"(?<![\w.%+-]){_ADDRESS}")
_EMAIL_HERE = re.compile(_ADDRESS)
# An address written so that a filter would miss it, as a reader still copies it: spaces around its @
# ("dana @ gmail.com"), or its @ and dots spelled out in brackets or between spaces ("dana(at)gmail.com",
# "dana [at] gmail dot com", "dana{at}gmail[dot]com"). A dot is one only when it joins two labels (the full stop of
# "... @ home. Thanks" is not), and the last label must be letters, as every top-level domain is ("2 @ 12.50" is a
# price).
_AT = r"(?:\s*@\s*|\s*[(\[{<]\s*at\s*[)\]}>]\s*)"
_SPELLED_DOT = r"(?:\s*[(\[{<]\s*dot\s*[)\]}>]\s*|\s+dot\s+)"
# A dot with a space before it joins two labels as well ("dana @ walla . co . il", "dana@gmail .com"): after an @ the
# address is clear, and a full stop is written against its word ("I am @ home. Thanks" is a sentence).
_DOT = rf"(?:\.|\s+\.\s*|{_SPELLED_DOT})"
# A bare " at " is an @ only when every dot after it is spelled out too, and the address ends in a top-level domain
# mail is kept at ("dana at gmail dot com", "dana at walla dot co dot il"): "meet at home.com", "call at 5.30", "we
# meet at home . com" are words, and so is "look at the dot in the corner" (in, it, to, no are country codes).
_MAIL_TLD = r"(?:com|net|org|info|biz|io|co|il|de|uk|ru|ua|fr|eu|us|ca|au|me|edu|gov|ac)"
_BARE_AT = rf"\s+at\s+[\w-]+(?:{_SPELLED_DOT}[\w-]+)*{_SPELLED_DOT}{_MAIL_TLD}"
# From the @ on: its local part is read back from there (a pattern starting at the local part would try each word
# of a long text as one, and take seconds over a description of mere letters). It starts after a character that is no
# space, the first of a run of spaces: tried from each space of a long run, its leading spaces would take a time
# quadratic in the run.
_SPELLED_OUT_DOMAIN = re.compile(
    rf"(?<!\s)(?:{_AT}[\w-]+(?:{_DOT}[\w-]+)*{_DOT}[^\W\d_]{{2,}}|{_BARE_AT})\b", re.IGNORECASE
)
_LOCAL_PART = re.compile(r"[\w.%+-]")
_MASK = "\0"  # what stands for an address found already, in the copy searched for the next: no part of one


# The compatibility form searched for addresses is at most this long: four times the longest description (5,000
# characters), which text as customers write it never comes near (a full-width or accented letter is one letter, a
# ligature two), and a description of characters that each stand for several (U+3316 is six letters, U+FDFA eighteen
# characters) does not make the search that much longer. What is written past it is hidden whole (TEXT_HIDDEN).
_SEARCHED_AT_MOST = 20_000
TEXT_HIDDEN = "[text hidden]"
# How far back from the end of what is searched its cut looks for a space, so as not to leave the start of an address
# the search did not read whole shown.
_CUT_LOOKS_BACK = 320


def _compatibility_form(text: str, at_most: int) -> tuple[str, list[int], list[int]]:
    """The text in its compatibility form (NFKC: a full-width at sign or full stop, U+FF20 and U+FF0E, a small at
    sign, U+FE6B, full-width letters and digits are the @, dot, letters and digits they look like), with where each of
    its characters was written: character i of it comes from text[starts[i]:ends[i]]. Each character is normalised with
    the combining marks that follow it, as NFKC composes them, and may give several (or none). At most `at_most`
    characters of it: of the text up to ends[-1] when it stops short of the text's end."""
    normal: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    i = 0
    while i < len(text):
        j = i + 1
        while j < len(text) and unicodedata.combining(text[j]):
            j += 1
        form = unicodedata.normalize("NFKC", text[i:j])
        if len(starts) + len(form) > at_most:
            break
        normal.append(form)
        starts += [i] * len(form)
        ends += [j] * len(form)
        i = j
    return "".join(normal), starts, ends


_SPACED_DOT = re.compile(r"(?<!\s)\s+\.\s*(\w+)")  # from the first space of a run, as _SPELLED_OUT_DOMAIN


def _domain_end(m: re.Match[str]) -> int | None:
    """Where the domain found ends: before a spaced dot followed by a capitalised word ("dana @ gmail . com . Thanks",
    "I am @ home . See you": a full stop ending a sentence, not a dot of the address), if what stays is a domain."""
    for dot in _SPACED_DOT.finditer(m.group()):
        label = dot.group(1)
        if label[:1].isupper() and not label.isupper():
            kept = m.group()[: dot.start()]
            return m.start() + len(kept) if _SPELLED_OUT_DOMAIN.fullmatch(kept) else None
    return m.end()


def _plain_address_spans(text: str) -> list[tuple[int, int]]:
    """Where the addresses written plainly are (`_EMAIL_IN_TEXT`): those `finditer` of it without its lookbehind
    would find, in a time linear in the text."""
    spans: list[tuple[int, int]] = []
    at = 0
    while True:
        # Right after an address, in the run it ends in ("a@b.com-c@d.com"), or from where a run begins.
        m = (_EMAIL_HERE.match(text, at) if spans else None) or _EMAIL_IN_TEXT.search(text, at)
        if m is None:
            return spans
        spans.append(m.span())
        at = m.end()


def _email_spans(text: str) -> list[tuple[int, int]]:
    """Where the addresses in the text are, as spans of the text itself."""
    spans = _plain_address_spans(text)
    masked = list(text)
    for start, end in spans:
        masked[start:end] = _MASK * (end - start)
    searched = "".join(masked)
    done = 0
    for m in _SPELLED_OUT_DOMAIN.finditer(searched):
        start, domain_end = m.start(), _domain_end(m)
        while start > done and _LOCAL_PART.fullmatch(searched[start - 1]):
            start -= 1
        # Not an @ with nothing of an address before it (" @ home.com"), nor a sentence's full stop.
        if start < m.start() and domain_end is not None:
            spans.append((start, domain_end))
            done = m.end()
    return sorted(spans)


def _hide_emails(text: str) -> str:
    """The text with its addresses hidden: found in its compatibility form (an address written in full-width or
    look-alike characters, with a full-width @ or dot, is one a reader copies), the span hidden is the one written.
    What is written past the form searched (`_SEARCHED_AT_MOST`) is hidden whole, from the space before the cut."""
    normal, starts, ends = _compatibility_form(text, _SEARCHED_AT_MOST)
    read = ends[-1] if ends else 0
    if read < len(text) and normal:
        # Nothing is known of what was not read: cut at the last space, not inside a word that may be an address's.
        cut = read
        while cut > 0 and read - cut < _CUT_LOOKS_BACK and not text[cut - 1].isspace():
            cut -= 1
        if cut > 0 and text[cut - 1].isspace():
            read = cut
        kept = bisect.bisect_left(starts, read)
        normal, starts, ends = normal[:kept], starts[:kept], ends[:kept]
    pieces: list[str] = []
    at = 0
    for start, end in _email_spans(normal):
        written_start, written_end = starts[start], ends[end - 1]
        if written_start < at:  # in a character the address before ends in as well: hidden with it
            at = max(at, written_end)
            continue
        pieces += [text[at:written_start], EMAIL_HIDDEN]
        at = written_end
    pieces.append(text[at:read])
    if read < len(text):
        pieces.append(TEXT_HIDDEN)
    return "".join(pieces)


# What libphonenumber finds possible is a phone when it is written as phones are: with its country's code (+972 ...,
# 00972 ..., or 972 ... with enough digits for one) or its trunk prefix (0: 054-1234567, 03-6123456, 0228 1234). A
# number that starts otherwise is a budget, a size, a range or an order number (50000-70000, 2000000, 12345678), and a
# date (03.04.2025) is no phone either, though it starts with 0.
_MIN_NATIONAL_DIGITS = 8
_MIN_WITH_COUNTRY_DIGITS = 11
_DATE = re.compile(r"\d{1,2}[./-]\d{1,2}[./-]\d{2,4}")
# A month and its year ("09/2026 3*4" is no phone: the copy with plain separators reads 09/2026 3-4).
_MONTH = re.compile(r"\d{1,2}/(?:19|20)\d{2}(?!\d)")
# A date (or a month) ending what is written before a match, a space between: no group of the number
# ("12.03.2026 054-7654321", "09/2026 054-7654321").
_DATE_AND_SPACE = re.compile(r"(?<![\d./-])(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}/(?:19|20)\d{2})\s+")
_DATE_AT_THE_END = re.compile(r"(?<![\d./-])(?:\d{1,2}[./-]\d{1,2}[./-]\d{2,4}|\d{1,2}/(?:19|20)\d{2})$")


_LOOKED_BEFORE = 16


def _part_of_a_longer_number(before: str) -> bool:
    """Whether the text before a match ends a run of digits it belongs to: the end of a date range (15.03.2025-),
    an account number's groups (DE89 3704 0044 ...), the thousands of a number or the minutes of a time written against
    it (2,000 12.03.2026; 12:00 - 1'200)."""
    tail = before.rstrip()
    if tail != before and tail[-1:].isdigit():
        return not _DATE_AT_THE_END.search(tail)  # a digit group, a space, then the match
    if before[-1:] in (",", ":") and before[-2:-1].isdigit():  # not a list's ", "
        return True
    return before[-1:].isdigit() or (tail[-1:] in (".", "-", "/", _DASH) and tail[-2:-1].isdigit())


_ANY_DIGIT = re.compile(r"\d")  # of any script (Unicode's decimal digits, category Nd), as the matcher reads them


def _in_ascii_digits(raw: str) -> str:
    """The number as ASCII: full-width forms (digits and plus, U+FF10 to U+FF19 and U+FF0B) by compatibility, the
    digits of other scripts (Arabic-Indic ٠٥٢, Persian ۰۵۲, Devanagari ...) by their decimal value. libphonenumber
    reads a number in any of them, and a customer writes its phone in them: a number is told a phone by its prefix
    whatever its digits (the span hidden is the one written)."""
    return _ANY_DIGIT.sub(lambda d: str(unicodedata.decimal(d.group())), unicodedata.normalize("NFKC", raw))


# Where the number ends and an extension (054-1234567 ext 12, x12, #12) or anything else begins: libphonenumber reads
# "0521 x 5551 x 234" as 0521-5551 extension 234, and a size is no phone.
_NUMBER_AS_WRITTEN = re.compile(r"[\d\s+()./-]*")


def _written_as_a_phone(raw: str, country_code: str) -> bool:
    # Told by the number before any extension marker: its digits are the ones counted.
    # An en dash is what the copy with plain separators writes for one (`_with_plain_separators`): a hyphen here.
    before_extension = _NUMBER_AS_WRITTEN.match(_in_ascii_digits(raw).replace(_DASH, "-").strip().lstrip("("))
    written = before_extension.group().strip() if before_extension else ""
    digits = sum(c.isdigit() for c in written)
    if written.startswith(("+", "00")):
        return True
    if written.startswith("0"):
        return digits >= _MIN_NATIONAL_DIGITS and not _DATE.fullmatch(written) and not _MONTH.match(written)
    return written.startswith(country_code) and digits >= _MIN_WITH_COUNTRY_DIGITS


# A phone spelled out in words ("zero five four one two three four five six seven", "oh five two, double one ...",
# in Hebrew "אפס חמש ארבע ..."), perhaps with some of its digits as digits: a run of them, as many digits as a phone
# has at the least (seven, a local number's), two of them words at the least. Words of single digits only: "one two
# three" counts, a budget in words ("fifty thousand") is no run, and neither is "a 3 bedroom" nor "2 x 12345678".
_DIGIT_WORDS = {
    **dict.fromkeys(["zero", "oh", "אפס"], 0),
    **dict.fromkeys(["one", "אחת", "אחד"], 1),
    **dict.fromkeys(["two", "שתיים", "שתים"], 2),
    **dict.fromkeys(["three", "שלוש", "שלושה"], 3),
    **dict.fromkeys(["four", "ארבע", "ארבעה"], 4),
    **dict.fromkeys(["five", "חמש", "חמישה"], 5),
    **dict.fromkeys(["six", "שש", "שישה"], 6),
    **dict.fromkeys(["seven", "שבע", "שבעה"], 7),
    **dict.fromkeys(["eight", "שמונה"], 8),
    **dict.fromkeys(["nine", "תשע", "תשעה"], 9),
}
_TIMES = {"double": 2, "triple": 3}
# Hebrew joins "and" to the word after it (ושש, "and six"). Each separator's spaces are possessive: a run of spaces
# tried again with fewer would be read once for each length, a time quadratic in the run.
_DIGIT_TOKEN = (
    rf"(?:(?:{'|'.join(_TIMES)})\s++)?(?:ו?(?:{'|'.join(sorted(_DIGIT_WORDS, key=len, reverse=True))})|\d+)\b"  # noqa: RUF001
)
_SPELLED_PHONE = re.compile(rf"\b{_DIGIT_TOKEN}(?:\s*+[,./-]?\s*+{_DIGIT_TOKEN})*", re.IGNORECASE)
_TOKEN_IN_RUN = re.compile(rf"(?:({'|'.join(_TIMES)})\s+)?ו?(?:(\d+)|(\w+))", re.IGNORECASE)  # noqa: RUF001
_SPELLED_PHONE_MIN_DIGITS = 7
_SPELLED_PHONE_MIN_WORDS = 2


def _is_spelled_phone(run: str) -> bool:
    digits = words = 0
    for token in _TOKEN_IN_RUN.finditer(run):
        times, number, word = token.groups()
        if number is not None:
            digits += len(number) * (_TIMES[times.lower()] if times else 1)
        elif word.lower() in _DIGIT_WORDS:  # not a word of a time ("double", "triple") read alone
            digits += _TIMES[times.lower()] if times else 1
            words += 1
    return digits >= _SPELLED_PHONE_MIN_DIGITS and words >= _SPELLED_PHONE_MIN_WORDS


def _hide_spelled_phones(text: str) -> str:
    return _SPELLED_PHONE.sub(lambda m: PHONE_HIDDEN if _is_spelled_phone(m.group()) else m.group(), text)


# A messenger or social network's handle: what a business would copy to write to the customer there, as its phone.
# The name of the network (or the address of profiles on it) stays, the handle is hidden: "telegram [handle hidden]",
# "instagram.com/[handle hidden]", as "wa.me/[phone hidden]".
HANDLE_HIDDEN = "[handle hidden]"
# An @ against a handle, not after a character of an address's local part ("dana@home" is no handle, and an address
# was hidden before), its first character a letter or _ ("2 @12.50" is a price); its last no dot (a full stop).
_AT_HANDLE = re.compile(r"(?<![\w.%+-])@[A-Za-z_][\w.]*\w", re.ASCII)
_PROFILE_SITE = (
    r"(?:t\.me|telegram\.me|wa\.me|m\.me|fb\.me|fb\.com|facebook\.com|instagram\.com|instagr\.am|linkedin\.com/in"
    r"|tiktok\.com/@|twitter\.com|x\.com)"
)
# A profile's address: the site (with its scheme and www or m. perhaps), then its path up to a space, a comma or a
# full stop ending a sentence. Tried only where a site's name starts a word (no "box.com/").
_PROFILE_LINK = re.compile(
    rf"(?<![\w.-])((?:https?://)?(?:(?:www|m|web|mobile)\.)?{_PROFILE_SITE}/)([\w%+~=?&#/-]+(?:\.[\w%+~=?&#/-]+)*)",
    re.IGNORECASE,
)
# A messenger's name (in Hebrew perhaps after the letter of "in", "to", "and", "the": בוואטסאפ), perhaps with a label
# ("skype id", "telegram username") and a colon or dash, then the number or the handle: hidden when it is written as
# one (five digits and more; a letter, then a digit, an underscore or a dot: "dana.cohen77"; Skype's "live:"), after a
# label, or, for Skype and Telegram, whatever word follows a colon ("skype: dana"). "skype me", "whatsapp only",
# "viber 5pm", "telegram or phone", "the signal is weak" and "signal: weak" are words.
_MESSENGER = re.compile(
    r"(?<!\w)[בלוה]?"
    r"(skype|telegram|signal|viber|whats\s?app"
    r"|סקייפ|טלגרם|וייבר|וו?א?טסאפ)"  # noqa: RUF001
    r"(\s++(?:id|user\s?name|user|nick(?:name)?|handle)\b)?(\s*+[:=-])?\s*+"
    r"(?:(\+?\d(?:[\s.-]?\d){4,})|((?:live:)?\w+(?:[.-]\w+)*))",
    re.IGNORECASE,
)
_SAID_AFTER_A_COLON = ("skype", "telegram", "סקייפ", "טלגרם")


def _messenger_handle(m: re.Match[str]) -> str:
    name, label, separator, number, handle = m.groups()
    written_as_one = number is not None or (
        handle[0].isalpha() and (handle.lower().startswith("live:") or any(c in "._" or c.isdigit() for c in handle))
    )
    after_a_colon = separator is not None and separator.strip() in ":=" and name.lower() in _SAID_AFTER_A_COLON
    if written_as_one or label or after_a_colon:
        return m.group()[: (m.start(4) if number is not None else m.start(5)) - m.start()] + HANDLE_HIDDEN
    return m.group()


def _hide_handles(text: str) -> str:
    text = _PROFILE_LINK.sub(lambda m: m.group(1) + HANDLE_HIDDEN, text)
    text = _MESSENGER.sub(_messenger_handle, text)
    return _AT_HANDLE.sub(HANDLE_HIDDEN, text)


# --- the lead's own contact, and the separators a writer puts between a phone's digits -----------------------------

# Between two digits, what a customer writes to keep a filter from reading its phone while a reader still does: any
# character that is neither a letter nor a digit (Unicode's punctuation, symbols and spaces, categories P*, S*, Z*,
# a newline or a tab, and the invisible format characters, Cf: a zero-width space or joiner, a soft hyphen). In the
# copy libphonenumber's matcher reads, a space of any kind is a space, an invisible character nothing, the dot, the
# slash and the brackets the matcher reads itself stay, and any other one (a dash of any kind, an underscore, a tilde,
# a bar, a colon, a star, a middle dot, a bullet, a minus sign, an apostrophe, the Braille blank ...) is a hyphen, or an
# en dash (U+2013) where the digits before it make a phone already: the matcher reads an en dash as a hyphen within a
# number and as the end of one between two numbers too long to be one ("0521234567_0547654321" is two phones; see
# `_with_plain_separators`): "054_765_4321", "054\n7654560", "054|7654718" read as 054-765-4321, 054 7654560,
# 054-7654718. A comma is one only when it stands alone between two digits ("054,765,4321"; the ", " of a list
# stays). What the copy makes of prices, dates, ranges and quantities ("5,000", "1,500-2,000", "2-3"; a dot
# stays: "12.03.2026") is told no phone by `_written_as_a_phone`; a time's colon stays ("09:00-12:00").
_GAP = re.compile(r"(?<=\d)[\W_]+(?=\d)")  # between two digits of any script
_KEPT_IN_A_GAP = frozenset(".()/[]")
_DASH = "\u2013"
_TIME = re.compile(r"(?<!\d)\d{1,2}(:)\d{2}(?!\d)")  # its colon stays: "09:00-12:00" is no 0900-1200


@functools.lru_cache(maxsize=1024)  # a description's gaps are mostly the same few
def _plain_gap(gap: str, dash: str = "-") -> str:
    """The gap as the matcher reads it. Among other characters (a space: "054 | 765", "5,000; 1'200", "12:00: 1,500"),
    only a dash, an underscore or a tilde is one: a bar, a colon, a comma ... with a space is a list's, a sentence's."""
    visible = [g for g in gap if unicodedata.category(g) != "Cf"]
    out: list[str] = []
    for g in visible:
        category = unicodedata.category(g)
        if g.isspace():
            out.append(" ")
        elif g in _KEPT_IN_A_GAP or category[0] not in "PSZ":
            out.append(g)  # a combining mark or a control character: what the matcher makes of it
        elif len(visible) == 1 or category == "Pd" or g in "_~":
            out.append(g if g == "-" else dash)
        else:
            out.append(g)
    return "".join(out)


# A run of characters that are no letters, with a digit in it: its separators are made plain only when it may hold a
# phone (`_may_hold_a_phone`), so that most descriptions are read by the matcher once. Searched for only from where such
# a run begins (the lookbehind): tried from each character of a long run it would be read again from each, a time
# quadratic in the run.
_RUN_WITH_A_DIGIT = re.compile(r"(?<![\W\d_])[\W\d_]*?\d[\W\d_]*")
_DIGIT_GROUP = re.compile(r"\d+")


def _may_hold_a_phone(run: str) -> bool:
    """Whether a phone `_written_as_a_phone` may start in the run: at a group of digits that is no thousands of a
    number ("5,000"), after a + or with a 0 and followed by as many digits as a national number has at the least, or
    with as many as one with its country code has ("5,000-7,000", "1,500,000-2,500,000", "2~3" hold none)."""
    groups = [(m.start(), m.end()) for m in _DIGIT_GROUP.finditer(run)]
    left = sum(end - start for start, end in groups)
    before = 0  # where the group before ends
    for i, (start, end) in enumerate(groups):
        thousands = i > 0 and end - start == 3 and run[before:start] == "," and groups[i - 1][1] - groups[i - 1][0] <= 3
        if not thousands and (
            left >= _MIN_WITH_COUNTRY_DIGITS
            or (left >= _MIN_NATIONAL_DIGITS and (unicodedata.decimal(run[start]) == 0 or "+" in run[before:start]))
        ):
            return True
        left -= end - start
        before = end
    return False


# What the matcher reads of the copy past such a run: a short word and the digits after it, perhaps an extension's
# marker and number ("ext. 12", "x12"; "ILS, on 12.03.2026" is read in the text as written only).
_AFTER_A_RUN = re.compile(r"[^\W\d_]{1,5}\.?[^\S\n]*\d[\W\d_]*")


def _with_plain_separators(text: str) -> tuple[str, list[int] | None, list[tuple[int, int]]]:
    """The text with the separators between digits as the matcher reads them, where each of its characters was
    written (character i of it is text[at[i]]; at[len] is len(text)), and the parts of it where a separator was made
    plain, which the matcher reads (with what follows them, an extension). The text itself, None and no part when no
    separator between digits reads otherwise (most descriptions: then the matcher reads the text once)."""
    if not any(_plain_gap(gap) != gap for gap in _GAP.findall(text)):  # a pass over the text: most have none
        return text, None, []
    pieces: list[str] = []
    at: list[int] = []
    parts: list[tuple[int, int]] = []  # of the text, made of the copy's below
    done = 0
    times = {t.start(1) for t in _TIME.finditer(text)} if ":" in text else set()
    for run in _RUN_WITH_A_DIGIT.finditer(text):
        if len(run.group()) < _MIN_NATIONAL_DIGITS or not _may_hold_a_phone(run.group()):
            continue
        made_plain = False
        digits = 0  # since the run's start, the last en dash written or the last date and its space
        reset = counted = run.start()  # where they were last set to 0, and counted up to
        for m in _GAP.finditer(text, run.start(), run.end()):
            gap = m.group()
            plain = _plain_gap(gap)
            if plain == gap or m.start() in times:
                continue
            # An en dash where the digits before it make a phone already, and end in a group of three at the least (a
            # phone's last group): the end of one ("0521234567_0547654321", "054-765-4321~052..."); a hyphen elsewhere
            # (the matcher tries each en dash of a number as the end of one: 5,000 characters of "0_0_0_..." took 60
            # ms so, 12 with hyphens).
            # A date and a space before are no phone's digits ("09/2026\n054|7654321"): searched from a little before
            # where the count is (a date the last gap ends in), not from where it was reset (a time quadratic in a run).
            for date in _DATE_AND_SPACE.finditer(text, max(reset, counted - _LOOKED_BEFORE), m.start()):
                reset = counted = date.end()
                digits = 0
            digits += len(_ANY_DIGIT.findall(text, counted, m.start()))
            counted = m.start()
            if digits >= _MIN_NATIONAL_DIGITS and text[m.start() - 3 : m.start()].isdigit():
                plain, digits = _plain_gap(gap, _DASH), 0
                reset = counted = m.end()
            made_plain = True
            pieces.append(text[done : m.start()])
            at.extend(range(done, m.start()))
            pieces.append(plain)
            if len(plain) == len(gap):
                at.extend(range(m.start(), m.end()))
            else:  # invisible characters dropped
                at.extend(k for k, g in enumerate(gap, start=m.start()) if unicodedata.category(g) != "Cf")
            done = m.end()
        if made_plain:
            after = _AFTER_A_RUN.match(text, run.end())
            end = after.end() if after else run.end()
            if parts and parts[-1][1] >= run.start():
                parts[-1] = (parts[-1][0], end)
            else:
                parts.append((run.start(), end))
    if not pieces:
        return text, None, []
    pieces.append(text[done:])
    at.extend(range(done, len(text) + 1))
    return "".join(pieces), at, [(bisect.bisect_left(at, start), bisect.bisect_left(at, end)) for start, end in parts]


def _in_ascii_digits_in_place(text: str) -> str:
    """The text with each digit of any script (category Nd: Arabic-Indic, Persian, full-width ...) its ASCII digit, one
    character for one."""
    if text.isascii():  # most descriptions: nothing to convert
        return text
    return _ANY_DIGIT.sub(lambda d: str(unicodedata.decimal(d.group())), text)


# Between the digits of the lead's own phone, anything that is neither a letter nor a digit, up to three of them
# ("054 - 765", "054)\n765", "054\u200b765"): the digits are the customer's, so no separator makes them a price.
_OWN_SEPARATOR = r"[\W_]{0,3}"
# A letter O for a zero, when it is no letter of a word ("O54-7654321"; not the o of "hello 54...").
_ZERO = r"(?:0|(?<![^\W\d_Oo])[Oo](?![^\W\d_Oo]))"
# The national significant number alone is searched for only when it is this long: a shorter one may be a quantity.
_OWN_NUMBER_ALONE_DIGITS = 7


def _digits_pattern(digits: str) -> str:
    return _OWN_SEPARATOR.join(_ZERO if d == "0" else d for d in digits)


def _own_phone_pattern(phone: str) -> re.Pattern[str] | None:
    """The lead's own phone (E.164) as a customer may write it: with its country code (+972 54..., 00972 54...,
    972 54..., +972 (0)54...), with its trunk prefix (054...) or without (54...), its digits in any script (read
    one for one as ASCII digits), a letter O for a zero, and anything between them (up to three characters that are
    no letter or digit)."""
    try:
        number = phonenumbers.parse(phone, None)
    except phonenumbers.NumberParseException:
        return None
    national = phonenumbers.national_significant_number(number)
    calling_code = number.country_code or 0  # parse sets it
    if not national or not calling_code:
        return None
    country = str(calling_code)
    metadata = phonenumbers.PhoneMetadata.metadata_for_region_or_calling_code(
        calling_code, phonenumbers.region_code_for_country_code(calling_code)
    )
    trunk = (metadata.national_prefix if metadata is not None else None) or ""
    prefixes = sorted(
        {p for p in ("00" + country + trunk, "00" + country, country + trunk, country, trunk) if p},
        key=len,
        reverse=True,
    )
    prefix = "|".join(_digits_pattern(p) for p in prefixes)
    optional = "?" if len(national) >= _OWN_NUMBER_ALONE_DIGITS else ""
    # Not within a longer run of digits: "6547654321" and "5476543210" are other numbers.
    return re.compile(
        rf"(?<![0-9])(?:[+\uff0b]\s?)?(?:(?:{prefix}){_OWN_SEPARATOR}){optional}{_digits_pattern(national)}(?![0-9])"
    )


# An address's tail after the local part: the @ (or " at ", "(at)", "[at]") and its domain, dots and all, or its
# letters spaced one by one ("g m a i l . c o m"), its dots perhaps spelled out ("gmail dot com").
_AT_WORD = r"(?:@|[(\[{<]\s*at\s*[)\]}>]|\bat\b)"
_DOMAIN = rf"(?:(?:\w[\s.]{{1,3}})+\w(?!\w)|[\w-]+(?:(?:\.|\s\.\s?|{_SPELLED_DOT})[\w-]+)*)"
_ADDRESS_TAIL = rf"({_OWN_SEPARATOR}{_AT_WORD}\s*{_DOMAIN})?"
# A local part is looked for without the rest of its address only when it has this many letters and digits at the
# least: "a b" for "ab@..." is as likely a plan's options.
_LOCAL_ALONE_AT_LEAST = 3
# and, written plainly, when a reader would not take it for a word: this many with a digit among them ("dan727"), or
# words joined ("dan.baker").
_LOCAL_PLAIN_AT_LEAST = 4


def _own_email_hider(email: str) -> tuple[re.Pattern[str], tuple[bool, bool]] | None:
    """The local part of the lead's own address as a customer may write it: its letters and digits with anything
    between them ("dan.baker322", "d a n 727", "dan_baker", "Dan Baker"), perhaps followed by the rest of the address
    ("@ gmail", "at gmail", "@ g m a i l . c o m"), hidden whole; and whether it is hidden without the rest of its
    address, spelled and written plainly (`_hidden_alone`)."""
    local_part = _local_part(email)
    local = [c for c in local_part if c.isalnum()]
    if not local:
        return None
    body = _OWN_SEPARATOR.join(re.escape(c) for c in local)
    return re.compile(rf"(?<![^\W_]){body}(?![^\W_]){_ADDRESS_TAIL}", re.IGNORECASE), _hidden_alone(local_part)


def _local_part(email: str) -> str:
    """The address's local part without its tag: mail to dana+leads@ is dana's, who is written to as dana@ as well."""
    local_part = email.partition("@")[0]
    untagged = local_part.partition("+")[0]
    return untagged or local_part


def _hidden_alone(local_part: str) -> tuple[bool, bool]:
    """Whether the local part is hidden without the rest of its address written after it: spelled with something
    between its letters ("d a n", "Dan Baker"), and written plainly. A plain word ("customer", "dana", "info") is
    hidden only as an address or so spelled, one of one or two letters only as an address."""
    local = [c for c in local_part if c.isalnum()]
    spelled = len(local) >= _LOCAL_ALONE_AT_LEAST
    plainly = len(local) >= _LOCAL_PLAIN_AT_LEAST and (
        any(c.isdigit() for c in local) or any(not c.isalnum() for c in local_part)
    )
    return spelled, plainly


_SEPARATORS = re.compile(r"[\W_]+")
# A letter O read as a zero is kept as one here (whether it stands for one is the pattern's to tell).
_NOT_DIGIT_OR_O = re.compile(r"[^0-9Oo]+")


def _without_separators(text: str) -> str:
    return _SEPARATORS.sub("", text)


def _digits_only(ascii_digits: str) -> str:
    """The digits of text whose digits are ASCII already (`_in_ascii_digits_in_place`), a letter O read as a zero."""
    return _NOT_DIGIT_OR_O.sub("", ascii_digits).replace("O", "0").replace("o", "0")


def _national_digits(phone: str) -> str:
    try:
        return phonenumbers.national_significant_number(phonenumbers.parse(phone, None))
    except phonenumbers.NumberParseException:
        return ""


def _may_hold(stripped_text: str, stripped_contact: str) -> bool:
    return bool(stripped_contact) and stripped_contact in stripped_text


def _hide_own_contact(text: str, phone: str | None, email: str | None) -> str:
    """The text with the lead's own phone and the local part of its own address hidden, however written: the
    service knows them, so what matches them is theirs whatever the separators, and nothing else is."""
    # Each lead's own patterns are compiled for it (about 1.4 ms a lead, most of an intake's time, were they built for
    # every lead), so first a test they could match at all: what they match are the contact's characters in order with
    # only separators (no letter or digit) between them, so with every separator taken out of the text those
    # characters stand together in it. Most descriptions hold neither, and cost a pass over the text.
    # Case-folded on both sides, as the pattern matches (IGNORECASE reads a long s, U+017F, as an s; lower() does not).
    if email and not _may_hold(
        _without_separators(text).casefold(), _without_separators(_local_part(email)).casefold()
    ):
        email = None
    if email:
        hider = _own_email_hider(email)
        if hider is not None:
            pattern, (spelled, plainly) = hider

            def hidden(m: re.Match[str]) -> str:
                if m.group(1) is not None:  # with the rest of the address
                    return EMAIL_HIDDEN
                return EMAIL_HIDDEN if (plainly if m.group().isalnum() else spelled) else m.group()

            text = pattern.sub(hidden, text)
    if phone:
        # Read after the address is hidden, as the search below: one for one, the spans found are the text's.
        digits = _in_ascii_digits_in_place(text)
        own_phone = _own_phone_pattern(phone) if _may_hold(_digits_only(digits), _national_digits(phone)) else None
        if own_phone is not None:
            pieces: list[str] = []
            at = 0
            for m in own_phone.finditer(digits):
                pieces += [text[at : m.start()], PHONE_HIDDEN]
                at = m.end()
            pieces.append(text[at:])
            text = "".join(pieces)
    return text


# An address without its top-level domain ("dan.baker322@gmail"), which the search for whole addresses leaves: a
# local part with a letter in it, against an @, then a domain of two letters or more starting with a letter ("2@12.50"
# is a price, "a@b" no address).
_ADDRESS_WITHOUT_TLD = re.compile(r"(?<![\w.%+-])([\w.%+-]+)@[^\W\d_][\w-]+")


def _hide_addresses_without_tld(text: str) -> str:
    return _ADDRESS_WITHOUT_TLD.sub(lambda m: EMAIL_HIDDEN if any(c.isalpha() for c in m.group(1)) else m.group(), text)


def _phone_spans(
    read: str,
    at_in_text: list[int] | None,
    country_code: str,
    region: str,
    parts: list[tuple[int, int]] | None = None,
    text: str = "",
    after: int = 0,
) -> list[tuple[int, int]]:
    """Where the phones the matcher finds in `read` (in the parts of it given, else all of it) are written in the text
    (`read` is the text, or its copy with plain separators, character i of it written at text[at_in_text[i]]), none
    read as a group of a number before `after`. A phone of the copy ends before a line's end or a tab when what is
    before them is a phone already (`_within_its_line`), and what follows them is read again."""
    spans: list[tuple[int, int]] = []
    at = after  # where the last phone found ends (in what is read): a phone written right after another is no group
    for part_start, part_end in parts if parts is not None else [(0, len(read))]:
        part = read[part_start:part_end] if parts is not None else read
        for m in phonenumbers.PhoneNumberMatcher(part, region, leniency=phonenumbers.Leniency.POSSIBLE):
            start, end = part_start + m.start, part_start + m.end
            if end <= at:
                continue
            # What is written just before the match tells a group of a longer number (a few characters of it: a copy
            # of all the text before each match would take a time quadratic in the text).
            before = read[max(at, start - _LOOKED_BEFORE) : start]
            if not _written_as_a_phone(m.raw_string, country_code) or _part_of_a_longer_number(before):
                continue
            if at_in_text is None:
                spans.append((start, end))
                at = end
                continue
            written_start, written_end = at_in_text[start], at_in_text[end - 1] + 1
            cut = _within_its_line(text, written_start, written_end, country_code, region)
            spans.append((written_start, cut))
            at = bisect.bisect_left(at_in_text, cut)
            if cut < written_end:  # the rest of the part, from the line's end or the tab, is read again
                spans += _phone_spans(read, at_in_text, country_code, region, [(at, part_end)], text, at)
                break
    return spans


_LINE_OR_TAB = re.compile(r"[^\S \u00a0\u2000-\u200a\u202f\u205f\u3000]")  # a space that is no space in a line


def _within_its_line(text: str, start: int, end: int, country_code: str, region: str) -> int:
    """Where a phone the copy with plain separators reads ends: before a line's end or a tab in it when what is written
    before them is a phone already ("054 7654321\n2 rooms": the 2 is another number), else where the copy's ends
    ("054\n7654560")."""
    while True:
        breaks = [m.start() for m in _LINE_OR_TAB.finditer(text, start, end)]
        if not breaks:
            return end
        before = text[start : breaks[-1]]
        read, at, parts = _with_plain_separators(before)
        found = _phone_spans(read, at, country_code, region, parts if at is not None else None, before)
        if not found or found[0][0] != 0:
            return end
        end = start + found[0][1]


def hide_contact_details(
    text: str, default_region: str = "IL", *, phone: str | None = None, email: str | None = None
) -> str:
    """The text with the phone numbers, email addresses and messenger handles in it replaced, for what businesses see
    of a lead before they pay for (or are assigned) its contact: a customer who writes "call me at 054-1234567" in the
    description would otherwise hand its contact to every business offered the lead, for nothing. The lead's own
    phone (E.164) and email, when given, are hidden however they are written as well (`_hide_own_contact`). Street
    addresses are left: told from a description of the work only by guessing ("12 Herzl St" and "2 rooms on Herzl
    St" read alike), they would hide too much that is no contact."""
    text = _hide_spelled_phones(_hide_addresses_without_tld(_hide_emails(text)))
    country_code = str(phonenumbers.country_code_for_region(default_region))
    # The matcher reads the text as written, and the copy with its separators plain, when it has any to make plain: the
    # phones of both are hidden. The text as written tells two phones joined by one separator apart
    # ("052-1234567,054-7654321", "0521234567_0547654321": in the copy one number of 20 digits, no phone); the copy a
    # phone whose digits a separator the matcher does not read divides ("054|7654718").
    spans = _phone_spans(text, None, country_code, default_region)
    read, at_in_text, parts = _with_plain_separators(text)
    if at_in_text is not None:
        spans += _phone_spans(read, at_in_text, country_code, default_region, parts, text)
    pieces: list[str] = []
    at = 0
    for start, end in sorted(spans):
        if end <= at:
            continue
        if start >= at:
            pieces += [text[at:start], PHONE_HIDDEN]
        at = end
    pieces.append(text[at:])
    # After the phones: a number after a messenger's name that is a phone is hidden as one ("whatsapp [phone hidden]").
    # The lead's own contact last: what the searches above hid is hidden as they hide it (an extension, a sentence's
    # full stop after an address kept), and what they leave of it is hidden here.
    return _hide_own_contact(_hide_handles("".join(pieces)), phone, email)

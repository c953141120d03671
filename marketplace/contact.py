"""Normalising contact details: phones to E.164 (libphonenumber), emails checked and lower-cased; and hiding the
contact details a customer writes into free text from those who have not paid for them."""

from __future__ import annotations

import re

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
    try:
        number = phonenumbers.parse(raw, default_region)
    except phonenumbers.NumberParseException as exc:
        message = _UNREADABLE.get(exc.error_type, "not a phone number (one is written like +972 50 123 4567)")
        raise InvalidInput.field(field, message) from exc
    # A number of a length its country's numbers have. Not checked against the ranges allocated today: the
    # library's list of them lags the carriers (+972 50-123-4567 is a mobile number it calls invalid), and a
    # customer refused for a number that works is a lead lost.
    if not phonenumbers.is_possible_number(number):
        raise InvalidInput.field(field, "not a possible phone number (too short or too long for its country)")
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_email(raw: str, field: str) -> str:
    if not raw.strip():
        raise InvalidInput.field(field, "required: an email address")
    try:
        # Mailboxes are case-insensitive in practice; one spelling keeps sign-ups unique.
        return validate_email(raw.strip(), check_deliverability=False).normalized.lower()
    except EmailNotValidError as exc:
        raise InvalidInput.field(field, str(exc)) from exc


# --- contact details written into free text -------------------------------------------------------------------

# An address in a customer's words: what a business would copy to write to it.
_EMAIL_IN_TEXT = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
# A number in the text counts as a phone when libphonenumber finds it possible and it is written as phones are:
# with its country code (+972 ...), or at least as many digits as a national number has (03-6123456, 054-1234567:
# nine or ten in Israel, more in Germany). Shorter runs are budgets, sizes, dates and order numbers (2000000, 90,
# 2025-03-04, 12345678), which the description may well hold.
_MIN_PHONE_DIGITS = 9
PHONE_HIDDEN = "[phone hidden]"
EMAIL_HIDDEN = "[email hidden]"


def hide_contact_details(text: str, default_region: str = "IL") -> str:
    """The text with the phone numbers and email addresses in it replaced, for what businesses see of a lead before
    they pay for (or are assigned) its contact: a customer who writes "call me at 054-1234567" in the description
    would otherwise hand its contact to every business offered the lead, for nothing."""
    text = _EMAIL_IN_TEXT.sub(EMAIL_HIDDEN, text)
    found = [
        m
        for m in phonenumbers.PhoneNumberMatcher(text, default_region, leniency=phonenumbers.Leniency.POSSIBLE)
        if m.raw_string.lstrip().startswith("+") or sum(c.isdigit() for c in m.raw_string) >= _MIN_PHONE_DIGITS
    ]
    for m in reversed(found):  # from the end, so that the earlier matches' positions still hold
        text = text[: m.start] + PHONE_HIDDEN + text[m.end :]
    return text

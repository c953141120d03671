"""Normalising contact details: phones to E.164 (libphonenumber), emails checked and lower-cased."""

from __future__ import annotations

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

"""Contact details: phones normalised to E.164, and what is refused said in the service's own words."""

from __future__ import annotations

import pytest

from marketplace.contact import normalise_phone
from marketplace.errors import InvalidInput


def test_a_local_number_is_read_in_the_default_region():
    assert normalise_phone("050-123-4567", "phone", "IL") == "+972501234567"


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("call me", "written like +972"),
        ("+999 123 456 789", "country code is unknown"),
        ("1", "not a phone number"),
        ("+972 5" + "1" * 250, "too long"),
        ("+972 5", "too short"),
    ],
)
def test_an_unreadable_phone_is_refused_for_its_field_with_a_plain_reason(raw, reason):
    with pytest.raises(InvalidInput) as refused:
        normalise_phone(raw, "contact.phone", "IL")
    (error,) = refused.value.errors
    assert error.field == "contact.phone" and reason in error.message
    assert "(1)" not in error.message and "string supplied" not in error.message

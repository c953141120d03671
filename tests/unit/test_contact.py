"""Contact details: phones normalised to E.164, what is refused said in the service's own words, and contact details
hidden in free text."""

from __future__ import annotations

import pytest

from marketplace.contact import hide_contact_details, mailbox, normalise_phone
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


@pytest.mark.parametrize(
    "raw",
    [
        "+972 54 CALL NOW",  # a keypad spelling: libphonenumber reads +972 54 225 5669
        "1-800-FLOWERS",
        "052-555-O199",  # a letter O for a zero: left out, the number is one digit short
        "054 12345 AB",  # 054-12345 is no mobile number, 054-1234522 (AB on a keypad) would be one
        "054 12345 \uff21\uff22",  # in full-width letters
        "0521 x 5551 x 234",  # not an extension: letters among the number's digits
        "+972 5 CALL",  # too short without its letters
    ],
)
def test_letters_in_a_phone_are_refused_not_read_as_digits(raw):
    with pytest.raises(InvalidInput) as refused:
        normalise_phone(raw, "contact.phone", "IL")
    (error,) = refused.value.errors
    assert error.field == "contact.phone" and "letters" in error.message


@pytest.mark.parametrize(
    "raw",
    [
        "+972 54 123 4567",
        "054-1234567",
        "(054) 123.4567",
        "+972 (54) 123-45-67",
        "054\u20131234567",  # an en dash
        "\uff0b972 54 123 4567",  # a full-width plus
        "\u0660\u0665\u0664\u0661\u0662\u0663\u0664\u0665\u0666\u0667",  # Arabic-Indic digits
        "tel: 054-1234567",  # a label before the number changes none of its digits
        "054-1234567 ext 12",  # an extension's marker neither
        "+972 54 123 4567 x12",
        "tel:+972-54-123-4567;ext=12",
        # A label after the number changes none of its digits (libphonenumber would read three letters or more of it
        # as a keypad spelling: "(cell)" as 2355, a number too long).
        "054-1234567 (cell)",
        "054-1234567 mobile",
        "054 123 4567 - Dana",
        "054-1234567, Eli",
        "054-1234567 (\u05e0\u05d9\u05d9\u05d3)",  # in Hebrew
        "054-1234567 x12 cell",
    ],
)
def test_a_phone_written_as_numbers_are_is_read(raw):
    assert normalise_phone(raw, "contact.phone", "IL") == "+972541234567"


@pytest.mark.parametrize(
    ("text", "region", "shown"),
    [
        (
            "Please call me at 054-123-4567 or mail dana.levi@gmail.com, I'm Dana",
            "IL",
            "Please call me at [phone hidden] or mail [email hidden], I'm Dana",
        ),
        ("call 0541234567 tomorrow", "IL", "call [phone hidden] tomorrow"),
        ("office 03-6123456, ask for Ron", "IL", "office [phone hidden], ask for Ron"),
        ("+972 52 765 4321 after six", "IL", "[phone hidden] after six"),
        ("ph: 972-54-1234567", "IL", "ph: [phone hidden]"),
        ("Rufen Sie 030 12345678 an", "DE", "Rufen Sie [phone hidden] an"),
        ("mail: a.b+c@sub.example.co.il.", "IL", "mail: [email hidden]."),
        ("00972 54 123 4567", "IL", "[phone hidden]"),
        ("050-1234567 / 050 123 4567, (054) 1234567", "IL", "[phone hidden] / [phone hidden], [phone hidden]"),
        ("טלפון: 054-1234567 תודה", "IL", "טלפון: [phone hidden] תודה"),
        ("Tel 0228 1234 oder 089 12345", "DE", "Tel [phone hidden] oder [phone hidden]"),
        ("E-Mail: müller@gmx.de", "DE", "E-Mail: [email hidden]"),
        ("דנה@דוגמה.ישראל", "IL", "[email hidden]"),
        # Digits of other scripts are digits: the prefix that tells a phone is read in them too.
        ("اتصل بي ٠٥٢٥٥٥١٢٣٤", "IL", "اتصل بي [phone hidden]"),
        ("شماره ۰۵۲۵۵۵۱۲۳۴", "IL", "شماره [phone hidden]"),
        ("Contact: ０５２５５５１２３４", "IL", "Contact: [phone hidden]"),  # noqa: RUF001
        ("x ٠٠٩٧٢٥٢٥٥٥١٢٣٤ y", "IL", "x [phone hidden] y"),
        ("x ٩٧٢٥٢٥٥٥١٢٣٤ y", "IL", "x [phone hidden] y"),
        ("x ＋９７２ ５２ ５５５ １２３４", "IL", "x [phone hidden]"),  # noqa: RUF001
        ("Anruf ٠٣٠ ١٢٣٤٥٦٧٨", "DE", "Anruf [phone hidden]"),
        # A phone with an extension is one (its number before the marker told it a phone), and hidden with it.
        ("call 054-1234567 ext 12 please, or 050 1234567 #3", "IL", "call [phone hidden] please, or [phone hidden]"),
        ("call 054-1234567 x12", "IL", "call [phone hidden]"),
        # Phones written one after another, a space between: each is hidden (the one before is no group of a longer
        # number, as an account number's are).
        ("call 0541234567 0521234567", "IL", "call [phone hidden] [phone hidden]"),
        ("054-1234567 052-1234567 03-6123456", "IL", "[phone hidden] [phone hidden] [phone hidden]"),
        # An address right after another, in the same run of characters: hidden too.
        ("x@b.com-y@c.com", "IL", "[email hidden][email hidden]"),
        ("-05a@b.com+9722025a@b.com05 ok", "IL", "[email hidden][email hidden] ok"),
        # An address with its @ spaced or spelled out, as a reader still copies it.
        ("mail: dana @ gmail.com. Thanks", "IL", "mail: [email hidden]. Thanks"),
        ("dana(at)gmail.com", "IL", "[email hidden]"),
        ("write dana [at] gmail dot com today", "IL", "write [email hidden] today"),
        ("dana {AT} walla [dot] co [dot] il", "IL", "[email hidden]"),
        # An address in full-width or look-alike characters is read in its compatibility form (NFKC); the span hidden
        # is the one written, whatever the lengths the normalising changes.
        ("write me: dana\uff20gmail.com, thanks", "IL", "write me: [email hidden], thanks"),
        ("dana@gmail\uff0ecom", "IL", "[email hidden]"),
        ("dana\ufe6bgmail.com or call", "IL", "[email hidden] or call"),
        (
            "\uff44\uff41\uff4e\uff41\uff20\uff47\uff4d\uff41\uff49\uff4c\uff0e\uff43\uff4f\uff4d ok",
            "IL",
            "[email hidden] ok",
        ),
        ("dana\uff08at\uff09gmail\uff0ecom", "IL", "[email hidden]"),
        ("\ufb01ne: cafe\u0301@example.de, Ma\u00dfe 3", "DE", "\ufb01ne: [email hidden], Ma\u00dfe 3"),
        # Dots spaced after an @ (or its spelled-out form) are an address's; a full stop ending a sentence is not.
        ("or dana @ walla . co . il, not via the site", "IL", "or [email hidden], not via the site"),
        ("dana@gmail .com or dana(at)gmail . com", "IL", "[email hidden] or [email hidden]"),
        ("mail dana @ gmail . com . Thanks", "IL", "mail [email hidden] . Thanks"),
        # A bare " at " is an @ when the dots after it are spelled out too and it ends in a mail domain.
        ("email dana at gmail dot com", "IL", "email [email hidden]"),
        ("or dana.levi at walla dot co dot il, thanks", "IL", "or [email hidden], thanks"),
        # A phone spelled out in words, in English or Hebrew, with "double" and "triple", some of its digits as digits.
        ("my phone is zero five four one two three four five six seven", "IL", "my phone is [phone hidden]"),
        ("call Oh-five-four, double one, triple two. Thanks", "IL", "call [phone hidden]. Thanks"),
        ("zero five four 1234567 after six", "IL", "[phone hidden] after six"),
        (
            "טלפון אפס חמש ארבע אחת שתיים שלוש ושבע",  # "phone zero five four one two three and seven"
            "IL",
            "טלפון [phone hidden]",
        ),
        # Messenger and social network handles and profile links: the handle hidden, the network's name kept.
        (
            "telegram @dana_plumb, instagram instagram.com/dana.plumb, fb facebook.com/dana.cohen",
            "IL",
            "telegram [handle hidden], instagram instagram.com/[handle hidden], fb facebook.com/[handle hidden]",
        ),
        (
            "https://t.me/dana_plumb or https://www.facebook.com/profile.php?id=100012345678. Thanks",
            "IL",
            "https://t.me/[handle hidden] or https://www.facebook.com/[handle hidden]. Thanks",
        ),
        (
            "m.me/dana.c, linkedin.com/in/dana-cohen/, TikTok.com/@dana, x.com/dana77, twitter.com/dana, fb.com/dana",
            "IL",
            "m.me/[handle hidden], linkedin.com/in/[handle hidden], TikTok.com/[handle hidden], x.com/[handle hidden], "
            "twitter.com/[handle hidden], fb.com/[handle hidden]",
        ),
        ("https://wa.me/+972541234567", "IL", "https://wa.me/[phone hidden]"),
        (
            "skype: dana.cohen77, name Dana Cohen, 12 Herzl St apt 4 Haifa",  # a street address is left: see the README
            "IL",
            "skype: [handle hidden], name Dana Cohen, 12 Herzl St apt 4 Haifa",
        ),
        (
            "Skype live:dana.c or skype id dana, telegram: dana",
            "IL",
            "Skype [handle hidden] or skype id [handle hidden], telegram: [handle hidden]",
        ),
        (
            "telegram dana_plumb, signal dana.01, viber 541234567",
            "IL",
            "telegram [handle hidden], signal [handle hidden], viber [handle hidden]",
        ),
        (
            "WhatsApp 054-1234567 or whatsapp: +972 54 123 4567",
            "IL",
            "WhatsApp [phone hidden] or whatsapp: [phone hidden]",
        ),
        (
            "זמין בוואטסאפ dana_plumb",
            "IL",
            "זמין בוואטסאפ [handle hidden]",
        ),  # "on WhatsApp"
        # Budgets, sizes, dates and order numbers are not phones.
        *(
            (kept, "DE", kept)
            for kept in (
                "Budget 20.000-25.000 €, 200000-250000 €",
                "zwischen 15.03.2025-20.03.2025, am 03.04.2025 um 10:00",
                "IBAN DE89 3704 0044 0532 0130 00",
                "Ma\u00dfe 0120 x 8000 x 7500 mm, Gr\u00f6\u00dfe 0521 x 5551 x 234",
            )
        ),
        *(
            (kept, "IL", kept)
            for kept in (
                "budget 100000 to 2000000, 4 rooms, 90 sqm, year 2026",
                "order no. 12345678 from 2025-03-04, 15,000-20,000 ILS",
                "Leaking pipe under the kitchen sink",
                "budget 50000-70000 NIS, 2 x 12345678, order 123456789",
                "תקציב 100000-120000",
                "price per m2 12000-15000",
                "תקציב ١٠٠٠٠٠-١٢٠٠٠٠, ٠٣.٠٤.٢٠٢٥",  # noqa: RUF001
                "order ١٢٣٤٥٦٧٨, ５００００-７００００ NIS",  # noqa: RUF001
                "2 @ 12.50 each, meet at home.com, I am @ home. Thanks",
                "I am @ home . See you at 5 . 30, meet @ home. thanks, 2 @ 12 . 50",
                "we meet at home . com or at walla . co . il",
                "\uff12 \uff20 \uff11\uff12\uff0e\uff15\uff10 each, 12\uff0e03\uff0e2025",
                "dimensions 0521 x 5551 x 234, 0521x5551x234 cm",
                "\u05de\u05d9\u05d3\u05d5\u05ea 0521 x 5551 x 234 \u05e1\u05f4\u05de",
            )
        ),
        # Words of the rules above written as words are kept: "at", digits in words, messengers, @, sites.
        *(
            (kept, "IL", kept)
            for kept in (
                "I want it at 5, a 3 bedroom at home, meet at home dot something",
                "look at the dot in the corner, at noon dot on the map",
                "one two three rooms, four or five days, fifty thousand, 2 x 12345678, one 12345678",
                "Oh, one more thing: double or triple glazing, seven to nine days",
                "skype me, skype dana, whatsapp only, whatsapp-only, telegram or phone, viber - later",
                "viber 5pm, whatsapp 2x",
                "the signal is weak, signal: weak, WiFi signal strength 5",
                "2 @12.50 each, @ home, a@b, box.com/dana, mybox.com/x, instagram.com",
                "שלוש חדרים, חמש ימים",  # "three rooms, five days"
            )
        ),
    ],
)
def test_contact_details_in_free_text_are_hidden_and_nothing_else(text: str, region: str, shown: str) -> None:
    assert hide_contact_details(text, region) == shown


# Adversarial descriptions (each within the schema's 5,000 characters, or its compatibility form far beyond them): read
# in a time linear in their length (the patterns start where a run begins, or at an @), and with the right result.
# No timings here: the ones measured are in the commit that made the patterns linear.
@pytest.mark.parametrize(
    "kept",
    [
        "a" * 5000,
        "a." * 2500,
        "a.-%+" * 1000,
        " " * 4999 + "x",
        "0" * 5000,
        "1" * 5000,
        "\uff10" * 5000,  # full-width zeros
        "05 " * 1666,
        "0-" * 2500,
        "x @ " + "b " * 2498,
        "a@" + "b." * 2499,  # no top-level domain
        "a @ b" + " . c" * 1248 + " . 1",
        "@" * 5000,
        "at " * 1666,
        "x at " + "b dot " * 830,  # no mail domain at its end
        "a at b dot c at " * 300,
        "one" + " " * 4990 + "x",
        "double " * 714,
        "skype " * 833,
        "skype id" + " " * 4990 + ":",
        "whatsapp " + "a" * 4990,
        "@a" * 2500,
        "1 " * 2500,
        "whatsapp 1" + "  1" * 1600,
    ],
    ids=lambda text: f"{text[:6]!r}x{len(text)}",
)
def test_long_runs_without_contact_details_are_kept(kept: str) -> None:
    assert hide_contact_details(kept, "IL") == kept


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("a" * 4990 + "@gmail.com", "[email hidden]"),  # a local part longer than 64: read back from its @
        ("b" * 64 + "@b.co and " + "c" * 65 + "@b.co", "[email hidden] and [email hidden]"),
        ("x" + " " * 4000 + "@ gmail.com", "[email hidden]"),
        ("dana@" + "b." * 2400 + "com", "[email hidden]"),
        ("0" * 4000 + " dana@gmail.com", "0" * 4000 + " [email hidden]"),
        ("\u3316" * 4000 + " dana\uff20gmail.com", "\u3316" * 3333 + "[text hidden]"),
        ("0541234567 " * 454, "[phone hidden] " * 454),
        ("0" * 4000 + ", call 054-1234567", "0" * 4000 + ", call [phone hidden]"),
        ("one " * 1250, "[phone hidden] "),
        ("x" + " " * 2000 + "at" + " " * 2000 + "b dot com", "[email hidden]"),
        ("whatsapp 1" + " 1" * 1600 + "x", "whatsapp [handle hidden]x"),
        ("instagram.com/" + "a." * 2490, "instagram.com/[handle hidden]."),
        ("@" + "a." * 2499, "[handle hidden]."),
    ],
    ids=[
        "local-part-4990",
        "local-part-64-65",
        "spaces-4000",
        "labels-2400",
        "zeros-4000",
        "km-4000",
        "phones-454",
        "zeros-then-phone",
        "digit-words-1250",
        "bare-at-spaces-4000",
        "messenger-number-1600",
        "profile-labels-2490",
        "handle-labels-2499",
    ],
)
def test_contact_details_after_long_runs_are_hidden(text: str, shown: str) -> None:
    assert hide_contact_details(text, "IL") == shown


def test_what_is_written_past_the_compatibility_form_searched_is_hidden_whole() -> None:
    # U+3316 is six letters in its compatibility form: 5,000 of them are 30,000, past the 20,000 searched.
    assert hide_contact_details("\u3316" * 5000, "IL") == "\u3316" * 3333 + "[text hidden]"
    assert hide_contact_details("a" * 100_000, "IL") == "a" * 20_000 + "[text hidden]"
    # Cut at the last space before the end of what was searched: the start of an address is not left shown.
    words = ("\u3316" * 9 + " ") * 500
    shown = hide_contact_details(words, "IL")
    assert shown.endswith(" [text hidden]") and words.startswith(shown.removesuffix("[text hidden]"))
    assert len(shown.removesuffix("[text hidden]")) == 3630  # 363 words of 54 letters and a space: 19,965 searched
    # Text as customers write it is never near the limit: full-width, accented, ligatures are read whole.
    text = "\uff41" * 4000 + " dana\uff20gmail.com \ufb01ne"
    assert hide_contact_details(text, "IL") == "\uff41" * 4000 + " [email hidden] \ufb01ne"


# Separators between a phone's digits that a filter of hyphens and spaces misses while a reader copies the number: any
# dash (Pd), any space (newline, tab), an invisible format character (Cf), an underscore, a comma, a tilde.
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("call 054\u20137654718 please", "call [phone hidden] please"),  # an en dash
        ("054\u20147654718, 054\u22127654718", "[phone hidden], [phone hidden]"),  # an em dash; a minus sign (Sm)
        ("054\n7654560", "[phone hidden]"),
        ("054\t7654818", "[phone hidden]"),
        ("054\u00a07654818", "[phone hidden]"),  # a no-break space
        ("054\u200b7654514 thanks", "[phone hidden] thanks"),  # a zero-width space
        ("a\u200b\u200b054\u200b\u200b765\u00ad4718 z", "a\u200b\u200b[phone hidden] z"),  # and a soft hyphen
        ("054_765_4321", "[phone hidden]"),
        ("054,765,4321", "[phone hidden]"),
        ("054~765~4321", "[phone hidden]"),
        ("054 \u2013 765 \u2013 4321 or 054_765_4322", "[phone hidden] or [phone hidden]"),
        # An address without its top-level domain is one a reader completes.
        ("mail dan.baker322@gmail please", "mail [email hidden] please"),
        ("dana@walla. Thanks", "[email hidden]. Thanks"),
    ],
)
def test_a_phone_with_any_separator_between_its_digits_and_an_address_without_tld_are_hidden(text, shown):
    assert hide_contact_details(text, "IL") == shown


# Any single character between two digits that is no letter or digit (punctuation, a symbol, a space, an invisible
# character) separates a phone's digits for a reader.
@pytest.mark.parametrize(
    "separator",
    [*"|*:'=+_~,\\^", "\u00b7", "\u2022", "\u2212", "\u2796", "\u2800", "\u2013", "\u00a0", "\u200b"],
    ids=lambda c: f"U+{ord(c):04X}",
)
def test_a_phone_is_hidden_whatever_single_character_separates_its_digits(separator):
    assert hide_contact_details(f"call 054{separator}7654718 today", "IL") == "call [phone hidden] today"


# Two phones joined by one separator are two phones, each hidden: read as one number of 20 digits they would be none.
@pytest.mark.parametrize(
    "text",
    [
        "052-1234567,054-7654321",
        "0521234567_0547654321",
        "0521234567\u20130547654321",
        "0521234567~0547654321",
        "0521234567|0547654321",
        "052-1234567, 054-7654321",
        "0521234567\n0547654321",
        "054-765-4321~052-765-4321",
        "054|7654718|052|1234567",
    ],
)
def test_two_phones_joined_by_a_separator_are_both_hidden(text):
    shown = hide_contact_details(text, "IL")
    assert shown.count("[phone hidden]") == 2
    assert not any(c.isdigit() for c in shown)


# A line's end or a tab after a phone ends it: the number on the next line or after the tab is another.
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("054 7654321\n2 rooms", "[phone hidden]\n2 rooms"),
        ("03-5551234\t12 sqm", "[phone hidden]\t12 sqm"),
        ("054\n7654321\n2 rooms", "[phone hidden]\n2 rooms"),
        ("call 054_7654321\r\n3 floors, 054|7654321\t4 m", "call [phone hidden]\r\n3 floors, [phone hidden]\t4 m"),
        ("054\n7654560", "[phone hidden]"),  # what is before the line's end is no phone: the digits after are its own
    ],
)
def test_a_number_after_a_line_s_end_or_a_tab_is_not_taken_into_the_phone(text, shown):
    assert hide_contact_details(text, "IL") == shown


# What the separators made plain would make a phone of is kept when it is written as prices, dates, ranges, times,
# quantities and model numbers are.
@pytest.mark.parametrize(
    "kept",
    [
        "5,000 ILS",
        "12.03.2026",
        "2-3 rooms",
        "1,500-2,000",
        "RTX-3080, RTX 3080, i7-12700",
        "hours 08:00-12:00, 09:30\u201317:30, at 07:45",
        "1'500'000, 3*4=12, 2+1 rooms, ratio 1:2, 0.5*1200",
        "12\u00b703\u00b72026, 03|04|2025, 12/03/2026",
        "budget 05,000 \u2022 3 rooms \u2022 2 baths",
    ],
)
def test_prices_dates_ranges_times_and_model_numbers_stay(kept):
    assert hide_contact_details(kept, "IL") == kept


# Read among other numbers, a phone is hidden and the numbers around it are kept: a date or a month before it is no
# group of it, a list's "; " or ": " or " | " joins nothing, and a time's colon or a thousands' comma written against
# the number after it makes that number part of theirs.
@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("09/2026 054|7654321, thanks", "09/2026 [phone hidden], thanks"),
        ("09/2026\n054|7654321", "09/2026\n[phone hidden]"),
        ("12.03.2026 054-7654321", "12.03.2026 [phone hidden]"),
        ("ref 0012-3456-78\t054|7654321", "ref [phone hidden]\t[phone hidden]"),
        ("tel 054-7654321; 2-3 rooms", "tel [phone hidden]; 2-3 rooms"),
        ("1,500-2,000 12.03.2026, 054|7654321; ", "1,500-2,000 12.03.2026, [phone hidden]; "),
        ("2+1 | 054|7654321 | RTX-3080", "2+1 | [phone hidden] | RTX-3080"),
    ],
)
def test_a_phone_among_other_numbers_is_hidden_and_they_are_kept(text, shown):
    assert hide_contact_details(text, "IL") == shown


@pytest.mark.parametrize(
    "kept",
    [
        "09/2026 3*4",
        "09/2026; 1'200",
        "50%: 2+1, 09:00-12:00 - 1'200 5,000 ILS",
        "09:00-12:00: 1,500-2,000, 3*4 - 0.5 kg",
        "0.5 kg\t09:00-12:00\n09/2026, tel",
        "budget 15,000-20,000 - 09/2026 12\u201314 days",
    ],
)
def test_numbers_joined_by_a_list_s_separators_are_no_phone(kept):
    assert hide_contact_details(kept, "IL") == kept


OWN_PHONE = "+972547654321"


# The lead's own phone and email, known to the service: hidden however written, and nothing else with them.
@pytest.mark.parametrize(
    ("text", "email", "shown"),
    [
        ("call O54-7654321", "dana@example.com", "call [phone hidden]"),  # a letter O for the zero
        ("call o54 765 432l", "dana@example.com", "call o54 765 432l"),  # an l for a one is no digit
        ("call 547654321 after six", "dana@example.com", "call [phone hidden] after six"),  # no trunk prefix
        ("972547654321 or 00972-54-765-4321", "dana@example.com", "[phone hidden] or [phone hidden]"),
        ("+972 (0)54 765 43 21. Thanks", "dana@example.com", "[phone hidden]. Thanks"),
        ("054 / 765 / 43 / 21", "dana@example.com", "[phone hidden]"),
        ("054)\n765+4321", "dana@example.com", "[phone hidden]"),
        ("x \u0660\u0665\u0664 \u0667\u0666\u0665 \u0664\u0663\u0662\u0661", "dana@example.com", "x [phone hidden]"),
        ("\uff10\uff15\uff14\u00b7\uff17\uff16\uff15\uff14\uff13\uff12\uff11", "dana@example.com", "[phone hidden]"),
        ("write dan.baker at gmail", "dan.baker@gmail.com", "write [email hidden]"),
        ("d a n 727 @ g m a i l . c o m thanks", "dan727@gmail.com", "[email hidden] thanks"),
        ("DAN_727 or dan727", "dan727@gmail.com", "[email hidden] or [email hidden]"),
        ("I am Dan Baker, dan-baker", "dan.baker@gmail.com", "I am [email hidden], [email hidden]"),
        ("dana at walla or d.a.n.a", "dana@walla.co.il", "[email hidden] or [email hidden]"),
        # A local part that is a word is hidden only as an address or with something between its letters.
        ("Dana here, the customer is me", "customer@example.com", "Dana here, the customer is me"),
        ("Dana here", "dana@walla.co.il", "Dana here"),
        ("dan727 or dan 7 2 7", "dan727@gmail.com", "[email hidden] or [email hidden]"),
        ("plan a b, plan ab, ab at home", "a.b@gmail.com", "plan a b, plan ab, [email hidden]"),
        ("I am dan, d a n", "dan@gmail.com", "I am dan, [email hidden]"),
    ],
)
def test_the_lead_s_own_contact_is_hidden_however_written(text, email, shown):
    assert hide_contact_details(text, "IL", phone=OWN_PHONE, email=email) == shown


# The own address's local part is read as the pattern reads it, case-folded (a long s, U+017F, is an s), and without
# its tag: mail to dana77+leads@ reaches dana77@.
@pytest.mark.parametrize(
    ("text", "email", "shown"),
    [
        ("write \u017fara77 today", "sara77@gmail.com", "write [email hidden] today"),
        ("write S\u017fARA77", "ssara77@gmail.com", "write [email hidden]"),
        ("write dan727 or d a n 7 2 7", "dan727+leads@gmail.com", "write [email hidden] or [email hidden]"),
        ("dana at gmail, d a n a, Dana here", "dana+x@gmail.com", "[email hidden], [email hidden], Dana here"),
    ],
)
def test_the_own_address_is_read_case_folded_and_without_its_tag(text, email, shown):
    assert hide_contact_details(text, "IL", phone=OWN_PHONE, email=email) == shown


def test_the_own_phone_read_with_a_letter_o_or_without_its_prefix_only_as_the_lead_s_own():
    # Without the lead's phone, no 9 digits without a prefix and no letter O are read as a phone (sizes, codes).
    assert hide_contact_details("call O54-7654321 or 547654321", "IL") == "call O54-7654321 or 547654321"
    assert hide_contact_details("code 547654322", "IL", phone=OWN_PHONE) == "code 547654322"


@pytest.mark.parametrize(
    "kept",
    [
        "budget 5,000-7,000 ILS, 15,000, 1,250,000, 0,5 kg",
        "on 03.04.2025, 3\u20134 days, 10\u201312 m2, 2 x 5 rooms, 12_000, 1~3 weeks, 5\u200b000",
        "rooms 3, 4, 5 and 054 is an area code, O5 zone, hello 54 times",
        "between 15.03.2025\u201320.03.2025, at 10:00\n12 m\t3 floors",
        "order 12345678, 54 765 rooms, 0547 654, 76543210, 6547654321",  # the own phone's digits in part or in more
        "Leaking pipe, the customer wants a quote, info at the site",
    ],
)
def test_ordinary_text_stays_with_the_lead_s_own_contact_known(kept):
    assert hide_contact_details(kept, "IL", phone=OWN_PHONE, email="customer.care@example.com") == kept
    assert hide_contact_details(kept, "IL") == kept


# Long runs of what the lead's own patterns are made of (digits, a letter O, separators, the local part's letters),
# read with the lead's own contact known: nothing of them is the contact, so all is kept ("dan727" is no "dan72": a
# digit follows it).
_OWN_RUNS = [
    *("0 " * 2500, "O" * 5000, "o5" * 2500, "5" * 5000, "0\u200b" * 2500),
    *("d a n " * 833, "dan7" * 1250, "dan727 at " * 500),
]


@pytest.mark.parametrize("kept", _OWN_RUNS, ids=lambda text: f"{text[:6]!r}x{len(text)}")
def test_long_runs_are_kept_with_the_lead_s_own_contact_known(kept):
    assert hide_contact_details(kept, "IL", phone=OWN_PHONE, email="dan72@gmail.com") == kept


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("0 " * 2400 + "call 054 765 4321", "0 " * 2400 + "call [phone hidden]"),
        ("O" * 4000 + " O54-7654321", "O" * 4000 + " [phone hidden]"),
        ("d a n " * 800 + "or dan72 @ gmail", "d a n " * 800 + "or [email hidden]"),
        ("5" * 4000 + " 054|765|4321", "5" * 4000 + " [phone hidden]"),
    ],
    ids=["zeros-then-phone", "letter-o-then-phone", "spelled-then-address", "fives-then-phone"],
)
def test_the_lead_s_own_contact_after_long_runs_is_hidden(text, shown):
    assert hide_contact_details(text, "IL", phone=OWN_PHONE, email="dan72@gmail.com") == shown


@pytest.mark.parametrize(
    ("email", "box"),
    [
        ("victim+0@gmail.com", "victim@gmail.com"),
        ("v.i.c.tim+a+b@googlemail.com", "victim@gmail.com"),
        ("V.Ictim@Gmail.com", "victim@gmail.com"),
        ("dana+leads@x.example", "dana@x.example"),
        ("d.ana@x.example", "d.ana@x.example"),  # dots are Gmail's to ignore, not every provider's
        ("+only@x.example", "+only@x.example"),  # nothing before the tag: the local part as it is
    ],
)
def test_an_address_s_mailbox_drops_its_tag_and_gmail_s_dots(email, box):
    assert mailbox(email) == box

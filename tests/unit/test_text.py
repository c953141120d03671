import pytest

from marketplace.text import blank, name_key, name_problem


@pytest.mark.parametrize(
    "text",
    ["", " ", "\t\n", "\u00a0", "\u3000", "\u200b", "\u200c\u200d", "\ufeff", "\u00ad", "\u200e\u200f", "\u2060",
     "\u2028\u2029", "\x00\x1f", " \u200b \ufeff ", "\u3164", "\u2800\u2800", "\u115f", "\uffa0", "\u034f",
     "\ufe0f"],
)
def test_text_showing_nothing_is_blank(text):
    assert blank(text)


@pytest.mark.parametrize(
    "text", ["a", " a ", "\u200bBeta", "\u05e9\u05dc\u05d5\u05dd", "7", "-", "\u00e9", "\U0001f600"]
)
def test_text_with_a_visible_character_is_not_blank(text):
    assert not blank(text)


@pytest.mark.parametrize(
    ("one", "other"),
    [
        ("Shady Pipes", "SHADY  PIPES."),
        ("Acme Ltd.", "acme ltd"),
        ("Öko Bau", "ÖKO BAU"),
        ("Straße Bau", "STRASSE-BAU"),
        ("\uff26\uff55\uff4c\uff4c \uff37\uff49\uff44\uff54\uff48", "full width"),  # full-width letters
        ("\u05e9\u05dc\u05d5\u05dd", " \u05e9\u05dc\u05d5\u05dd! "),
        ("!!!", "! ! !"),
    ],
)
def test_names_written_differently_are_one_name(one, other):
    assert name_key(one) == name_key(other)


@pytest.mark.parametrize(("one", "other"), [("Öko Bau", "Oko Bau"), ("Pipes 1", "Pipes 2"), ("!!!", "???")])
def test_different_names_are_told_apart(one, other):
    assert name_key(one) != name_key(other)


@pytest.mark.parametrize(
    ("name", "problem"),
    [
        ("Dana\n\nYour account is suspended", "one line"),
        ("Dana\r\nX", "one line"),
        ("Dana\tCohen", "one line"),
        ("Dana\u2028Cohen", "one line"),
        ("Dana, verify at http://evil.example/login", "not a link"),
        ("HTTPS://x.example", "not a link"),
        ("see www.evil.example", "not a link"),
        (" \u200b ", "blank"),
        ("Dana\u202eevil", "direction overrides"),
        ("Dana, pay at secure-pay-il.com/deposit", "not a link"),
        ("Dana, write to billing@secure-pay-il.com", "email"),
        ("mailto:x@evil.com", "not a link"),
        ("\uff57\uff57\uff57\uff0eevil\uff0ecom", "not a link"),
        ("_www.evil.com", "not a link"),
        ("Dana\u2067x\u2069", "direction overrides"),
    ],
)
def test_a_name_is_one_line_of_visible_text_without_a_link(name, problem):
    found = name_problem(name)
    assert found is not None and problem in found


@pytest.mark.parametrize(
    "name",
    [
        "Dana Cohen",
        "\u05d3\u05e0\u05d4 \u05db\u05d4\u05df",
        "Plumb.co.il",
        "O'Brien & Sons",
        "Dr. A: B",
        "Dana Cohen\n",
        "\tDana Cohen\r\n",
        "\u05d3\u05e0\u05d4\u200f 3",
        "Dr.Cohen/Levi Clinic",
        "Hauptstr.5/7 Bau",
        "Studio 2.0/3D",
        "Rated 4.9/5 Plumbing",
        "Mr.Fix/It",
        "Awww.Cakes",
        "Cohen Plumbing 24/7",
        "A.B. Cohen",
        "M\u00fcller & S\u00f6hne GmbH",
    ],
)
def test_a_one_line_name_without_a_link_is_a_name(name):
    assert name_problem(name) is None

import pytest

from marketplace.text import blank, name_key


@pytest.mark.parametrize(
    "text",
    ["", " ", "\t\n", "\u00a0", "\u3000", "\u200b", "\u200c\u200d", "\ufeff", "\u00ad", "\u200e\u200f", "\u2060",
     "\u2028\u2029", "\x00\x1f", " \u200b \ufeff "],
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

import pytest

from marketplace.text import blank


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

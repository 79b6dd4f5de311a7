"""SQuAD-style normalisation and gold containment (method/MRALIGN.md §9 items 6, 9), and the search used on
long texts equal to the definition."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mralign_plugin.core.answers import contains_gold, normalize_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("The Lion King", "lion king"),
        ("  A  cat, an owl & THE dog!  ", "cat owl dog"),
        ("U.S.A.", "usa"),
        ("1,000 km", "1000 km"),
        ("Théâtre", "théâtre"),  # non-ASCII letters are kept, only case folds
        ("the", ""),
        ("", ""),
    ],
)
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "aliases", "hit"),
    [
        ("It was written by Tim Rice.", ["Tim Rice"], True),
        ("tim rice", ["The Tim Rice"], True),  # articles stripped on both sides
        ("Elton John", ["Tim Rice", "Elton John"], True),  # any alias
        ("Canada", ["can"], False),  # whole words only
        ("in 1994,", ["1994"], True),
        ("Paris, France", ["paris france"], True),
        ("anything", ["The"], False),  # an alias that normalises to nothing never matches
        ("anything", [], False),
        ("", ["x"], False),
    ],
)
def test_contains_gold(text, aliases, hit):
    assert contains_gold(text, aliases) is hit


# --- long texts: the search equals the definition -----------------------------------------------


def defined(text: str, aliases: list[str]) -> bool:
    """contains_gold as the module docstring defines it: normalise both, look for " alias " in " text "."""
    haystack = f" {normalize_answer(text)} "
    return any(needle and f" {needle} " in haystack for needle in map(normalize_answer, aliases))


# Articles next to punctuation that normalisation deletes or keeps, non-ASCII letters in both cases,
# characters whose lower case is ASCII (Kelvin sign, dotted capital I), odd whitespace, surrogates.
WORDS = ["the", "a", "an", "Paris", "paris.", "lion", "King", "u.s.", "U.S", "\u2014", "\u2019s", "the-lion", "A", "x_y",
         "\t", "\n\n", "\u00e9", "\u0130", "\u212a", "1927", "(the)", "an't", "\x1c", "\x00", "the\u2014", "\u2014the",
         "\u00c9LAN", "\u00e9lan", "\u00a0", "th\u00e9", "\u00df", "SS", "\ud800", "\u01c5"]


@settings(max_examples=2000, deadline=None)
@given(
    words=st.lists(st.sampled_from(WORDS) | st.text(max_size=4), min_size=1, max_size=40),
    gold=st.lists(st.lists(st.sampled_from(WORDS), min_size=1, max_size=3).map(" ".join) | st.text(max_size=6),
                  min_size=1, max_size=3),
    separator=st.sampled_from([" ", "", "\n"]),
    repeat=st.booleans(),
)
def test_long_texts_equal_the_definition(words, gold, separator, repeat):
    text = separator.join(words)
    text = (text + " ") * (300 // (len(text) + 1) + 1) if repeat else "some words before it " * 15 + text
    assert len(text) > 256  # the search, not the plain definition
    assert contains_gold(text, gold) == defined(text, gold)
    ascii_text = text.encode("ascii", "ignore").decode()
    assert contains_gold(ascii_text, gold) == defined(ascii_text, gold)


@pytest.mark.parametrize(
    ("gold", "hit"),
    [
        (["lion king"], True), (["USbased"], True), (["US based"], False), (["paris"], True), (["the paris"], True),
        (["Lyon"], False), (["city of lion"], True), (["a"], False), (["\u00c9lan vital"], True), (["k\u00e9lvin"], False),
        (["kelvin scale"], True), (["istanbul"], False), (["i\u0307stanbul"], True), (["lion —king"], False),
    ],
)
def test_long_trace_cases(gold, hit):
    """Articles and punctuation between words, non-ASCII gold, a Kelvin sign (lower case "k") and a dotted
    capital I (lower case "i" + U+0307) in the text."""
    text = ("Let me recall the capital. " * 12 + "It is the  U.S.-based city of the the Lion King, (Paris)! "
            "An \u00c9LAN VITAL, the \u212aelvin scale, \u0130stanbul.")
    assert contains_gold(text, gold) == defined(text, gold) == hit

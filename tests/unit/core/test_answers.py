"""SQuAD-style normalisation and gold containment (method/MRALIGN.md §9 items 6, 9)."""

import pytest

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

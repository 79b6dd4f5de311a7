"""Answer normalisation and gold containment (method/MRALIGN.md §9 items 6 and 9).

The paper scores answers with "Exact Match", described as checking whether the reference appears
in the target string. We implement that reading: SQuAD-style normalisation of both sides (lower-case,
drop punctuation, drop the articles a / an / the, collapse whitespace), then a hit when any gold alias
is contained in the text as a whole-word span.

Example:
    >>> normalize_answer("The  Lion King!")
    'lion king'
    >>> contains_gold("<answer>It was Nala, the lioness.</answer>", ["nala"])
    True
    >>> contains_gold("Canada", ["can"])
    False
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, strip punctuation and articles, collapse whitespace.

    Interpretation: "whole word" is enforced by :func:`contains_gold`, not here, so this stays the
    exact SQuAD function that other tools' numbers are computed with.
    """
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


def contains_gold(text: str, aliases: Iterable[str]) -> bool:
    """True when some normalised gold alias occurs in the normalised ``text`` on word boundaries.

    Word boundaries keep short aliases honest ("can" is not in "canada"); an alias that normalises
    to the empty string (e.g. "The") never matches.

    Args:
        text: the extracted answer (or thought) to search.
        aliases: gold answers; any match counts (NQ-Open has several per question).
    """
    haystack = f" {normalize_answer(text)} "
    for alias in aliases:
        needle = normalize_answer(alias)
        if needle and f" {needle} " in haystack:
            return True
    return False

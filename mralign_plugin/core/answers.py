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

import functools
import re
import string
from collections.abc import Iterable
from typing import NamedTuple

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation)
_PUNCT_BYTES = string.punctuation.encode("ascii")
_ASCII_LOWER = bytes.maketrans(string.ascii_uppercase.encode(), string.ascii_lowercase.encode())  # bytes.lower()
_SHORT = 256  # texts up to this length are simply normalised (answers); longer ones (thoughts) are searched
# Non-ASCII characters whose lower case contains ASCII: with neither present, ASCII lower-casing of
# the bytes finds every ASCII word that str.lower() would.
_LOWER_TO_ASCII = ("\u0130", "\u212a")  # dotted capital I, Kelvin sign
# After a token of the normalised text: whitespace, the end, or an article word (normalisation deletes it).
_TOKEN_END = r"(?=\s|\Z|(?<!\w)(?:a|an|the)(?!\w))"
_GAP = r"(?:\s|(?<!\w)(?:a|an|the)(?!\w))+"  # between two tokens: whitespace and article words
_ARTICLE_BEFORE = re.compile(r"\b(?:a|an|the)\Z")


def normalize_answer(text: str) -> str:
    """SQuAD v1.1 normalisation: lower-case, strip punctuation and articles, collapse whitespace.

    Interpretation: "whole word" is enforced by :func:`contains_gold`, not here, so this stays the
    exact SQuAD function that other tools' numbers are computed with.
    """
    text = text.lower().translate(_PUNCT)
    return " ".join(_ARTICLES.sub(" ", text).split())


class _Needle(NamedTuple):
    text: str  # the normalised alias
    words: tuple[bytes, ...]  # its words in UTF-8, longest first (the cheapest rejection test)
    ascii_words: tuple[bytes, ...]  # those of them that are ASCII
    pattern: re.Pattern | None  # its words in the punctuation-free lower-cased text, see _contains_long


@functools.lru_cache(maxsize=4096)  # aliases repeat: every rollout of a prompt has the same gold
def _needle(alias: str) -> _Needle:
    text = normalize_answer(alias)
    words = tuple(w.encode("utf-8", "surrogatepass") for w in sorted(text.split(), key=len, reverse=True))
    pattern = re.compile(_GAP.join(map(re.escape, text.split())) + _TOKEN_END) if text else None
    return _Needle(text, words, tuple(w for w in words if w.isascii()), pattern)


def contains_gold(text: str, aliases: Iterable[str]) -> bool:
    """True when some normalised gold alias occurs in the normalised ``text`` on word boundaries.

    Word boundaries keep short aliases honest ("can" is not in "canada"); an alias that normalises
    to the empty string (e.g. "The") never matches.

    Args:
        text: the extracted answer (or thought) to search.
        aliases: gold answers; any match counts (NQ-Open has several per question).
    """
    needles = [n for n in map(_needle, aliases) if n.text]
    if not needles:
        return False
    if len(text) <= _SHORT:
        haystack = f" {normalize_answer(text)} "
        return any(f" {n.text} " in haystack for n in needles)
    return _contains_long(text, needles)


def _contains_long(text: str, needles: list[_Needle]) -> bool:
    """:func:`contains_gold` on a long text (a 4 KB thought) without normalising all of it.

    1. Rejection: every word of a needle must occur in the lower-cased text without punctuation,
       tested on bytes; most thoughts stop here. ASCII lower-casing of the bytes is enough unless
       some character lower-cases to ASCII (see _LOWER_TO_ASCII) or a needle word is not ASCII.
    2. Search, in P = the lower-cased text without punctuation (what normalisation works on): the
       needle's words separated by runs of whitespace and article words (which normalisation turns
       into one space), starting where a token of the normalised text starts (the start, after
       whitespace, or after an article word) and ending where one ends. That is exactly "the needle
       is a run of whole tokens of the normalised text". The property test in
       tests/unit/core/test_answers.py checks it against the definition.
    """
    try:  # one byte per character, and no character below 256 lower-cases to ASCII
        raw, encoding = text.encode("latin-1"), "latin-1"
    except UnicodeEncodeError:
        raw, encoding = text.encode("utf-8", "surrogatepass"), "utf-8"
    folded_bytes = None
    if encoding == "latin-1" or not (_LOWER_TO_ASCII[0] in text or _LOWER_TO_ASCII[1] in text):
        # No character lower-cases to ASCII, so ASCII lower-casing of the bytes puts every ASCII word
        # of P where P has it, and other characters keep their case, which changes none of the tests
        # of the search (whitespace, word character): enough for needles that are ASCII.
        folded_bytes = raw.translate(_ASCII_LOWER, _PUNCT_BYTES)  # one pass
        needles = [n for n in needles if all(w in folded_bytes for w in n.ascii_words)]
        if text.isascii():
            needles = [n for n in needles if len(n.ascii_words) == len(n.words)]
        elif any(len(n.ascii_words) < len(n.words) for n in needles):
            folded_bytes = None  # a needle with a non-ASCII word: use the text lower-cased as a str
    if folded_bytes is None:  # str.translate is slow on non-ASCII text; ASCII bytes never occur inside UTF-8
        encoding = "utf-8"
        folded_bytes = text.lower().encode("utf-8", "surrogatepass").translate(None, _PUNCT_BYTES)
        needles = [n for n in needles if all(w in folded_bytes for w in n.words)]
    if not needles:
        return False
    folded = folded_bytes.decode(encoding, "surrogatepass")
    for needle in needles:
        match = needle.pattern.search(folded)
        while match is not None:
            start = match.start()
            if start == 0 or folded[start - 1].isspace() or (  # a token starts here (see step 2)
                not (folded[start].isalnum() or folded[start] == "_")
                and _ARTICLE_BEFORE.search(folded, max(start - 3, 0), start)
            ):
                return True
            match = needle.pattern.search(folded, start + 1)
    return False

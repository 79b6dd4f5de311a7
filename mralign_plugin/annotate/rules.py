"""The offline cue tagger: one step per thinking paragraph, 1-2 of the 15 states (method/MRALIGN.md §4.2-4.3).

The paper annotates with an LLM ensemble (§4.5). This tagger is our cheap stand-in, used by
``mralign annotate --annotator rules`` and online by the PPO reward, so it must run at tens of
thousands of paragraphs per second on one core. It is a bag of lexical cues written from the
paper's label definitions (App. B.6; the tables and knobs are annotate/cues.py), plus three structural cues:

* position: the first paragraph leans ``framing``, the last one ``summarization``;
* named entities and numbers in mid-sentence lean ``retrieval`` (recalled facts);
* a question mark after the first paragraph leans ``self_verification`` (self-questioning).

Every cue adds a weight to one or more states; the top state is kept, and the runner-up too when
it is strong on its own (``SECOND_MIN``) and close to the top (``SECOND_RATIO``). A paragraph with
no cue at all falls back to ``retrieval``, the most frequent state of the paper's training data
(Table 7). Ties go to the more frequent state in that table.

Speed: all paragraphs of a thinking are tagged in one call, on a one-byte-per-character view of the
text. Compiled (``_rules_c.c``, built at install when a C compiler is there; ``COMPILED`` says so), a
trie of the cues is walked from each word start. Otherwise :func:`_tag_spans_py` finds the cues with
one call to a compiled Aho-Corasick automaton (``ahocorasick_rs``) and scores them in Python. Both give
exactly the result of the plain per-paragraph definition (``CUE_RE`` and ``ENTITY_RE`` on each
paragraph); property tests check it.

Example:
    >>> tag_paragraph("Wait, that's not right. Let me reconsider the date.", position=3, n_paragraphs=6)
    ('backtracking',)
    >>> tag_paragraph("So the answer is Paris.", position=5, n_paragraphs=6)
    ('summarization',)
"""

from __future__ import annotations

import array
import re
import warnings

import ahocorasick_rs

from mralign_plugin.annotate.cues import (
    CUE_RE,
    CUE_WEIGHTS,
    ENTITY_CAP,
    ENTITY_WEIGHT,
    FALLBACK,
    FIRST_BONUS,
    LAST_BONUS,
    QUESTION_WEIGHT,
    SECOND_MIN,
    SECOND_RATIO,
    STATE_INDEX,
    STATES,
    TIE_BREAK,
)
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

# ---- the fast path: the same matches, found by a compiled automaton on a byte view -----------------------
#
# Python's regex engine tries CUE_RE at every word start (~150 ns each, most of the tagger's time).
# The compiled path walks _cue_trie() from each word start of the cue view below (see _rules_c.c).
# The Python path finds the cues of a whole thinking in one call to a compiled Aho-Corasick automaton
# (ahocorasick_rs, a DFA in Rust) on a "cue view" of the text: one byte per character, letters
# lower-cased, every other word character "0" (no cue contains one) and every non-word character
# kept when cues contain it (" ,-'.") or "#" otherwise. Each cue is a pattern followed by each
# possible non-word byte, so a pattern ends exactly where CUE_RE's end boundary holds, and the
# automaton's leftmost-longest, non-overlapping matches are CUE_RE's. Patterns cannot require a word
# boundary before them, so a hit may start inside a word ("measure" holds "sure "): a one-word hit
# there is dropped (no cue could start inside it); a longer one may cover the start of a real cue, so
# the search starts again at the end of that word (no cue starts inside a word), which keeps the
# result exact.
#
# The bytes are the text's Latin-1 encoding when it has one (most text: a copy), else its ASCII
# encoding with "?" for the rest, whose word characters are then marked one by one. Lower-casing a
# Latin-1 character never changes its length or makes it ASCII, so the view of its byte is fixed.
_CUE_PUNCTUATION = b" ,-'."  # every non-word character that occurs in some cue


def _cue_view_byte(c: int) -> int:
    ch = chr(c).lower()
    assert len(ch) == 1 and ch.isascii() == (c < 128), ch  # true of every Latin-1 character
    if ch.isalnum() or ch == "_":
        return ord(ch) if "a" <= ch <= "z" else 48  # "0"
    return c if c in _CUE_PUNCTUATION else 35  # "#"


_CUE_VIEW = bytes(_cue_view_byte(c) for c in range(256))
_IN_WORD = tuple(c in b"0abcdefghijklmnopqrstuvwxyz" for c in range(256))  # a word character, in the cue view
_WORD = re.compile(rb"[0a-z]*")  # the rest of a word, in the cue view


def _cue_matcher() -> tuple[ahocorasick_rs.BytesAhoCorasick, list[tuple[tuple[int, float], ...]], list[bool]]:
    """The automaton, and for each of its patterns the cue's weights and whether the cue is one word."""
    patterns, weights, one_word = [], [], []
    for cue, cue_weights in CUE_WEIGHTS.items():
        ends = [b""] if cue.endswith(",") else [bytes([c]) for c in _CUE_PUNCTUATION + b"#"]
        for end in ends:
            patterns.append(cue.encode("ascii") + end)
            weights.append(cue_weights)
            one_word.append(cue.isalpha())
    matcher = ahocorasick_rs.BytesAhoCorasick(
        patterns, matchkind=ahocorasick_rs.MatchKind.LeftmostLongest, implementation=ahocorasick_rs.Implementation.DFA
    )
    return matcher, weights, one_word


_CUE_MATCHER, _PATTERN_WEIGHTS, _PATTERN_ONE_WORD = _cue_matcher()
# Character classes for the entity counts: a-z -> a, A-Z -> A, 0-9 -> 0, ",;:" -> ",", " " stays,
# anything else (non-ASCII included) -> ".". ENTITY_RE's matches are then an "A" after "[a0,] " and
# before a letter (a capitalised word or acronym) and runs of 2+ digits; both patterns open with a literal.
_CLASS_VIEW = bytes(
    97 if 97 <= c <= 122 else 65 if 65 <= c <= 90 else 48 if 48 <= c <= 57 else 44 if c in b",;:" else
    32 if c == 32 else 46 for c in range(256)
)
_CAPITALISED = re.compile(rb"A(?<=[a0,] A)[aA]")
_NUMBER = re.compile(rb"00+")
_MAX_NON_ASCII = 256  # beyond this many non-ASCII characters, the reference path is cheaper

_FIRST, _FIRST_W = STATE_INDEX[FIRST_BONUS[0]], FIRST_BONUS[1]
_LAST, _LAST_W = STATE_INDEX[LAST_BONUS[0]], LAST_BONUS[1]
_RETRIEVAL, _VERIFY, _FALLBACK = STATE_INDEX["retrieval"], STATE_INDEX["self_verification"], (FALLBACK,)


def _text_bytes(text: str) -> tuple[bytes, bool]:
    """``text`` as one byte per character: its Latin-1 encoding (True), else ASCII with "?" for the rest."""
    try:
        return text.encode("latin-1"), True
    except UnicodeEncodeError:
        return text.encode("ascii", "replace"), False


def _cue_view(text: str, raw: bytes, latin1: bool, spans: list[tuple[int, int]]) -> bytearray | None:
    """The cue view of ``text`` (``raw``, ``latin1`` from :func:`_text_bytes`), or None.

    The bytes just before and after each span are "#", so the view of a span is that of the span
    alone. Beyond Latin-1, each "?" that stands for a word character becomes "0"; None (use the
    reference path) when lower-casing some character changes a length or yields ASCII (the Kelvin
    sign, a dotted capital I), or when such text is long.
    """
    view = bytearray(raw).translate(_CUE_VIEW)
    if not latin1:
        n_non_ascii = 0
        i = raw.find(b"?")
        while i >= 0:
            ch = text[i]
            if ch != "?":
                n_non_ascii += 1
                low = ch.lower()
                if n_non_ascii > _MAX_NON_ASCII or len(low) != 1 or low.isascii():
                    return None
                if low.isalnum() or low == "_":
                    view[i] = 48  # "0"
            i = raw.find(b"?", i + 1)
    for start, end in spans:
        view[start - 1] = view[end] = 35  # "#"
    return view


def _cue_scores(text: str, raw: bytes, latin1: bool, spans: list[tuple[int, int]]) -> list[list[float]] | None:
    """The score of each state in each span after its cues (_reference_scores of the span), or None: use that."""
    view = _cue_view(text, raw, latin1, spans)
    if view is None:
        return None
    found = [TIE_BREAK.copy() for _ in spans]
    weights, one_word, in_word = _PATTERN_WEIGHTS, _PATTERN_ONE_WORD, _IN_WORD
    k, (span_start, span_end), scores = 0, spans[0], found[0]
    hits, offset, i = _CUE_MATCHER.find_matches_as_indexes(view), 0, 0
    while i < len(hits):
        pattern, start, _ = hits[i]
        start += offset
        i += 1
        while start >= span_end:  # a hit after this span: move on (hits are in order)
            k += 1
            if k == len(spans):
                return found
            (span_start, span_end), scores = spans[k], found[k]
        if start < span_start:  # between spans
            continue
        if in_word[view[start - 1]]:  # the hit starts inside a word: not a cue...
            if not one_word[pattern]:  # ...but it covers the next word, where one may start: search again there
                offset = _WORD.match(view, start).end()
                hits, i = _CUE_MATCHER.find_matches_as_indexes(memoryview(view)[offset:]), 0
            continue
        for state, weight in weights[pattern]:
            scores[state] += weight
    return found


def _reference_scores(paragraph: str) -> list[float]:
    """The score of each state after the cues of one paragraph (CUE_RE, the definition): tie epsilon + weights."""
    scores = TIE_BREAK.copy()
    for phrase in CUE_RE.findall(paragraph.lower()):
        for state, weight in CUE_WEIGHTS[phrase]:
            scores[state] += weight
    return scores


def tag_spans(text: str, spans: list[tuple[int, int]]) -> list[tuple[str, ...]]:
    """:func:`tag_paragraph` of ``text[a:b]`` for each span, as the paragraphs of one thinking in order.

    Args:
        text: a text holding the paragraphs, e.g. a whole response.
        spans: ``(start, end)`` of each paragraph, in order, with at least one character between two
            spans (as ``parse_response(text).paragraphs``).
    """
    if not spans:
        return []
    if spans[0][0] == 0 or spans[-1][1] == len(text):  # pad: _tag_spans needs a character around each span
        return _tag_spans(f"\n{text}\n", [(a + 1, b + 1) for a, b in spans], 0, len(spans))
    return _tag_spans(text, spans, 0, len(spans))


def _tag_spans(text: str, spans: list[tuple[int, int]], position: int, n_paragraphs: int) -> list[tuple[str, ...]]:
    """States of ``text[a:b]`` for each span, the first at ``position``; 0 < a, b < len(text) (see tag_spans)."""
    if _compiled is not None:
        states = _compiled.tag(text, spans, position, n_paragraphs)
        if states is not None:
            return states
    return _tag_spans_py(text, spans, position, n_paragraphs)


def _tag_spans_py(text: str, spans: list[tuple[int, int]], position: int, n_paragraphs: int) -> list[tuple[str, ...]]:
    """:func:`_tag_spans` in Python: what ``_rules_c.tag`` computes, the same float operations in the same order."""
    raw, latin1 = _text_bytes(text)  # one byte per character, so spans index it too
    classes = bytearray(raw).translate(_CLASS_VIEW)
    for start, end in spans:  # what surrounds a span is not seen by the entity counts
        classes[start - 1] = classes[end] = 46  # "."
    find_capitalised, find_numbers = _CAPITALISED.findall, _NUMBER.findall
    out = []
    found = _cue_scores(text, raw, latin1, spans)
    if found is None:
        found = [_reference_scores(text[start:end]) for start, end in spans]
    for (start, end), scores in zip(spans, found, strict=True):
        if position == 0:
            scores[_FIRST] += _FIRST_W
        elif position == n_paragraphs - 1:
            scores[_LAST] += _LAST_W
        if position > 0 and text.find("?", start, end) >= 0:
            scores[_VERIFY] += QUESTION_WEIGHT
        n_entities = len(find_capitalised(classes, start, end))
        if classes.find(b"00", start, end) >= 0:  # half the paragraphs have no number: skip the regex
            n_entities += len(find_numbers(classes, start, end))
        if n_entities:
            scores[_RETRIEVAL] += min(ENTITY_WEIGHT * n_entities, ENTITY_CAP)
        # The top state, and the runner-up when strong and close (no two states score the same: ties differ).
        top_score = max(scores)
        if top_score < 0.5:  # only tie-break epsilons: no cue fired
            out.append(_FALLBACK)
        else:
            top = scores.index(top_score)
            scores[top] = 0.0
            second_score = max(scores)
            if second_score >= SECOND_MIN and second_score >= SECOND_RATIO * top_score:
                out.append((STATES[top], STATES[scores.index(second_score)]))
            else:
                out.append((STATES[top],))
        position += 1
    return out


def _cue_trie() -> tuple[bytes, bytes, bytes, bytes]:
    """The cues (in ``CUE_WEIGHTS`` order) as a trie for the compiled tagger, a dense transition table.

    Returns ``symbols``: 256 bytes, each cue-view byte's column (the cues' characters are 1..31, any
    other byte 0, a column with no child); ``children``: int16 ``[node][32]``, a node's child on each
    symbol (0: none; the root, node 0, is nobody's child); ``cues``: int32 per node, the cue ending
    there or -1; ``word_end``: per cue, whether its last character is a word character.
    """
    alphabet = sorted({ch for cue in CUE_WEIGHTS for ch in cue.encode("ascii")})
    assert len(alphabet) < 32, alphabet
    symbols = bytearray(256)
    for column, ch in enumerate(alphabet, start=1):
        symbols[ch] = column
    trie: dict = {}  # symbol -> child; -1 -> the cue ending here
    for cue_index, cue in enumerate(CUE_WEIGHTS):
        assert cue[0].isalpha() and (cue[-1].isalnum() or cue[-1] == ","), cue  # the walk's boundary tests
        node = trie
        for ch in cue.encode("ascii"):
            node = node.setdefault(symbols[ch], {})
        node[-1] = cue_index
    nodes = [trie]  # breadth-first, so that the short prefixes most walks visit share cache lines
    children, cues = array.array("h"), array.array("i")
    for node in nodes:  # grows while it is read
        row = [0] * 32
        for column, child in sorted((c, n) for c, n in node.items() if c != -1):
            row[column] = len(nodes)
            nodes.append(child)
        children.extend(row)
        cues.append(node.get(-1, -1))
    word_end = bytes(cue[-1].isalnum() for cue in CUE_WEIGHTS)
    return bytes(symbols), children.tobytes(), cues.tobytes(), word_end


def _load_compiled():
    """The compiled tagger (``_rules_c.c``, built at install when a C compiler is there), or None."""
    try:
        from mralign_plugin.annotate import _rules_c
    except ImportError:
        return None
    constants = (_FIRST, _FIRST_W, _LAST, _LAST_W, _VERIFY, QUESTION_WEIGHT, _RETRIEVAL, ENTITY_WEIGHT, ENTITY_CAP,
                 SECOND_MIN, SECOND_RATIO, 0.5)
    try:
        _rules_c.configure(tuple(CUE_WEIGHTS.values()), _cue_trie(), bytes(_IN_WORD), _CUE_VIEW, TIE_BREAK, STATES,
                           _FALLBACK, constants)
    except (TypeError, ValueError) as e:  # a build older than this file: same results in Python, slower
        warnings.warn(f"{_rules_c.__file__} does not match rules.py ({e}); using the Python loop. Rebuild it: "
                      "pip install -e . (or reinstall mralign_plugin)", RuntimeWarning, stacklevel=2)
        return None
    return _rules_c


_compiled = _load_compiled()
COMPILED = _compiled is not None  # the tagger runs compiled (same results, faster)


def tag_paragraph(text: str, position: int = 0, n_paragraphs: int = 1) -> tuple[str, ...]:
    """The 1-2 states of one thinking paragraph.

    Args:
        text: the paragraph (one blank-line-separated block of the thinking).
        position: its index in the thinking, from 0.
        n_paragraphs: how many paragraphs the thinking has.

    Returns:
        One or two state names, the higher-scoring first.
    """
    return _tag_spans(f"\n{text}\n", [(1, len(text) + 1)], position, n_paragraphs)[0]


def tag_paragraphs(paragraphs: list[str]) -> list[tuple[str, ...]]:
    """:func:`tag_paragraph` over the paragraphs of one thinking, in order, scanning them as one text."""
    spans, start = [], 0
    for paragraph in paragraphs:
        spans.append((start, start + len(paragraph)))
        start += len(paragraph) + 1
    return tag_spans("\n".join(paragraphs), spans)  # "\n": a non-word character no cue, entity or number spans


def check_taxonomy(taxonomy: Taxonomy) -> None:
    """Raise ValueError unless ``taxonomy`` has every label the tagger emits (the paper's 15)."""
    if taxonomy is PAPER_TAXONOMY:
        return
    missing = [s for s in STATES if s not in taxonomy]
    if missing:
        raise ValueError(f"the rules tagger emits the paper's 15 labels; the taxonomy lacks {missing}")


def annotate_rules(response: str, taxonomy: Taxonomy = PAPER_TAXONOMY) -> list[dict]:
    """Steps of the annotated-trajectory format for ``response``: one step per thinking paragraph.

    Raises:
        ValueError: when ``taxonomy`` lacks a label the tagger emits (its cues are the paper's).
    """
    check_taxonomy(taxonomy)
    parsed = parse_response(response)
    texts = [response[a:b] for a, b in parsed.paragraphs]
    return [{"paragraphs": [i], "states": list(states)} for i, states in enumerate(tag_paragraphs(texts))]

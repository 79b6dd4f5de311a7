"""The offline cue tagger: one step per thinking paragraph, 1-2 of the 15 states (method/MRALIGN.md §4.2-4.3).

The paper annotates with an LLM ensemble (§4.5). This tagger is our cheap stand-in, used by
``mralign annotate --annotator rules`` and online by the PPO reward, so it must run at tens of
thousands of paragraphs per second on one core. It is a bag of lexical cues written from the
paper's label definitions (App. B.6), plus three structural cues:

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
exactly the result of the plain per-paragraph definition (``_CUE_RE`` and ``_ENTITY_RE`` on each
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

from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

STATES = PAPER_TAXONOMY.names  # the tagger's cues are written for the paper's 15 labels
_IDX = {name: i for i, name in enumerate(STATES)}

# Tie-break order: frequency in the paper's training data (Table 7), most frequent first.
_FREQ_ORDER = (
    "retrieval", "self_verification", "framing", "evaluation", "summarization", "backtracking",
    "synthesis", "comparison", "explanation", "chaining", "case_analysis", "decomposition",
    "causal_reasoning", "categorization", "analogy",
)
_TIE = [0.0] * len(STATES)
for _rank, _name in enumerate(_FREQ_ORDER):
    _TIE[_IDX[_name]] = (len(STATES) - _rank) * 1e-6

# The four global knobs below were picked once on aggregate scores of half of the hand-labelled traces
# (benchmarks/eval_rules_tagger.py); the cue lists were not fitted to any labelled data.
FALLBACK = "retrieval"
SECOND_MIN = 1.0  # the runner-up needs a cue of its own...
SECOND_RATIO = 0.75  # ...and this fraction of the top score
FIRST_BONUS = ("framing", 1.5)
LAST_BONUS = ("summarization", 1.0)
ENTITY_WEIGHT, ENTITY_CAP = 0.25, 2.0  # retrieval per mid-sentence entity / number, capped
QUESTION_WEIGHT = 0.75  # self_verification for a "?" after the first paragraph

S, W = 2.0, 1.0  # strong and weak cue weights

# (state, weight, phrases). Phrases are lower-case and matched on word boundaries; a phrase may
# appear under several states (its weights add). Written from the App. B.6 definitions and the
# open labels merged into each cluster (Table 6), not fitted to any labelled set.
_CUES: tuple[tuple[str, float, tuple[str, ...]], ...] = (
    ("framing", S, (
        "the question is asking", "the question asks", "question is asking", "the user is asking",
        "the user asks", "the user wants", "is asking about", "is asking for", "asking for", "asking about",
        "asking which", "asking what", "asking who", "asking when", "asking where", "asking how",
        "we need to find", "i need to find", "i need to figure out", "need to figure out", "i need to determine",
        "i need to identify", "need to identify", "need to determine", "the goal is", "my goal", "looking for",
        "trying to find", "trying to figure out", "trying to remember", "want to know", "wants to know",
        "what is being asked", "the key here is", "the key is", "the question", "this question",
        "refers to", "could refer to", "might refer to", "could mean", "might mean", "ambiguous",
        "the phrase", "the term", "the wording", "interpret", "interpretation", "let me understand",
        "let me parse", "let me think about", "let me figure out", "let me try to figure out",
    )),
    ("framing", W, ("okay so", "ok so", "okay", "alright", "hmm so", "so i", "i need to", "we need to", "constraint")),
    ("retrieval", S, (
        "i remember", "i recall", "i think i remember", "from what i remember", "from what i recall",
        "from what i know", "as far as i know", "as i recall", "if i recall", "if i remember", "recall that",
        "i know that", "i know", "i've heard", "i have heard", "i've read", "i have read", "i learned",
        "known as", "known for", "is known", "was born", "born in", "died in", "was founded", "founded in",
        "founded by", "was released", "released in", "was published", "published in", "written by",
        "directed by", "produced by", "played by", "starred", "starring", "is located", "located in",
        "is the capital", "capital of", "according to", "is called", "was called", "is named", "named after",
        "atomic number", "discovered by", "invented by", "composed by", "sung by", "performed by",
    )),
    ("retrieval", W, (
        "i believe", "i think it", "i think he", "i think she", "i think they", "was the", "is the",
        "in the year", "the album", "the film", "the movie", "the song", "the novel", "the book", "the series",
        "the show", "the team", "the band", "won the", "discovered", "invented", "consists of", "is made of",
        "contains", "composed of",
    )),
    ("categorization", S, (
        "is a type of", "a type of", "is a kind of", "is a form of", "a form of", "belongs to", "belong to",
        "classified as", "is classified", "classification", "category", "categories", "falls under",
        "falls into", "fall under", "is considered a", "is an example of", "a class of", "a family of",
        "types of", "kinds of", "a subtype", "subtype", "categorize", "classify", "is a member of",
    )),
    ("categorization", W, ("kind of", "a group of", "genre", "species", "class", "type")),
    ("decomposition", S, (
        "break it down", "break this down", "break down", "breaking down", "let's break", "let me break",
        "step by step", "step one", "the first step", "first step", "first i", "first, i", "first let",
        "first, let", "then i", "next i", "next, i", "next step", "let's start", "let me start", "start by",
        "two parts", "three parts", "several parts", "sub-question", "subquestion", "sub-problem",
        "one by one", "piece by piece", "i should first", "let me list", "list out", "let's list",
        "there are two things", "a few things", "several things", "two things", "the first part",
        "the second part", "plan",
    )),
    ("decomposition", W, ("first", "second", "then", "next", "finally", "after that", "components")),
    ("comparison", S, (
        "compared to", "compared with", "in comparison", "comparing", "compare", "on the other hand",
        "whereas", "unlike", "in contrast", "contrast", "versus", "vs", "difference between", "differs from",
        "different from", "the difference", "as opposed to", "distinguish", "between the two", "the former",
        "the latter", "more than", "less than", "better than", "larger than", "smaller than", "older than",
        "younger than", "bigger than", "higher than", "lower than", "earlier than", "later than",
    )),
    ("comparison", W, ("than", "rather than", "differ", "different", "similarly", "while", "both")),
    ("analogy", S, (
        "similar to", "analogous", "analogy", "just as", "just like", "in the same way", "the same way",
        "much like", "akin to", "reminds me of", "like how", "resembles", "comparable to", "by analogy",
        "it's like", "is like a", "parallel",
    )),
    ("case_analysis", S, (
        "for example", "for instance", "e.g", "such as", "consider the case", "in the case of",
        "take the case", "take for example", "another example", "an example", "example of", "examples",
        "counterexample", "counter-example", "exception", "exceptions", "in some cases", "case by case",
        "suppose", "let's say", "what if", "scenario", "precedent",
    )),
    ("case_analysis", W, ("except", "case", "cases", "if it were", "in that case", "what about")),
    ("chaining", S, (
        "therefore", "thus", "hence", "which means", "that means", "this means", "so that means", "this implies",
        "which implies", "implies", "it follows", "follows that", "that would mean", "would mean",
        "which would make", "that would make", "which makes", "that makes", "consequently", "given that",
        "if that's the case", "if that is the case", "so if",
    )),
    ("chaining", W, ("so it", "so he", "so she", "so they", "so this", "so that", "then the", "then it", "since")),
    ("causal_reasoning", S, (
        "because of", "due to", "caused by", "causes", "causing", "results in", "resulted in", "result in",
        "as a result", "leads to", "led to", "lead to", "the effect", "effect of", "effects of",
        "reason why", "mechanism", "responsible for", "triggers", "triggered", "driven by", "contributes to",
        "contribute to", "affects", "affected",
    )),
    ("causal_reasoning", W, ("because", "cause", "effect", "why", "since", "produces", "depends on")),
    ("synthesis", S, (
        "putting it together", "putting it all together", "putting this together", "putting that together",
        "put together", "putting everything together", "combining", "combine", "taken together",
        "all of this", "all of these", "all this", "considering all", "considering everything",
        "all the evidence", "everything points", "all point to", "points to", "this fits", "that fits",
        "fits with", "consistent with", "which matches", "that matches", "lines up", "adds up", "integrat",
        "both of these", "together",
    )),
    ("synthesis", W, ("overall", "matches", "along with", "based on")),
    ("explanation", S, (
        "in other words", "i.e", "this is because", "the reason is", "that's because", "that is because",
        "which explains", "to explain", "to clarify", "in simple terms", "simply put", "put simply",
        "to put it", "this is why", "that's why", "that is why", "the idea is", "note that", "keep in mind",
        "it's important to note", "it is important", "assuming", "assumption", "means that",
    )),
    ("explanation", W, ("basically", "essentially", "meaning", "that is", "since", "because")),
    ("evaluation", S, (
        "the best answer", "best answer", "the correct answer", "the right answer", "the most likely",
        "most likely", "more likely", "less likely", "the most accurate", "most accurate", "most plausible",
        "more plausible", "i think the answer", "i'll go with", "go with", "i would say", "i'd say",
        "the answer should be", "better fit", "best fit", "fits best", "makes more sense", "more accurate",
        "i'm leaning", "leaning towards", "leaning toward", "the better", "the strongest", "choose",
        "options", "option", "candidate", "candidates",
    )),
    ("evaluation", W, (
        "likely", "probably", "plausible", "seems", "seems like", "choice", "decide", "pick", "select",
        "should be", "the answer", "better",
    )),
    ("self_verification", S, (
        "let me check", "let me verify", "let me confirm", "let me double-check", "let me double check",
        "double-check", "double check", "to double-check", "verify", "verifying", "confirm", "confirming",
        "confirms", "make sure", "to be sure", "is that right", "is that correct", "is this right",
        "is this correct", "am i sure", "am i right", "i'm not sure", "not sure", "i'm pretty sure",
        "i'm fairly sure", "i'm confident", "not entirely sure", "i'm certain", "cross-check", "sanity check",
        "recheck", "re-check", "does that make sense", "that makes sense", "let me see", "hold on",
        "i should check", "i should verify", "i need to check", "check",
    )),
    ("self_verification", W, (
        "correct", "yes", "indeed", "certain", "doubt", "uncertain", "unsure", "sure", "right", "hmm", "wait",
    )),
    ("backtracking", S, (
        "wait", "actually", "no wait", "but wait", "i was wrong", "i made a mistake", "mistake", "that's not right",
        "that's wrong", "that is wrong", "that's incorrect", "not correct", "incorrect", "scratch that",
        "on second thought", "let me reconsider", "reconsider", "let me rethink", "rethink", "let me go back",
        "go back", "going back", "revisit", "i confused", "mixed up", "oops", "correction", "but no",
        "no,",
    )),
    ("backtracking", W, ("instead", "alternatively", "another possibility", "or maybe", "hmm", "oh", "but")),
    ("summarization", S, (
        "so the answer is", "so the answer", "the answer is", "the final answer", "final answer",
        "in summary", "to summarize", "summarizing", "in conclusion", "to conclude", "in short",
        "to sum up", "to recap", "so in summary", "therefore the answer", "thus the answer",
        "the answer would be", "i conclude", "my answer", "so, the answer",
    )),
    ("summarization", W, ("conclusion", "so yes", "so, yes", "overall")),
)


def _trie_regex(phrases: list[str]) -> str:
    """A regex matching any of ``phrases``, with shared prefixes factored out (longest match first)."""
    trie: dict = {}
    for phrase in phrases:
        node = trie
        for ch in phrase:
            node = node.setdefault(ch, {})
        node[""] = {}

    def emit(node: dict) -> str:
        ends = "" in node
        alts = [re.escape(ch) + emit(child) for ch, child in sorted(node.items()) if ch]
        if not alts:
            return ""
        body = alts[0] if len(alts) == 1 else "(?:" + "|".join(alts) + ")"
        return f"(?:{body})?" if ends else body

    return emit(trie)


def _cue_weights() -> dict[str, tuple[tuple[int, float], ...]]:
    weights: dict[str, dict[int, float]] = {}
    for state, weight, phrases in _CUES:
        for phrase in phrases:
            per_state = weights.setdefault(phrase, {})
            per_state[_IDX[state]] = per_state.get(_IDX[state], 0.0) + weight
    return {p: tuple(w.items()) for p, w in weights.items()}


_CUE_WEIGHTS = _cue_weights()
# The reference semantics: cues are found on the lower-cased paragraph, leftmost and longest first,
# non-overlapping, starting on a word boundary and ending on one (or right after a ",").
_CUE_RE = re.compile(r"\b" + _trie_regex(sorted(_CUE_WEIGHTS)) + r"(?:\b|(?<=,))")
# A proper noun or acronym in mid-sentence (after a lower-case word, digit or comma), or a number of
# 2+ digits (the reference semantics; the fast path counts the same matches on character classes).
_ENTITY_RE = re.compile(r"[A-Z0-9](?:(?<=[a-z0-9,;:] [A-Z])(?:[a-z]+|[A-Z]+)|(?<=[0-9])[0-9]+)")

# ---- the fast path: the same matches, found by a compiled automaton on a byte view -----------------------
#
# Python's regex engine tries _CUE_RE at every word start (~150 ns each, most of the tagger's time).
# The compiled path walks _cue_trie() from each word start of the cue view below (see _rules_c.c).
# The Python path finds the cues of a whole thinking in one call to a compiled Aho-Corasick automaton
# (ahocorasick_rs, a DFA in Rust) on a "cue view" of the text: one byte per character, letters
# lower-cased, every other word character "0" (no cue contains one) and every non-word character
# kept when cues contain it (" ,-'.") or "#" otherwise. Each cue is a pattern followed by each
# possible non-word byte, so a pattern ends exactly where _CUE_RE's end boundary holds, and the
# automaton's leftmost-longest, non-overlapping matches are _CUE_RE's. Patterns cannot require a word
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
    for cue, cue_weights in _CUE_WEIGHTS.items():
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
# anything else (non-ASCII included) -> ".". _ENTITY_RE's matches are then an "A" after "[a0,] " and
# before a letter (a capitalised word or acronym) and runs of 2+ digits; both patterns open with a literal.
_CLASS_VIEW = bytes(
    97 if 97 <= c <= 122 else 65 if 65 <= c <= 90 else 48 if 48 <= c <= 57 else 44 if c in b",;:" else
    32 if c == 32 else 46 for c in range(256)
)
_CAPITALISED = re.compile(rb"A(?<=[a0,] A)[aA]")
_NUMBER = re.compile(rb"00+")
_MAX_NON_ASCII = 256  # beyond this many non-ASCII characters, the reference path is cheaper

_FIRST, _FIRST_W = _IDX[FIRST_BONUS[0]], FIRST_BONUS[1]
_LAST, _LAST_W = _IDX[LAST_BONUS[0]], LAST_BONUS[1]
_RETRIEVAL, _VERIFY, _FALLBACK = _IDX["retrieval"], _IDX["self_verification"], (FALLBACK,)


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
    found = [_TIE.copy() for _ in spans]
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
    """The score of each state after the cues of one paragraph (_CUE_RE, the definition): tie epsilon + weights."""
    scores = _TIE.copy()
    for phrase in _CUE_RE.findall(paragraph.lower()):
        for state, weight in _CUE_WEIGHTS[phrase]:
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
    """The cues (in ``_CUE_WEIGHTS`` order) as a trie for the compiled tagger, a dense transition table.

    Returns ``symbols``: 256 bytes, each cue-view byte's column (the cues' characters are 1..31, any
    other byte 0, a column with no child); ``children``: int16 ``[node][32]``, a node's child on each
    symbol (0: none; the root, node 0, is nobody's child); ``cues``: int32 per node, the cue ending
    there or -1; ``word_end``: per cue, whether its last character is a word character.
    """
    alphabet = sorted({ch for cue in _CUE_WEIGHTS for ch in cue.encode("ascii")})
    assert len(alphabet) < 32, alphabet
    symbols = bytearray(256)
    for column, ch in enumerate(alphabet, start=1):
        symbols[ch] = column
    trie: dict = {}  # symbol -> child; -1 -> the cue ending here
    for cue_index, cue in enumerate(_CUE_WEIGHTS):
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
    word_end = bytes(cue[-1].isalnum() for cue in _CUE_WEIGHTS)
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
        _rules_c.configure(tuple(_CUE_WEIGHTS.values()), _cue_trie(), bytes(_IN_WORD), _CUE_VIEW, _TIE, STATES,
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

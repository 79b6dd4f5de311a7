"""The offline cue tagger: valid output, one step per paragraph, each state reachable, the fast paths
(compiled and pure Python) equal to the plain per-paragraph definition, fast."""

import array
import contextlib
import time

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mralign_plugin.annotate import cues, rules
from mralign_plugin.annotate.rules import STATES, annotate_rules, tag_paragraph, tag_paragraphs, tag_spans
from mralign_plugin.core.formats import record_problems
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

# One hand-written paragraph per state, each built on the cue the state's definition names.
CANONICAL = {
    "framing": (0, "Okay, so the question is asking which river flows through the capital."),
    "retrieval": (2, "I remember that the Danube flows through Vienna, Budapest and Belgrade."),
    "categorization": (2, "A tomato is classified as a fruit, since it belongs to the category of berries."),
    "decomposition": (1, "Let me break this down into two parts: first the country, then its river."),
    "comparison": (2, "Compared to the Rhine, the Danube is longer, whereas the Rhine carries more cargo."),
    "analogy": (2, "It is analogous to how the Nile shapes Egypt, just as a spine shapes a body."),
    "case_analysis": (2, "For example, consider the case of Budapest: it is split by the river."),
    "chaining": (2, "The city is the capital, which means it hosts the parliament; therefore it is Budapest."),
    "causal_reasoning": (2, "The flood happened due to heavy rain, which caused the river to rise."),
    "synthesis": (3, "Putting it all together, all of these clues are consistent with the Danube."),
    "explanation": (3, "In other words, the idea is simply put: keep in mind that borders move."),
    "evaluation": (3, "Of the two options, the most likely and best answer is the Danube."),
    "self_verification": (3, "Let me double-check that: is that correct? I should verify the spelling."),
    "backtracking": (3, "Wait, that's not right. I made a mistake, let me reconsider the country."),
    "summarization": (5, "In summary, the final answer is the Danube."),
}


@pytest.mark.parametrize("state", STATES)
def test_every_state_is_reachable(state):
    position, text = CANONICAL[state]
    assert tag_paragraph(text, position, 6)[0] == state


def test_output_is_one_or_two_valid_distinct_states():
    texts = [t for _, t in CANONICAL.values()] + ["", "   ", "?", "x" * 5000, "Wait. Wait. Wait. Let me check. Let me check."]
    for i, text in enumerate(texts):
        states = tag_paragraph(text, i % 5, 5)
        assert 1 <= len(states) <= 2
        assert len(set(states)) == len(states)
        assert all(s in PAPER_TAXONOMY for s in states)


def test_no_cue_falls_back_to_retrieval():
    assert tag_paragraph("zzz qqq", 2, 5) == ("retrieval",)


def test_position_priors():
    text = "The river is long."
    assert tag_paragraph(text, 0, 5)[0] == "framing"
    assert "summarization" in tag_paragraph(text, 4, 5)


def test_deterministic_and_case_insensitive():
    text = "WAIT, that's NOT RIGHT. Let me reconsider."
    assert tag_paragraph(text, 2, 5) == tag_paragraph(text.lower(), 2, 5) == tag_paragraph(text, 2, 5)


def test_annotate_rules_steps_are_valid_format():
    response = "<think>\n" + "\n\n".join(t for _, t in CANONICAL.values()) + "\n</think>\n<answer>Danube</answer>"
    steps = annotate_rules(response)
    assert [s["paragraphs"] for s in steps] == [[i] for i in range(len(CANONICAL))]
    record = {"id": "x", "prompt": "q", "response": response, "label": True, "steps": steps}
    assert record_problems(record) == []
    assert [tuple(s["states"]) for s in steps] == tag_paragraphs([t for _, t in CANONICAL.values()])


def test_annotate_rules_rejects_foreign_taxonomy():
    other = Taxonomy(("a", "b"), ("g", "g"), ("", ""))
    with pytest.raises(ValueError, match="lacks"):
        annotate_rules("<think>x</think>y", other)


def test_throughput_sanity():
    """A loose floor (the real measurement is benchmarks/bench_annotate.py, target 20,000/s)."""
    paragraphs = [t for _, t in CANONICAL.values()] * 200
    start = time.perf_counter()
    tag_paragraphs(paragraphs)
    rate = len(paragraphs) / (time.perf_counter() - start)
    assert rate > 5_000, f"{rate:.0f} paragraphs/s"


# --- the fast path equals the definition -----------------------------------------------------------


def reference_tag(text: str, position: int, n_paragraphs: int) -> tuple[str, ...]:
    """The tagger as the module docstring defines it, one paragraph at a time with the reference regexes."""
    scores = list(cues.TIE_BREAK)
    for phrase in cues.CUE_RE.findall(text.lower()):
        for state, weight in cues.CUE_WEIGHTS[phrase]:
            scores[state] += weight
    if position == 0:
        scores[rules._FIRST] += rules._FIRST_W
    elif position == n_paragraphs - 1:
        scores[rules._LAST] += rules._LAST_W
    if position > 0 and "?" in text:
        scores[rules._VERIFY] += cues.QUESTION_WEIGHT
    n_entities = len(cues.ENTITY_RE.findall(text))
    if n_entities:
        scores[rules._RETRIEVAL] += min(cues.ENTITY_WEIGHT * n_entities, cues.ENTITY_CAP)
    order = sorted(range(len(scores)), key=scores.__getitem__, reverse=True)
    top, second = scores[order[0]], scores[order[1]]
    if top < 0.5:
        return (cues.FALLBACK,)
    if second >= cues.SECOND_MIN and second >= cues.SECOND_RATIO * top:
        return (STATES[order[0]], STATES[order[1]])
    return (STATES[order[0]],)


# Cue phrases (some capitalised), words that are no cue, and the characters the fast path treats
# specially: punctuation inside cues, other punctuation, non-ASCII word and non-word characters,
# characters whose lower case is ASCII or longer (Kelvin sign, dotted capital I), digits, surrogates.
PIECES = [*cues.CUE_WEIGHTS, "Paris", "NASA", "The", "WAIT", "Okay", "I", "no", "No", "so", "e", "g", "s",
          "check", "self", "Ab", "Cd", "x9", "zz"]
SEPARATORS = [" ", " ", " ", "  ", "\n", ", ", ",", "-", "'", ".", ". ", "?", "(", '"', "\u2014", "\u00e9", "\u00c9",
              "\u212a", "\u0130", "\u00df", "\u03a3", "_", "1", "12", " 1999 ", "\t", "\r\n", "\u2019", "\ud800"]
word = st.sampled_from(PIECES).map(lambda w: w.upper() if len(w) % 7 == 0 else w.capitalize() if len(w) % 5 == 0 else w)
paragraph = st.lists(word | st.sampled_from(SEPARATORS) | st.text(max_size=3), max_size=40).map("".join)


@contextlib.contextmanager
def python_loop():
    """The tagger in Python (what runs when the C extension is not built)."""
    compiled, rules._compiled = rules._compiled, None
    try:
        yield
    finally:
        rules._compiled = compiled


def test_compiled_tagger_is_built():
    """The install builds the C tagger (setup.py); without a C compiler it falls back to Python."""
    assert rules.COMPILED, "mralign_plugin/annotate/_rules_c.c was not built: reinstall with a C compiler present"


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=st.lists(paragraph, min_size=1, max_size=6))
def test_fast_path_equals_the_definition(paragraphs):
    n = len(paragraphs)
    expected = [reference_tag(p, i, n) for i, p in enumerate(paragraphs)]
    assert tag_paragraphs(paragraphs) == expected
    assert [tag_paragraph(p, i, n) for i, p in enumerate(paragraphs)] == expected
    with python_loop():
        assert tag_paragraphs(paragraphs) == expected


def test_fast_path_corner_cases():
    """Hits the automaton reports but are no cue (inside a word, or a longer cue cut by a word character),
    Latin-1 word and non-word characters, and text beyond Latin-1."""
    cases = [
        "okay\nso I think", "No, wait. no,wait. no wait", "e.g. the answer is, i.e. this", "double-check and self-check",
        "So, the answer is X", "so. the answer", "It's like the \u212aelvin sign", "\u0130stanbul, I recall, is old",
        "caf\u00e9wait and wait\u00e9 and \u00e9 wait", "\u00e9" * 300 + " wait, actually", "\"the answer\" (wait)",
        "also i need to check", "measure it; the planet", "so the answer isn't Paris", "double-checking it",
        "wait\u00b0so \u00abwait\u00bb x\u00b2wait \u00aawait 10\u00d7wait", "\u00c0 propos, I recall 1999 and 42",
    ]
    for text in cases:
        for position in (0, 2, 4):
            assert tag_paragraph(text, position, 5) == reference_tag(text, position, 5), (text, position)
            with python_loop():
                assert tag_paragraph(text, position, 5) == reference_tag(text, position, 5), (text, position)


def test_hits_inside_a_word_that_cover_the_next_word(monkeypatch):
    """'also i need to': the automaton's leftmost hit is 'so i' inside 'also'; the real cue starts at 'i'.
    The Python loop searches again from the end of the word (no regex fallback); the compiled loop walks
    its trie from word starts only. Both agree with the definition."""
    cases = ["also i need to find it", "cameo, so i think. also i need to check", "piso i need to also i know that",
             "kayak so, the answer is x" * 3]
    for text in cases:
        assert tag_paragraph(text, 2, 5) == reference_tag(text, 2, 5), text
        with python_loop():
            assert tag_paragraph(text, 2, 5) == reference_tag(text, 2, 5), text
    searched_from, matcher = [], rules._CUE_MATCHER  # the Python loop did search again, from the end of "also"

    class Recording:
        @staticmethod
        def find_matches_as_indexes(view):
            searched_from.append(len(padded) - len(view))
            return matcher.find_matches_as_indexes(view)

    padded = f"\n{cases[0]}\n"
    monkeypatch.setattr(rules, "_CUE_MATCHER", Recording)
    with python_loop():
        assert tag_paragraph(cases[0], 2, 5) == reference_tag(cases[0], 2, 5)
    assert searched_from == [0, padded.index("also") + 4]


def test_thinking_beyond_latin1_is_exact_and_fast():
    """A thinking in Chinese (every character beyond Latin-1) tags as the definition does, and the compiled
    tagger asks str.lower() once per distinct character, not per character: faster than the Python path."""
    paragraphs = ["我记得巴黎是法国的首都。Wait, 让我再检查一下 I recall 1999。" * 12 for _ in range(12)]
    n = len(paragraphs)
    assert tag_paragraphs(paragraphs) == [reference_tag(p, i, n) for i, p in enumerate(paragraphs)]

    def best_time():
        times = []
        for _ in range(3):
            start = time.perf_counter()
            tag_paragraphs(paragraphs)
            times.append(time.perf_counter() - start)
        return min(times)

    compiled = best_time()
    with python_loop():
        python = best_time()
    assert compiled < python, (compiled, python)


def test_compiled_loop_rejects_bad_spans():
    """Spans out of order, overlapping or touching the text's ends are a ValueError, not a wrong tag."""
    text = "\nWait, that is wrong.\nSo the answer is Paris.\n"
    with pytest.raises(ValueError, match="spans"):
        rules._tag_spans(text, [(1, 21), (10, 30)], 0, 2)
    with pytest.raises(ValueError, match="spans"):
        rules._tag_spans(text, [(0, 21)], 0, 1)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(paragraphs=st.lists(paragraph, min_size=1, max_size=5), gaps=st.lists(st.text(min_size=1, max_size=4), min_size=6,
                                                                              max_size=6))
def test_tag_spans_equals_tagging_each_span(paragraphs, gaps):
    """tag_spans on paragraphs inside a larger text (any characters between, around or none at the ends)
    equals tagging each paragraph alone."""
    text, spans = gaps[0] if len(paragraphs) % 2 else "", []
    for i, p in enumerate(paragraphs):
        spans.append((len(text), len(text) + len(p)))
        text += p + (gaps[i + 1] if i < len(paragraphs) - 1 or len(paragraphs) % 3 else "")
    n = len(paragraphs)
    assert tag_spans(text, spans) == [tag_paragraph(p, i, n) for i, p in enumerate(paragraphs)]


def test_compiled_tagger_rejects_a_trie_that_points_out_of_range():
    """configure() checks every index of the trie it is given, so a bad one is an error, not a wild read."""
    symbols, children, cue_ids, word_end = rules._cue_trie()
    bad_child = array.array("h", children)
    bad_child[1] = len(cue_ids) // 4  # the root's child on the first column: one past the last node
    bad_cue = array.array("i", cue_ids)
    bad_cue[1] = len(word_end)  # a cue index one past the last cue
    try:
        for trie in [(symbols, bad_child.tobytes(), cue_ids, word_end), (symbols, children, bad_cue.tobytes(), word_end),
                     (symbols, children[:-2], cue_ids, word_end), (bytes(255), children, cue_ids, word_end)]:
            with pytest.raises(ValueError, match="trie"):
                rules._compiled.configure(tuple(cues.CUE_WEIGHTS.values()), trie, bytes(rules._IN_WORD),
                                          rules._CUE_VIEW, cues.TIE_BREAK, STATES, rules._FALLBACK,
                                          (0, 1.0, 0, 1.0, 0, 1.0, 0, 1.0, 1.0, 1.0, 1.0, 0.5))
        with pytest.raises(RuntimeError, match="configure"):  # a failed configure() leaves nothing half-loaded
            rules._compiled.tag("\nwait\n", [(1, 5)], 0, 1)
    finally:
        assert rules._load_compiled() is rules._compiled  # configured again from rules.py
    assert tag_paragraph("Wait, that's not right.", 3, 6) == ("backtracking",)


def test_a_stale_compiled_loop_falls_back_to_python_with_a_warning(monkeypatch):
    """A C build older than rules.py (its configure() no longer matches) is not used: Python runs, with a warning."""
    import mralign_plugin.annotate as package

    class StaleBuild:
        __file__ = "_rules_c.so"

        @staticmethod
        def configure(*args):
            raise TypeError("function takes exactly 7 arguments (8 given)")

    monkeypatch.setattr(package, "_rules_c", StaleBuild, raising=False)
    with pytest.warns(RuntimeWarning, match="Rebuild it"):
        assert rules._load_compiled() is None

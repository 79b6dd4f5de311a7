"""The offline cue tagger: valid output, one step per paragraph, each state reachable, fast."""

import time

import pytest

from mralign_plugin.annotate.rules import STATES, annotate_rules, tag_paragraph, tag_paragraphs
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

"""Ensemble aggregation (§3.1.2, method/MRALIGN.md §4.5, §9 item 10) on hand-made cases, one per rule."""

import pytest

from mralign_plugin.annotate.aggregate import adjudicated_labels, aggregate, aggregate_labels, refine


def s(paragraphs, **labels):
    return {"paragraphs": paragraphs, "states": list(labels), "confidence": list(labels.values())}


# --- rule 1: consistent --------------------------------------------------------------------------

def test_consistent_sets_keep_annotator_a_confidences():
    assert aggregate_labels({"retrieval": 6, "framing": 9}, {"framing": 3, "retrieval": 10}) == (
        ["retrieval", "framing"], [6, 9], "consistent")


def test_consistent_single_label_is_accepted_not_escalated():
    assert aggregate_labels({"retrieval": 4}, {"retrieval": 9}) == (["retrieval"], [4], "consistent")


def test_consistent_empty_sets():
    assert aggregate_labels({}, {}) == ([], [], "consistent")


# --- rule 2: consolidation -----------------------------------------------------------------------

def test_shared_label_plus_confident_single_label():
    # shared retrieval (max conf 8); singles: framing 9 (A) > 7 kept, evaluation 5 (B) not needed anyway
    assert aggregate_labels({"retrieval": 6, "framing": 9}, {"retrieval": 8, "evaluation": 5}) == (
        ["retrieval", "framing"], [8, 9], "consolidated")


def test_singles_added_in_descending_confidence_until_two():
    # nothing shared; singles 9.5 (B), 8 (A), 7.5 (A); the two highest above 7 are kept
    states, confs, rule = aggregate_labels({"framing": 8, "evaluation": 7.5}, {"retrieval": 9.5, "analogy": 2})
    assert (states, confs, rule) == (["retrieval", "framing"], [9.5, 8], "consolidated")


def test_threshold_is_strictly_above_seven():
    # shared framing; the single labels have exactly 7 -> not added -> one label -> escalate (literal rule)
    states, confs, rule = aggregate_labels({"framing": 9, "retrieval": 7}, {"framing": 5, "evaluation": 7})
    assert (states, confs, rule) == (["framing"], [9], "escalate")


# --- rule 3: escalation ---------------------------------------------------------------------------

def test_escalate_when_fewer_than_two_remain_literal_rule():
    assert aggregate_labels({"framing": 9}, {"framing": 9, "retrieval": 3})[2] == "escalate"
    assert aggregate_labels({"framing": 5}, {"retrieval": 5})[2] == "escalate"


def test_escalate_only_when_empty_variant():
    assert aggregate_labels({"framing": 9}, {"framing": 9, "retrieval": 3}, "empty") == (["framing"], [9], "consolidated")
    assert aggregate_labels({"framing": 5}, {"retrieval": 5}, "empty")[2] == "escalate"
    with pytest.raises(ValueError):
        aggregate_labels({}, {}, "never")


def test_aggregate_asks_the_adjudicator_then_records_the_rule_per_step():
    a = [s([0], framing=9), s([1], retrieval=6), s([2], evaluation=8, summarization=9)]
    b = [s([0], framing=7), s([1], comparison=5), s([2], evaluation=9, synthesis=8)]
    steps, needs = aggregate(a, b, 3)
    assert needs and [st["paragraphs"] for st in steps] == [[0], [2]]  # paragraph 1 awaits the adjudicator
    adjudicator = [s([0], framing=10), s([1], retrieval=9, self_verification=4), s([2], summarization=5)]
    steps, needs = aggregate(a, b, 3, adjudicator)
    assert not needs
    assert steps == [
        {"paragraphs": [0], "states": ["framing"], "confidence": [9.0], "rule": "consistent"},
        {"paragraphs": [1], "states": ["retrieval", "self_verification"], "confidence": [9.0, 4.0], "rule": "adjudicated"},
        {"paragraphs": [2], "states": ["evaluation", "summarization"], "confidence": [9.0, 9.0], "rule": "consolidated"},
    ]


def test_adjudicator_labels_over_a_merged_segment_keep_top_two():
    adj = [s([0, 1], framing=6), s([2], retrieval=9, chaining=8)]
    assert adjudicated_labels([1, 2], adj) == (["retrieval", "chaining"], [9, 8])
    assert adjudicated_labels([3], adj) == ([], [])


# --- different segmentations ------------------------------------------------------------------------

def test_refinement_of_different_merges():
    a = [s([0, 1], framing=9), s([2], retrieval=8)]
    b = [s([0], framing=8), s([1, 2], retrieval=7)]
    assert refine(a, b, 4) == [
        ([0], {"framing": 9}, {"framing": 8}),
        ([1], {"framing": 9}, {"retrieval": 7}),
        ([2], {"retrieval": 8}, {"retrieval": 7}),
    ]  # paragraph 3 is covered by neither: no step


def test_paragraph_left_out_by_one_annotator_counts_as_empty_set():
    steps, needs = aggregate([s([0], framing=9)], [s([0], framing=9), s([1], retrieval=9.5)], 2,
                             adjudicator_steps=[s([1], retrieval=9)])
    assert steps[1] == {"paragraphs": [1], "states": ["retrieval"], "confidence": [9.0], "rule": "adjudicated"}
    steps, _ = aggregate([s([0], framing=9)], [s([0], framing=9), s([1], retrieval=9.5)], 2, escalate_when="empty")
    assert steps[1] == {"paragraphs": [1], "states": ["retrieval"], "confidence": [9.5], "rule": "consolidated"}


# --- properties ------------------------------------------------------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

from mralign_plugin.annotate.aggregate import RULES  # noqa: E402
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY  # noqa: E402

LABELS = list(PAPER_TAXONOMY.names[:5])


@st.composite
def annotation(draw, n):
    steps, p = [], 0
    while p < n:
        width = draw(st.integers(1, 3))
        if draw(st.booleans()) or p == 0:
            labels = draw(st.lists(st.sampled_from(LABELS), max_size=2, unique=True))
            confs = draw(st.lists(st.floats(0, 10), min_size=len(labels), max_size=len(labels)))
            steps.append({"paragraphs": list(range(p, min(n, p + width))), "states": labels, "confidence": confs})
        p += width
    return steps


@settings(max_examples=200, deadline=None)
@given(st.data(), st.integers(1, 8), st.sampled_from(["lt2", "empty"]))
def test_aggregate_output_is_always_valid(data, n, escalate_when):
    a, b, adj = data.draw(annotation(n)), data.draw(annotation(n)), data.draw(annotation(n))
    steps, needs = aggregate(a, b, n, adj, escalate_when)
    assert not needs
    last = -1
    for step in steps:
        assert step["paragraphs"][0] > last and step["paragraphs"] == sorted(step["paragraphs"])
        last = step["paragraphs"][-1]
        assert len(step["states"]) <= 2 and len(set(step["states"])) == len(step["states"])
        assert len(step["confidence"]) == len(step["states"]) and step["rule"] in RULES
        proposed = {s for x in a + b for s in x["states"]} | {s for x in adj for s in x["states"]}
        assert set(step["states"]) <= proposed
    covered = {p for x in a + b for p in x["paragraphs"]}
    assert {p for step in steps for p in step["paragraphs"]} == covered

"""Taxonomy: the paper's 15 labels, and user-supplied label sets from YAML/JSON."""

import json

import pytest

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, START, STOP, K, Taxonomy


def test_paper_taxonomy_matches_the_controlled_vocabulary_order():
    assert PAPER_TAXONOMY.names == (
        "framing", "retrieval", "categorization", "decomposition", "comparison", "analogy", "case_analysis",
        "chaining", "causal_reasoning", "synthesis", "explanation", "evaluation", "self_verification",
        "backtracking", "summarization",
    )
    assert (K, START, STOP) == (17, 0, 16)
    assert PAPER_TAXONOMY.group_of("backtracking") == "Meta-cognitive Regulation"
    assert len(set(PAPER_TAXONOMY.groups)) == 4
    assert all(PAPER_TAXONOMY.definitions)


def test_unknown_state_error_lists_valid_ones():
    with pytest.raises(KeyError, match="unknown state 'reflection'.*framing"):
        PAPER_TAXONOMY.index("reflection")
    assert "framing" in PAPER_TAXONOMY and "<start>" not in PAPER_TAXONOMY and 3 not in PAPER_TAXONOMY


def test_load_yaml_and_json(tmp_path):
    y = tmp_path / "t.yaml"
    y.write_text("labels:\n  - {name: plan, group: meta, definition: makes a plan}\n  - name: recall\n")
    tax = Taxonomy.load(y)
    assert tax.states == ("<start>", "plan", "recall", "<stop>") and tax.stop == 3
    j = tmp_path / "t.json"
    j.write_text(json.dumps(tax.to_dict()))
    assert Taxonomy.load(j) == tax


@pytest.mark.parametrize(
    "entries, message",
    [([], "at least one"), (["a", "a"], "duplicate"), (["<stop>"], "reserved"), ([{"group": "x"}], "'name'"),
     ("plan", "expected a list")],
)
def test_bad_taxonomies_are_refused(entries, message):
    with pytest.raises(ValueError, match=message):
        Taxonomy.from_entries(entries)

"""Agreement metrics (App. B.3-B.5 definitions) on hand-computed cases."""

import pytest

from mralign_plugin.annotate.agreement import agreement, format_agreement


def test_hand_computed_case():
    pairs = [
        (["framing"], ["framing"]),  # strict
        (["retrieval"], ["retrieval", "evaluation"]),  # entailment, not strict
        (["retrieval", "comparison"], ["comparison"]),  # entailment
        (["summarization"], ["synthesis"]),  # disjoint; same macro-group? no (Explanatory vs Knowledge)
    ]
    a = agreement(pairs)
    assert a["n"] == 4
    assert a["strict"] == 0.25 and a["entailment"] == 0.75 and a["overlap"] == 0.75
    # TP: framing, retrieval, comparison = 3; FP: evaluation, synthesis = 2; FN: retrieval, summarization = 2
    assert a["micro"]["precision"] == pytest.approx(3 / 5) and a["micro"]["recall"] == pytest.approx(3 / 5)
    r = a["per_state"]["retrieval"]
    assert (r["precision"], r["recall"], r["support"], r["predicted"]) == (1.0, 0.5, 2, 1)
    assert a["per_state"]["analogy"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0, "predicted": 0}
    # macro groups: retrieval + evaluation -> {Knowledge, Meta}; ref {Knowledge}: entailment but not strict
    assert a["strict_mac"] == 0.5 and a["entailment_mac"] == 0.75
    assert "retrieval" in format_agreement(a)


def test_empty_input():
    a = agreement([])
    assert a["n"] == 0 and a["strict"] == 0 and a["macro_f1"] == 0

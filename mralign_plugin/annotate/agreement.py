"""Agreement between two step labellings: per-state precision/recall and the paper's set agreements (App. B.3-B.5).

Each item is a pair of label sets for the same step (reference, predicted). The paper's step-level
criteria (Table 10, method/MRALIGN.md §4.6): **strict** = identical sets, **entailment** = one set
contains the other; the ``_mac`` variants compare the sets of macro-strategies instead.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy


def agreement(pairs: Iterable[tuple[Iterable[str], Iterable[str]]], taxonomy: Taxonomy = PAPER_TAXONOMY) -> dict:
    """Multi-label agreement of predicted label sets against reference ones.

    Args:
        pairs: ``(reference_states, predicted_states)`` per step.
        taxonomy: for the per-state table and the macro-strategy groups.

    Returns:
        ``{"n", "strict", "entailment", "overlap", "strict_mac", "entailment_mac", "micro": {p, r, f1},
        "macro_f1", "per_state": {state: {"precision", "recall", "f1", "support", "predicted"}}}``.

    Example:
        >>> a = agreement([(["framing"], ["framing"]), (["retrieval"], ["retrieval", "evaluation"])])
        >>> a["strict"], a["entailment"], a["per_state"]["retrieval"]["recall"]
        (0.5, 1.0, 1.0)
    """
    tp, fp, fn = Counter(), Counter(), Counter()
    n = strict = entail = overlap = strict_mac = entail_mac = 0
    for ref, pred in pairs:
        ref, pred = set(ref), set(pred)
        n += 1
        strict += ref == pred
        entail += ref <= pred or pred <= ref
        overlap += bool(ref & pred)
        ref_g, pred_g = {taxonomy.group_of(s) for s in ref}, {taxonomy.group_of(s) for s in pred}
        strict_mac += ref_g == pred_g
        entail_mac += ref_g <= pred_g or pred_g <= ref_g
        for s in ref & pred:
            tp[s] += 1
        for s in pred - ref:
            fp[s] += 1
        for s in ref - pred:
            fn[s] += 1
    per_state = {}
    for s in taxonomy.names:
        p = tp[s] / (tp[s] + fp[s]) if tp[s] + fp[s] else 0.0
        r = tp[s] / (tp[s] + fn[s]) if tp[s] + fn[s] else 0.0
        per_state[s] = {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0,
                        "support": tp[s] + fn[s], "predicted": tp[s] + fp[s]}
    TP, FP, FN = sum(tp.values()), sum(fp.values()), sum(fn.values())
    micro_p = TP / (TP + FP) if TP + FP else 0.0
    micro_r = TP / (TP + FN) if TP + FN else 0.0
    supported = [v["f1"] for v in per_state.values() if v["support"]]
    div = max(n, 1)
    return {
        "n": n, "strict": strict / div, "entailment": entail / div, "overlap": overlap / div,
        "strict_mac": strict_mac / div, "entailment_mac": entail_mac / div,
        "micro": {"precision": micro_p, "recall": micro_r,
                  "f1": 2 * micro_p * micro_r / (micro_p + micro_r) if micro_p + micro_r else 0.0},
        "macro_f1": sum(supported) / len(supported) if supported else 0.0,
        "per_state": per_state,
    }


def format_agreement(result: dict) -> str:
    """The per-state table and the summary lines, as printed by the evaluation script."""
    lines = [f"{'state':<18} {'precision':>9} {'recall':>7} {'f1':>6} {'support':>7} {'predicted':>9}"]
    for s, v in result["per_state"].items():
        lines.append(f"{s:<18} {v['precision']:>9.3f} {v['recall']:>7.3f} {v['f1']:>6.3f} {v['support']:>7d} {v['predicted']:>9d}")
    m = result["micro"]
    lines += [
        f"micro  precision {m['precision']:.3f}  recall {m['recall']:.3f}  f1 {m['f1']:.3f};  macro f1 {result['macro_f1']:.3f}",
        f"steps {result['n']}:  strict {result['strict']:.3f}  entailment {result['entailment']:.3f}  "
        f"any-overlap {result['overlap']:.3f}  strict_mac {result['strict_mac']:.3f}  entailment_mac {result['entailment_mac']:.3f}",
    ]
    return "\n".join(lines)

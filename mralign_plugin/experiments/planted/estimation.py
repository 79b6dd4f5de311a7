"""Part 1 of the planted experiment: how well each estimator recovers P_good / P_bad from labelled traces.

For each seed and each N, sample N traces (half per chain) from the world, fit P, P⁺, P⁻ with the project's
own ``fit_transition_model`` under each estimator, and compare P⁺ with P_good and P⁻ with P_bad:

* ``em``: Alg. 2 on the 1-2-label sets (the paper's method);
* ``frequency``: one pass, each observation's mass split over its candidate cells ("EM ✗");
* ``single_label``: EM on the highest-confidence state of each step ("Label Diver. ✗");
* ``rules``: EM on the states the rules tagger reads from the text (what the tagger's errors cost);
* ``oracle``: frequency on the true primary states (the best a counting estimator can do with this N).

Errors are per visited row (the rows of <start> and the 8 world states): total variation ½Σ|P̂−P| (mean over
rows) and max-abs |P̂−P| (max over rows). Ranking: are the planted cells the top of W⁺ = P⁺/P (the good ones)
and W⁻ = P⁻/P (the bad ones), among the cells the class really makes (P± ≥ 2/(K−1), as the demo ranks)?
"""

from __future__ import annotations

import numpy as np

from mralign_plugin.annotate.rules import annotate_rules
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.core.transitions import fit_transition_model
from mralign_plugin.eval.metrics import bootstrap_ci
from mralign_plugin.experiments.planted.world import (
    P_BAD,
    P_GOOD,
    PLANTED,
    START,
    STATES,
    make_questions,
    sample_records,
)

ESTIMATORS = ("em", "frequency", "single_label", "rules", "oracle")
VISITED_ROWS = np.array([PAPER_TAXONOMY.index(s) for s in (START, *STATES)])


def row_errors(P_hat: np.ndarray, P_true: np.ndarray, rows: np.ndarray = VISITED_ROWS) -> dict:
    """Mean total variation and max-abs error of ``P_hat`` against ``P_true`` over ``rows``. (K, K) -> scalars."""
    diff = np.abs(P_hat[rows] - P_true[rows])  # (R, K)
    return {"tv": float((0.5 * diff.sum(1)).mean()), "max_abs": float(diff.max())}


def planted_cells(kind: str) -> list[tuple[int, int]]:
    """(row, col) indices of the planted cells typical of ``kind`` ("good" or "bad")."""
    return [(PAPER_TAXONOMY.index(a), PAPER_TAXONOMY.index(b)) for a, b, k in PLANTED if k == kind]


def top_cells(trans_class: np.ndarray, trans_all: np.ndarray, k: int) -> list[tuple[int, int]]:
    """The ``k`` cells of largest advantage W = P±/P among those with P± ≥ 2/(K−1). (K, K) -> [(i, j)]."""
    K = trans_class.shape[0]
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(trans_all > 0, trans_class / trans_all, np.nan)  # (K, K)
    made = np.isfinite(ratio) & (trans_class >= 2.0 / (K - 1))
    flat = np.where(made, ratio, -np.inf).ravel()
    order = np.argsort(-flat, kind="stable")[:k]
    return [(int(i // K), int(i % K)) for i in order if np.isfinite(flat[i])]


def planted_recall(trans_class: np.ndarray, trans_all: np.ndarray, kind: str) -> float:
    """Fraction of ``kind``'s planted cells among the top-|planted| cells of its advantage map."""
    cells = planted_cells(kind)
    return len(set(cells) & set(top_cells(trans_class, trans_all, len(cells)))) / len(cells)


def _records_for(records: list[dict], estimator: str) -> list[dict]:
    if estimator == "rules":
        return [{**r, "steps": annotate_rules(r["response"])} for r in records]
    if estimator == "oracle":
        return [{**r, "steps": [{"states": [s]} for s in r["planted_path"]]} for r in records]
    return records


def fit_world(records: list[dict], estimator: str) -> dict:
    """The transitions.json dict of ``records`` under one of ``ESTIMATORS``."""
    if estimator not in ESTIMATORS:
        raise ValueError(f"estimator must be one of {ESTIMATORS}, got {estimator!r}")
    method = "frequency" if estimator in ("frequency", "oracle") else "em"
    return fit_transition_model(_records_for(records, estimator), PAPER_TAXONOMY, estimator=method,
                                single_label=estimator == "single_label")


def score_fit(model: dict) -> dict:
    """Errors of P⁺ vs P_good and P⁻ vs P_bad, and the planted-cell recall of W⁺ and W⁻."""
    P, P_pos, P_neg = (np.asarray(model[k]) for k in ("P", "P_pos", "P_neg"))
    pos, neg = row_errors(P_pos, P_GOOD), row_errors(P_neg, P_BAD)
    return {"pos_tv": pos["tv"], "pos_max_abs": pos["max_abs"], "neg_tv": neg["tv"], "neg_max_abs": neg["max_abs"],
            "w_pos_recall": planted_recall(P_pos, P, "good"), "w_neg_recall": planted_recall(P_neg, P, "bad")}


METRICS = ("pos_tv", "pos_max_abs", "neg_tv", "neg_max_abs", "w_pos_recall", "w_neg_recall")


def run_estimation(sizes: list[int], seeds: list[int], estimators: tuple[str, ...] = ESTIMATORS,
                   progress=None) -> dict:
    """Part 1 over ``sizes`` × ``seeds`` × ``estimators``.

    Returns:
        ``{"runs": [{n, seed, estimator, **metrics}], "summary": {estimator: {n: {metric: [mean, lo, hi]}}}}``
        with 95 % percentile-bootstrap intervals over seeds.
    """
    runs = []
    for seed in seeds:
        questions = make_questions(seed)
        for n in sizes:
            records = sample_records(questions, n, seed)
            for estimator in estimators:
                runs.append({"n": n, "seed": seed, "estimator": estimator, **score_fit(fit_world(records, estimator))})
            if progress is not None:
                progress.update(1)
    summary: dict = {}
    for estimator in estimators:
        for n in sizes:
            values = np.array([[r[m] for m in METRICS] for r in runs if r["estimator"] == estimator and r["n"] == n])
            lo, hi = bootstrap_ci(values, seed=0)
            summary.setdefault(estimator, {})[str(n)] = {
                m: [float(values[:, j].mean()), float(lo[j]), float(hi[j])] for j, m in enumerate(METRICS)}
    return {"runs": runs, "summary": summary}

"""Part 1 checks the code (not the hypothesis): with 10k traces the EM's P⁺ / P⁻ are near the planted
matrices and the planted cells top W⁺ / W⁻."""

import numpy as np
import pytest

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.experiments.planted import estimation, world

TOLERANCE_TV = 0.05  # mean total variation per visited row
TOLERANCE_MAX_ABS = 0.10


@pytest.fixture(scope="module")
def records():
    return world.sample_records(world.make_questions(0), 10_000, seed=0)


def test_em_recovers_the_planted_matrices_at_10k(records):
    scores = estimation.score_fit(estimation.fit_world(records, "em"))
    assert scores["pos_tv"] < TOLERANCE_TV and scores["neg_tv"] < TOLERANCE_TV, scores
    assert scores["pos_max_abs"] < TOLERANCE_MAX_ABS and scores["neg_max_abs"] < TOLERANCE_MAX_ABS, scores
    assert scores["w_pos_recall"] == 1.0 and scores["w_neg_recall"] == 1.0, scores


def test_oracle_counting_is_closer_than_with_companion_labels(records):
    oracle = estimation.score_fit(estimation.fit_world(records, "oracle"))
    assert oracle["pos_tv"] < 0.02 and oracle["neg_tv"] < 0.02, oracle


def test_row_errors_on_known_matrices():
    P = world.P_GOOD.copy()
    i, j, k = (PAPER_TAXONOMY.index(s) for s in ("retrieval", "self_verification", "backtracking"))
    P[i, j] -= 0.1
    P[i, k] += 0.1
    err = estimation.row_errors(P, world.P_GOOD)
    assert err["max_abs"] == pytest.approx(0.1)
    assert err["tv"] == pytest.approx(0.1 / len(estimation.VISITED_ROWS))


def test_top_cells_ignore_cells_the_class_rarely_makes():
    K = 17
    P_all = np.full((K, K), 1 / K)
    P_cls = P_all.copy()
    P_cls[2, 3] = 0.5  # made often, W ≈ 8.5
    P_cls[4, 5] = 0.1  # W ≈ 1.7 but below 2/(K-1): ignored
    assert estimation.top_cells(P_cls, P_all, 2)[0] == (2, 3)
    assert (4, 5) not in estimation.top_cells(P_cls, P_all, 5)


def test_unknown_estimator_is_refused(records):
    with pytest.raises(ValueError, match="estimator must be one of"):
        estimation.fit_world(records[:10], "bayes")


def test_run_estimation_summary_has_intervals():
    out = estimation.run_estimation([100], [0, 1], estimators=("em", "frequency"))
    assert len(out["runs"]) == 4
    mean, lo, hi = out["summary"]["em"]["100"]["pos_tv"]
    assert lo <= mean <= hi

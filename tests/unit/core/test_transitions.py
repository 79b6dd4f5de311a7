"""Tests for core/transitions.py: the set-to-set EM transition model (Eqs. 5-8, Algorithms 1-2)."""

from __future__ import annotations

import json
import math
from collections import Counter
from itertools import pairwise

import numpy as np
import pytest

from mralign_plugin.core import transitions
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
from mralign_plugin.core.transitions import (
    count_transitions,
    estimate_transitions,
    estimate_transitions_literal,
    fit_transition_model,
    frequency_transitions,
    log_likelihood,
    set_transition_prob,
    single_label,
    structural_mask,
    trajectory_chain,
    transition_pairs,
)

fs = frozenset


def planted_matrix(num_states: int, rng: np.random.Generator, stop_prob: float = 0.15) -> np.ndarray:
    """A random P on the structural mask; label rows stop w.p. ``stop_prob``, <start> never stops."""
    K = num_states
    trans = rng.dirichlet(np.full(K - 2, 0.5), size=K) * (1.0 - stop_prob)  # (K, K-2)
    trans = np.concatenate([np.zeros((K, 1)), trans, np.full((K, 1), stop_prob)], axis=1)  # (K, K)
    trans[0, 1:-1] /= trans[0, 1:-1].sum()
    trans[0, -1] = 0.0
    trans[-1] = 0.0
    trans[-1, -1] = 1.0
    return trans


def sample_chains(trans: np.ndarray, n: int, rng: np.random.Generator, noise: float = 0.3) -> list[list[frozenset]]:
    """n chains from P; each labelled step gets a random second state with probability ``noise``."""
    K = len(trans)
    cum = trans.cumsum(1)  # (K, K)
    state = np.zeros(n, dtype=np.intp)  # (n,)
    chains = [[fs((0,))] for _ in range(n)]
    alive = np.ones(n, dtype=bool)
    while alive.any():
        idx = np.flatnonzero(alive)  # (n_alive,)
        nxt = np.minimum((cum[state[idx]] < rng.random(len(idx))[:, None]).sum(1), K - 1)  # (n_alive,)
        extra = rng.integers(1, K - 1, len(idx))
        noisy = rng.random(len(idx)) < noise
        for i, s, e, add in zip(idx.tolist(), nxt.tolist(), extra.tolist(), noisy.tolist(), strict=True):
            chains[i].append(fs((s,)) if s == K - 1 or not add else fs((s, e)))
            alive[i] = s != K - 1
        state[idx] = nxt
    return chains


def random_observations(rng: np.random.Generator, K: int, n: int) -> list[tuple[frozenset, frozenset]]:
    """Random (I, J) pairs over all K states (so some have no allowed candidate), |I|, |J| in {1, 2}."""

    def rand_set() -> frozenset:
        return fs(rng.choice(K, size=rng.integers(1, 3), replace=False).tolist())

    distinct = [(rand_set(), rand_set()) for _ in range(max(n // 3, 1))]
    return [distinct[i] for i in rng.integers(0, len(distinct), n)]  # with repeats


# --- structure ----------------------------------------------------------------------------------


def test_structural_mask_k4():
    expected = np.array(
        [
            [0, 1, 1, 1],  # <start> -> labels or straight to <stop>
            [0, 1, 1, 1],
            [0, 1, 1, 1],
            [0, 0, 0, 1],  # <stop> absorbing
        ],
        dtype=np.float64,
    )
    np.testing.assert_array_equal(structural_mask(4), expected)


@pytest.mark.parametrize("K", [2, 5, 17])
def test_structural_mask_any_k(K):
    mask = structural_mask(K)
    assert mask.shape == (K, K) and mask.dtype == np.float64
    assert not mask[:, 0].any()
    assert mask[K - 1].tolist() == [0.0] * (K - 1) + [1.0]
    assert mask[0, K - 1] == 1.0 and all(mask[i, i] == 1.0 for i in range(1, K))


def test_trajectory_chain_skips_empty_steps():
    chain = trajectory_chain([[2], [], [1, 3], set(), (3,)], num_states=5)
    assert chain == [fs({0}), fs({2}), fs({1, 3}), fs({3}), fs({4})]
    assert transition_pairs(chain) == [
        (fs({0}), fs({2})),
        (fs({2}), fs({1, 3})),  # the empty step is skipped: 2 links to {1, 3}
        (fs({1, 3}), fs({3})),
        (fs({3}), fs({4})),
    ]
    assert trajectory_chain([], num_states=5) == [fs({0}), fs({4})]


def test_trajectory_chain_keeps_interned_sets():
    step = fs({1, 2})
    assert trajectory_chain([step], num_states=4)[1] is step


def test_count_transitions_matches_naive_counter(monkeypatch):
    # A tiny flush threshold exercises the bulk counting across many buffer flushes.
    monkeypatch.setattr(transitions, "_FLUSH_AT", 7)
    rng = np.random.default_rng(0)
    chains = sample_chains(planted_matrix(6, rng), 300, rng)
    expected = Counter(pair for chain in chains for pair in pairwise(chain))
    assert count_transitions(iter(chains)) == expected
    assert count_transitions([]) == Counter()


def test_count_transitions_merges_equal_sets_from_distinct_objects():
    chains = [[fs({0}), fs({1, 2}), fs({3})], [fs({0}), fs({2, 1}), fs({3})]]
    assert count_transitions(chains) == Counter({(fs({0}), fs({1, 2})): 2, (fs({1, 2}), fs({3})): 2})


# --- EM: hand-worked, reference equality, properties --------------------------------------------


def test_em_hand_worked_two_states():
    """Two states, every transition allowed, pc = 0.1, dp = 0.6. Observations:
    ({0} -> {1}) once and ({0} -> {0, 1}) twice.

    Init P = [[.5, .5], [.5, .5]].
    Iteration 1, E-step: {0}->{1} has one candidate, r01 = 1. {0}->{0,1}: w00 = w01 = .5 (ρ = 1),
      so r = (.5, .5) per occurrence, x2. C = [[1, 2], [0, 0]].
      M-step row 0: (1 + .1, 2 + .1) / 3.2 = (.34375, .65625); row 1: pseudo-counts only, (.5, .5).
      Damping: .4 * .5 + .6 * .34375 = .40625, .4 * .5 + .6 * .65625 = .59375.
    Iteration 2, E-step: {0}->{0,1}: r = (.40625, .59375) / 1, x2. C[0] = (.8125, 1 + 1.1875).
      M-step row 0: (.9125, 2.2875) / 3.2 = (.28515625, .71484375).
      Damping: .4 * .40625 + .6 * .28515625 = .33359375, .4 * .59375 + .6 * .71484375 = .66640625.
    """
    counts = {(fs({0}), fs({1})): 1, (fs({0}), fs({0, 1})): 2}
    mask = np.ones((2, 2))
    np.testing.assert_allclose(
        estimate_transitions(counts, mask, max_iter=1), [[0.40625, 0.59375], [0.5, 0.5]], rtol=0, atol=1e-15
    )
    np.testing.assert_allclose(
        estimate_transitions(counts, mask, max_iter=2), [[0.33359375, 0.66640625], [0.5, 0.5]], rtol=0, atol=1e-15
    )
    observations = [(fs({0}), fs({1}))] + [(fs({0}), fs({0, 1}))] * 2
    np.testing.assert_allclose(
        estimate_transitions_literal(observations, mask, max_iter=2), [[0.33359375, 0.66640625], [0.5, 0.5]]
    )


def test_em_rows_stochastic_and_mask_respected():
    """Three states <start>, x, <stop>: an unobserved <stop> row stays [0, 0, 1]."""
    counts = {(fs({0}), fs({1})): 3, (fs({1}), fs({1})): 2, (fs({1}), fs({2})): 3}
    P = estimate_transitions(counts, structural_mask(3))
    np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
    assert P[:, 0].tolist() == [0.0, 0.0, 0.0]  # nothing enters <start>
    assert P[2].tolist() == [0.0, 0.0, 1.0]  # <stop> absorbing
    assert P[1, 2] > P[1, 1]  # 3 stops vs 2 self-loops


def test_em_skips_pairs_without_allowed_candidate():
    counts = {(fs({0}), fs({1})): 3, (fs({1}), fs({2})): 3}
    with_forbidden = {**counts, (fs({2}), fs({1})): 5, (fs({1}), fs({0})): 4}  # leave <stop>, enter <start>
    mask = structural_mask(3)
    np.testing.assert_array_equal(estimate_transitions(with_forbidden, mask), estimate_transitions(counts, mask))


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize(
    ("damping", "pseudo_count", "tol"),
    [(0.6, 0.1, 1e-6), (1.0, 0.0, 0.0), (0.3, 0.5, 0.0), (0.6, 0.1, 0.05)],
)
def test_vectorised_equals_literal(seed, damping, pseudo_count, tol):
    """Random K, random set sizes 1-2 (some pairs leave <stop> or enter <start>), random extra zeros
    in the mask; damping 1 with pseudo-count 0 drives cells to exactly 0 (the s == 0 fallback)."""
    rng = np.random.default_rng(seed)
    K = int(rng.integers(3, 8))
    mask = structural_mask(K) * (rng.random((K, K)) < 0.8)
    mask[-1, -1] = 1.0
    observations = random_observations(rng, K, 200)
    settings = {"max_iter": 5, "tol": tol, "damping": damping, "pseudo_count": pseudo_count}
    vectorised = estimate_transitions(Counter(observations), mask, **settings)
    literal = estimate_transitions_literal(observations, mask, **settings)
    np.testing.assert_allclose(vectorised, literal, rtol=0, atol=1e-12)
    assert not vectorised[mask == 0].any()


def test_zero_pseudo_count_uniform_fallback_on_zero_responsibilities():
    """pc = 0, dp = 1: after iteration 1, P[1] = [0, 1, 0, 0] (only the self-loop was seen), so at
    iteration 2 the pair {1} -> {2, 3} has s = 0 and splits its unit uniformly over (1,2) and (1,3)."""
    counts = {(fs({1}), fs({1})): 1, (fs({2}), fs({2, 3})): 1}
    mask = structural_mask(4)
    P1 = estimate_transitions(counts, mask, max_iter=1, damping=1.0, pseudo_count=0.0)
    assert P1[1].tolist() == [0.0, 1.0, 0.0, 0.0]
    counts[(fs({1}), fs({2, 3}))] = 1
    P2 = estimate_transitions(counts, mask, max_iter=2, damping=1.0, pseudo_count=0.0)
    np.testing.assert_allclose(P2[1], [0.0, 0.5, 0.25, 0.25])
    np.testing.assert_allclose(P2[0], [0.0, 1 / 3, 1 / 3, 1 / 3])  # unobserved row, pc = 0: uniform


def test_em_increases_log_likelihood():
    rng = np.random.default_rng(1)
    counts = count_transitions(sample_chains(planted_matrix(6, rng), 2000, rng))
    mask = structural_mask(6)
    ll = [log_likelihood(counts, estimate_transitions(counts, mask, max_iter=t)) for t in (0, 1, 5, 50)]
    assert ll[0] < ll[1] < ll[2] < ll[3]  # uniform < 1 < 5 < 50 damped EM iterations
    assert log_likelihood(counts, frequency_transitions(counts, mask)) < ll[2]


def test_log_likelihood_eq8_by_hand():
    P = np.array([[0.0, 0.5, 0.5], [0.0, 0.2, 0.8], [0.0, 0.0, 1.0]])
    counts = {(fs({0}), fs({1, 2})): 2, (fs({1}), fs({2})): 1}
    # Eq. 7: mean over candidates, (0.5 + 0.5) / 2 = 0.5; then 0.8.
    assert log_likelihood(counts, P) == pytest.approx(2 * math.log(0.5) + math.log(0.8))
    assert set_transition_prob(P, {0, 1}, {1, 2}) == pytest.approx((0.5 + 0.5 + 0.2 + 0.8) / 4)


def test_em_recovers_planted_matrices():
    """Chains from a planted P⁺ and P⁻ with noisy set labels (30 % of steps get a random second
    state). The noise is not exactly Eq. 7's uniform-ρ model, so the converged EM error shrinks with
    the sample towards a small bias floor; the paper's 5 damped iterations get close too, and EM
    beats the frequency baseline, which spreads every noisy set's mass over its wrong candidates."""
    rng = np.random.default_rng(7)
    K = 6
    mask = structural_mask(K)
    for planted in (planted_matrix(K, rng), planted_matrix(K, rng)):  # P⁺, P⁻
        errors = []
        for n in (300, 3000, 30000):
            counts = count_transitions(sample_chains(planted, n, rng))
            converged = estimate_transitions(counts, mask, max_iter=100, tol=1e-10)
            errors.append(np.abs(converged - planted).mean())
        assert errors[0] > errors[1] > errors[2]
        assert errors[2] < 0.005 and np.abs(converged - planted).max() < 0.03
        paper_em = np.abs(estimate_transitions(counts, mask) - planted).max()
        frequency = np.abs(frequency_transitions(counts, mask) - planted).max()
        assert paper_em < 0.05 and paper_em < frequency / 2


# --- ablations ----------------------------------------------------------------------------------


def test_frequency_hand_worked():
    """K = 4 (<start>, a=1, b=2, <stop>), pc = 0.1. Observations: {0}->{1,2} x2, {1,2}->{3} x2,
    {1}->{1} x1 and {1}->{0,2} x1 (the candidate (1,0) is forbidden, so (1,2) takes the unit).
    C[0] = (0, 1, 1, 0); C[1] = (0, 1, 1, 1); C[2] = (0, 0, 0, 1).
    Rows, + 0.1 on allowed cells (columns 1-3): row 0 (0, 1.1, 1.1, .1) / 2.3,
    row 1 (0, 1.1, 1.1, 1.1) / 3.3, row 2 (0, .1, .1, 1.1) / 1.3, row 3 = e_stop."""
    counts = {
        (fs({0}), fs({1, 2})): 2,
        (fs({1, 2}), fs({3})): 2,
        (fs({1}), fs({1})): 1,
        (fs({1}), fs({0, 2})): 1,
    }
    expected = [
        [0, 1.1 / 2.3, 1.1 / 2.3, 0.1 / 2.3],
        [0, 1 / 3, 1 / 3, 1 / 3],
        [0, 0.1 / 1.3, 0.1 / 1.3, 1.1 / 1.3],
        [0, 0, 0, 1],
    ]
    np.testing.assert_allclose(frequency_transitions(counts, structural_mask(4)), expected, rtol=0, atol=1e-15)


def test_single_label():
    assert single_label(["retrieval", "chaining"], [6.0, 8.5]) == ["chaining"]
    assert single_label(["retrieval", "chaining"], [7, 7]) == ["retrieval"]  # tie: the first
    assert single_label(["retrieval", "chaining"], None) == ["retrieval"]
    assert single_label(["retrieval", "chaining"], []) == ["retrieval"]
    assert single_label(["framing"], [1.0]) == ["framing"]
    assert single_label([], None) == []
    with pytest.raises(ValueError, match="confidences"):
        single_label(["retrieval", "chaining"], [1.0])


# --- fit_transition_model -----------------------------------------------------------------------

TINY = Taxonomy(names=("framing", "retrieval", "chaining"), groups=("", "", ""), definitions=("", "", ""))


def tiny_records() -> list[dict]:
    def rec(i, label, steps):
        return {"id": f"t{i}", "prompt": "q?", "response": "<think>\n...\n</think>", "label": label, "steps": steps}

    return [
        rec(0, True, [{"paragraphs": [0], "states": ["framing"]}, {"paragraphs": [1], "states": ["retrieval"]}]),
        rec(
            1,
            True,
            [
                {"paragraphs": [0], "states": ["framing", "chaining"], "confidence": [3.0, 9.0]},
                {"paragraphs": [1], "states": []},
                {"paragraphs": [2], "states": ["chaining"]},
            ],
        ),
        rec(2, False, [{"paragraphs": [0], "states": ["retrieval", "framing"]}]),
        rec(3, False, []),  # <start> -> <stop>
    ]


def test_fit_schema_and_counts():
    records = tiny_records()
    model = fit_transition_model(iter(records), TINY)
    assert list(model) == ["format", "states", "P", "P_pos", "P_neg", "n_trajectories", "n_transitions", "config"]
    assert model["format"] == "mralign-transitions/1"
    assert model["states"] == ["<start>", "framing", "retrieval", "chaining", "<stop>"]
    assert model["n_trajectories"] == {"all": 4, "pos": 2, "neg": 2}
    assert model["n_transitions"] == {"all": 9, "pos": 6, "neg": 3}  # (2+1) + (2+1) | (1+1) + 1
    assert model["config"] == {
        "estimator": "em",
        "max_iter": 5,
        "tol": 1e-6,
        "damping": 0.6,
        "pseudo_count": 0.1,
        "clip": [math.exp(-1), math.e],
        "single_label": False,
    }
    mask = structural_mask(5)
    for key in ("P", "P_pos", "P_neg"):
        P = np.asarray(model[key])
        assert P.shape == (5, 5)
        np.testing.assert_allclose(P.sum(1), 1.0, atol=1e-12)
        assert not P[mask == 0].any() and P[4, 4] == 1.0
    assert json.loads(json.dumps(model)) == model


def test_fit_pools_positive_and_negative_counts():
    records = tiny_records()
    idx = {name: i for i, name in enumerate(TINY.states)}

    def chain(r):
        return trajectory_chain([[idx[s] for s in step["states"]] for step in r["steps"]], TINY.num_states)

    pos = count_transitions(chain(r) for r in records if r["label"])
    neg = count_transitions(chain(r) for r in records if not r["label"])
    mask = structural_mask(TINY.num_states)
    model = fit_transition_model(records, TINY)
    np.testing.assert_allclose(model["P_pos"], estimate_transitions(pos, mask), rtol=0, atol=1e-15)
    np.testing.assert_allclose(model["P_neg"], estimate_transitions(neg, mask), rtol=0, atol=1e-15)
    np.testing.assert_allclose(model["P"], estimate_transitions(pos + neg, mask), rtol=0, atol=1e-15)


def test_fit_on_paper_taxonomy_sample_counts_add_up():
    rng = np.random.default_rng(3)
    names = PAPER_TAXONOMY.states
    records = []
    for i, chain in enumerate(sample_chains(planted_matrix(PAPER_TAXONOMY.num_states, rng), 400, rng)):
        steps = [{"paragraphs": [t], "states": [names[s] for s in sorted(step)]} for t, step in enumerate(chain[1:-1])]
        records.append({"id": i, "label": bool(i % 3), "steps": steps})
    model = fit_transition_model(records, PAPER_TAXONOMY)
    n_traj, n_trans = model["n_trajectories"], model["n_transitions"]
    assert n_traj["all"] == n_traj["pos"] + n_traj["neg"] == 400
    assert n_trans["all"] == n_trans["pos"] + n_trans["neg"] == sum(len(r["steps"]) + 1 for r in records)
    assert len(model["states"]) == 17 and np.asarray(model["P"])[16, 16] == 1.0


def test_fit_single_label_and_frequency():
    records = tiny_records()
    reduced = [
        {**r, "steps": [{**s, "states": single_label(s["states"], s.get("confidence"))} for s in r["steps"]]}
        for r in records
    ]
    model = fit_transition_model(records, TINY, single_label=True)
    assert model["config"]["single_label"] is True
    assert model["P"] == fit_transition_model(reduced, TINY)["P"]
    # record 1's first step keeps "chaining" (confidence 9 > 3): the pair {<start>} -> {chaining} is seen.
    assert model["P_pos"][0][3] > model["P_pos"][0][2]

    freq = fit_transition_model(records, TINY, estimator="frequency")
    assert freq["config"]["estimator"] == "frequency"
    idx = {name: i for i, name in enumerate(TINY.states)}
    chains = [
        trajectory_chain([[idx[s] for s in step["states"]] for step in r["steps"]], TINY.num_states) for r in records
    ]
    np.testing.assert_allclose(freq["P"], frequency_transitions(count_transitions(chains), structural_mask(5)))


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({"label": 1}, r"record 2 \(id t1\): label must be true or false"),
        ({"steps": [{"states": ["framing", "nope"]}]}, r"record 2 \(id t1\):.*unknown state 'nope'"),
        ({"steps": [{"states": ["<stop>"]}]}, r"record 2.*cannot label a step"),
        ({"steps": [{"states": "framing"}]}, r"record 2.*must be a list"),
        ({"steps": None}, r"record 2 \(id t1\)"),
    ],
)
def test_fit_errors_name_the_record(bad, match):
    records = tiny_records()
    records[1] = {**records[1], **bad}
    with pytest.raises(ValueError, match=match):
        fit_transition_model(records, TINY)


def test_fit_rejects_unknown_estimator():
    with pytest.raises(ValueError, match="estimator"):
        fit_transition_model([], TINY, estimator="mle")


def test_fit_empty_corpus_is_uniform_on_mask():
    model = fit_transition_model([], TINY)
    assert model["n_trajectories"] == {"all": 0, "pos": 0, "neg": 0}
    uniform = [[0, 0.25, 0.25, 0.25, 0.25]] * 4 + [[0, 0, 0, 0, 1]]  # pseudo-counts only
    for key in ("P", "P_pos", "P_neg"):
        np.testing.assert_allclose(model[key], uniform, rtol=0, atol=1e-15)


def test_fit_lets_reader_errors_through():
    """A reader that validates lines (core/formats.py) raises its own error; it must pass unchanged."""

    class ReaderError(ValueError):
        pass

    def reader():
        yield tiny_records()[0]
        raise ReaderError("annotated.jsonl:2: label: missing")

    with pytest.raises(ReaderError, match=r"^annotated.jsonl:2: label: missing$"):
        fit_transition_model(reader(), TINY)

"""Meta-reasoning transition model: Eqs. 5-8 and Algorithms 1-2 (paper §3.2.2, App. E).

Notation: K states (0 = <start>, K-1 = <stop>); P is a (K, K) row-stochastic matrix; a state *set*
y ⊆ C is a frozenset of state indices with |y| in {1, 2}. One observation is a consecutive pair
(I, J) of sets in a trajectory's chain <start>, y_1, ..., y_T, <stop> (method/MRALIGN.md §5.2).
M is the number of *distinct* pairs and E the number of (pair, allowed candidate cell) entries.

Data flow: ``fit_transition_model`` reads annotated records once, turns each into a chain
(``trajectory_chain``), counts distinct pairs (memory bounded by the distinct pairs, not by the
corpus), and runs the EM of Algorithm 2 (``estimate_transitions``) on the counts, so the EM cost
does not grow with the corpus. ``estimate_transitions_literal`` is the one-observation-at-a-time
transcription of Algorithm 2 that the tests and ``benchmarks/bench_transitions.py`` compare against.

Example:
    >>> chain = trajectory_chain([[1], [], [2, 3]], num_states=5)
    >>> [sorted(s) for s in chain]
    [[0], [1], [2, 3], [4]]
    >>> counts = count_transitions([chain])
    >>> P = estimate_transitions(counts, structural_mask(5))
    >>> bool(np.allclose(P.sum(1), 1.0)), float(P[4, 4])
    (True, 1.0)
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from itertools import pairwise

import numpy as np

from mralign_plugin.core.taxonomy import MAX_STATES_PER_STEP, Taxonomy

TRANSITIONS_FORMAT = "mralign-transitions/1"

Pair = tuple[frozenset[int], frozenset[int]]

_CHAIN_END = -1  # ends a chain in a buffer of set ids
_CODE_BASE = 1 << 31  # pair code = from_id * _CODE_BASE + to_id
_FLUSH_AT = 1 << 17  # set ids buffered before counting in bulk (1 MiB per buffer)


def set_transition_prob(trans: np.ndarray, from_set: Collection[int], to_set: Collection[int]) -> float:
    """Pr(y_j | y_i, P) with uniform within-set mixing ρ_y(u) = 1/|y|, Eq. 7.

    Equals the mean of ``trans`` over the |y_i|·|y_j| candidate cells of Eq. 5.

    Args:
        trans: (K, K) transition matrix.
        from_set: state indices of y_i (non-empty).
        to_set: state indices of y_j (non-empty).
    """
    rows = np.fromiter(from_set, dtype=np.intp)
    cols = np.fromiter(to_set, dtype=np.intp)
    return float(trans[np.ix_(rows, cols)].mean())  # (|y_i|, |y_j|) -> scalar


def structural_mask(num_states: int) -> np.ndarray:
    """Structural mask A of allowed transitions, Alg. 1.

    Nothing enters ``<start>`` (column 0 is zero); ``<stop>`` (index K-1) is absorbing (its row is
    zero except the self-loop). Self-loops and ``<start>`` -> ``<stop>`` are allowed.

    Args:
        num_states: K, including ``<start>`` and ``<stop>`` (K >= 2).

    Returns:
        (K, K) float64 array of 0/1.
    """
    if num_states < 2:
        raise ValueError(f"structural_mask: need at least <start> and <stop>, got K={num_states}")
    mask = np.ones((num_states, num_states))  # (K, K)
    mask[:, 0] = 0.0
    mask[-1, :] = 0.0
    mask[-1, -1] = 1.0
    return mask


def trajectory_chain(step_states: Iterable[Collection[int]], num_states: int) -> list[frozenset[int]]:
    """The state-set chain {<start>}, y_1, ..., y_T, {<stop>} of one trajectory (§5.2).

    Interpretation (method/MRALIGN.md §9 items 3-4): steps with no states are skipped, so the
    previous labelled step links to the next one; the boundary sets are always added. A step that
    is already a frozenset is reused as is (no copy), which keeps interned sets interned.

    Args:
        step_states: per-step collections of state indices in 1..K-2 (may be empty).
        num_states: K.

    Returns:
        List of T+2 frozensets.
    """
    return [frozenset((0,)), *[frozenset(s) for s in step_states if s], frozenset((num_states - 1,))]


def transition_pairs(chain: Sequence[frozenset[int]]) -> list[Pair]:
    """Consecutive (from_set, to_set) pairs of a chain: the observations of Eq. 8."""
    return list(pairwise(chain))


def count_transitions(chains: Iterable[Sequence[frozenset[int]]]) -> Counter[Pair]:
    """Count the distinct consecutive pairs over a stream of chains.

    Streams: sets are interned to integer ids and buffered, and each full buffer is counted in bulk,
    so memory is bounded by the distinct sets and pairs (plus a fixed buffer), never by the number
    of observations.

    Args:
        chains: e.g. the outputs of :func:`trajectory_chain`.

    Returns:
        Counter mapping (from_set, to_set) -> number of occurrences.
    """
    set_ids: dict[frozenset[int], int] = {}
    pair_codes: Counter[int] = Counter()
    buffer = array("q")
    for chain in chains:
        buffer.extend([set_ids.setdefault(s, len(set_ids)) for s in chain])
        buffer.append(_CHAIN_END)
        if len(buffer) >= _FLUSH_AT:
            _flush_pair_codes(buffer, pair_codes)
    _flush_pair_codes(buffer, pair_codes)
    return _decode_pairs(pair_codes, list(set_ids))


def _flush_pair_codes(buffer: array, pair_codes: Counter[int]) -> None:
    """Count the consecutive pairs of the chains in ``buffer`` into ``pair_codes``; empty ``buffer``.

    ``buffer`` holds set ids, each chain followed by ``_CHAIN_END``; a pair (u, v) is coded as
    u * _CODE_BASE + v.
    """
    ids = np.frombuffer(buffer, dtype=np.int64)  # (L,)
    src, dst = ids[:-1], ids[1:]  # (L-1,), (L-1,)
    codes = (src * _CODE_BASE + dst)[(src != _CHAIN_END) & (dst != _CHAIN_END)]  # (n_pairs,)
    uniq, n = np.unique(codes, return_counts=True)  # (U,), (U,)
    pair_codes.update(dict(zip(uniq.tolist(), n.tolist(), strict=True)))
    del ids, src, dst  # release the exported buffer so that it can be emptied
    del buffer[:]


def _decode_pairs(pair_codes: Counter[int], sets: Sequence[frozenset[int]]) -> Counter[Pair]:
    """Pair codes -> Counter over (from_set, to_set); ids naming the same set are merged."""
    counts: Counter[Pair] = Counter()
    for code, n in pair_codes.items():
        counts[sets[code // _CODE_BASE], sets[code % _CODE_BASE]] += n
    return counts


def single_label(states: list, confidence: list | None = None) -> list:
    """Keep the highest-confidence state of a step: the "Label Diver. ✗" ablation (§9 item 16).

    Ties and a missing confidence list keep the first state.

    Example:
        >>> single_label(["retrieval", "chaining"], [6.0, 8.5])
        ['chaining']
        >>> single_label(["retrieval", "chaining"], None)
        ['retrieval']
    """
    if not states:
        return []
    if not confidence:
        return [states[0]]
    if len(confidence) != len(states):
        raise ValueError(f"single_label: {len(states)} states but {len(confidence)} confidences")
    return [states[max(range(len(states)), key=confidence.__getitem__)]]  # max keeps the first on ties


_single_label = single_label  # fit_transition_model's `single_label` flag shadows the name


def _row_uniform(allowed: np.ndarray) -> np.ndarray:
    """Each row uniform over its allowed cells (all-zero rows stay zero). (K, K) -> (K, K)."""
    n_allowed = allowed.sum(1, keepdims=True)  # (K, 1)
    return np.divide(allowed, n_allowed, out=np.zeros_like(allowed), where=n_allowed > 0)  # (K, K)


def _map_rows(soft_counts: np.ndarray, allowed: np.ndarray, pseudo_count: float) -> np.ndarray:
    """M-step of Alg. 2: (C + pc·A) / rowsum under the mask. (K, K) -> (K, K).

    Interpretation: a row with zero total (unobserved and pseudo_count = 0) takes the pc -> 0 limit,
    i.e. stays uniform over its allowed cells.
    """
    smoothed = (soft_counts + pseudo_count * allowed) * allowed  # (K, K)
    row_sums = smoothed.sum(1, keepdims=True)  # (K, 1)
    normalised = np.divide(smoothed, row_sums, out=np.zeros_like(smoothed), where=row_sums > 0)
    return np.where(row_sums > 0, normalised, _row_uniform(allowed))  # (K, K)


def _candidate_incidence(
    pair_counts: Mapping[Pair, float], allowed: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Flat incidence of the distinct pairs on their allowed candidate cells, Eq. 5.

    Pairs with no allowed candidate are dropped (Alg. 2 skips them).

    Returns:
        pair_ids (E,) int: index of the pair among the M kept pairs.
        cells (E,) int: flat cell a*K + b of each candidate edge (a, b).
        rho (E,) float: ρ_I(a) = 1/|I|, Eq. 6.
        n_cand (M,) float: |pairs(I, J)|, the number of allowed candidates.
        counts (M,) float: occurrences of each kept pair.
    """
    K = allowed.shape[0]
    ok = allowed.astype(bool).tolist()
    pair_ids, cells, rho, n_cand, counts = [], [], [], [], []
    for (from_set, to_set), count in pair_counts.items():
        if not all(0 <= u < K for u in (*from_set, *to_set)):
            raise ValueError(f"transition {sorted(from_set)} -> {sorted(to_set)}: state index outside 0..{K - 1}")
        cand = [a * K + b for a in from_set for b in to_set if ok[a][b]]
        if not cand:
            continue
        pair_ids += [len(counts)] * len(cand)
        cells += cand
        rho += [1.0 / len(from_set)] * len(cand)
        n_cand.append(len(cand))
        counts.append(count)
    return (
        np.array(pair_ids, dtype=np.intp),
        np.array(cells, dtype=np.intp),
        np.array(rho, dtype=np.float64),
        np.array(n_cand, dtype=np.float64),
        np.array(counts, dtype=np.float64),
    )


def estimate_transitions(
    pair_counts: Mapping[Pair, float],
    mask: np.ndarray,
    max_iter: int = 5,
    tol: float = 1e-6,
    damping: float = 0.6,
    pseudo_count: float = 0.1,
) -> np.ndarray:
    """EM estimate of P from set-to-set transitions, Alg. 2 (App. E), vectorised over distinct pairs.

    Each distinct pair (I, J) seen n times contributes n units of soft count, so the result equals
    Alg. 2 run on the n-fold repeated observations (see :func:`estimate_transitions_literal`), at
    a cost of O(E) per iteration whatever the corpus size.

    Args:
        pair_counts: (from_set, to_set) -> count, e.g. from :func:`count_transitions`.
        mask: (K, K) 0/1 allowed transitions A (:func:`structural_mask`).
        max_iter: at most this many EM iterations (paper: 5).
        tol: stop when max |P - P_prev| < tol (paper: 1e-6).
        damping: dp in P <- (1 - dp) P + dp P_new (paper: 0.6).
        pseudo_count: symmetric Dirichlet pseudo-count on allowed cells (paper: 0.1).

    Returns:
        (K, K) row-stochastic P, zero outside the mask.
    """
    allowed = (np.asarray(mask) != 0).astype(np.float64)  # (K, K)
    K = allowed.shape[0]
    pair_ids, cells, rho, n_cand, counts = _candidate_incidence(pair_counts, allowed)  # (E,) x3, (M,) x2
    M = len(counts)
    uniform_share = 1.0 / n_cand[pair_ids]  # (E,) fallback responsibility when s == 0
    obs_weight = counts[pair_ids]  # (E,)

    trans = _row_uniform(allowed)  # (K, K)
    last = trans
    for _ in range(max_iter):
        # E-step: r_ab = ρ_I(a) P_ab / Σ_pairs ρ_I P (the ρ_J(b) factor cancels).
        w = rho * trans.ravel()[cells]  # (E,)
        s = np.bincount(pair_ids, weights=w, minlength=M)[pair_ids]  # (M,) -> (E,)
        r = np.divide(w, s, out=uniform_share.copy(), where=s > 0)  # (E,)
        soft_counts = np.bincount(cells, weights=r * obs_weight, minlength=K * K).reshape(K, K)  # (K, K)
        # M-step (MAP with pseudo-count), then damping.
        trans = (1.0 - damping) * trans + damping * _map_rows(soft_counts, allowed, pseudo_count)  # (K, K)
        if np.abs(trans - last).max() < tol:
            break
        last = trans
    return trans


def estimate_transitions_literal(
    observations: list[Pair],
    mask: np.ndarray,
    max_iter: int = 5,
    tol: float = 1e-6,
    damping: float = 0.6,
    pseudo_count: float = 0.1,
) -> np.ndarray:
    """Literal transcription of Alg. 2 (App. E): pure Python, one observation at a time.

    The reference implementation that the tests and the benchmark compare
    :func:`estimate_transitions` against; far too slow for a real corpus. Arguments as in
    :func:`estimate_transitions`, except that ``observations`` lists every (I, J) occurrence.

    Returns:
        (K, K) P.
    """
    A = [[1.0 if x else 0.0 for x in row] for row in np.asarray(mask).tolist()]
    K = len(A)
    pairs_of = [[(a, b) for a in from_set for b in to_set if A[a][b] == 1.0] for from_set, to_set in observations]
    P = [[A[a][b] / sum(A[a]) if sum(A[a]) > 0 else 0.0 for b in range(K)] for a in range(K)]
    last = P
    for _ in range(max_iter):
        C = [[0.0] * K for _ in range(K)]
        for (from_set, _), pairs in zip(observations, pairs_of, strict=True):
            if not pairs:
                continue
            rho_I = 1.0 / len(from_set)
            w = [rho_I * P[a][b] for a, b in pairs]
            s = sum(w)
            for (a, b), w_ab in zip(pairs, w, strict=True):
                C[a][b] += w_ab / s if s > 0 else 1.0 / len(pairs)
        P_new = [[0.0] * K for _ in range(K)]
        for a in range(K):
            row_sum = sum(C[a][b] + pseudo_count * A[a][b] for b in range(K))
            for b in range(K):
                if A[a][b] == 1.0:
                    if row_sum > 0:
                        P_new[a][b] = (C[a][b] + pseudo_count * A[a][b]) / row_sum
                    else:  # same interpretation as _map_rows: unobserved row with pc = 0 stays uniform
                        P_new[a][b] = 1.0 / sum(A[a])
        P = [[(1.0 - damping) * P[a][b] + damping * P_new[a][b] for b in range(K)] for a in range(K)]
        if max(abs(P[a][b] - last[a][b]) for a in range(K) for b in range(K)) < tol:
            break
        last = P
    return np.array(P, dtype=np.float64)


def frequency_transitions(pair_counts: Mapping[Pair, float], mask: np.ndarray, pseudo_count: float = 0.1) -> np.ndarray:
    """Frequency-weighted baseline of the "EM ✗" ablation (Table 3; method/MRALIGN.md §9 item 16).

    One non-iterated pass: each observation's unit mass is split uniformly over its allowed
    candidate cells, the pseudo-count is added on allowed cells, and rows are normalised.

    Args:
        pair_counts: (from_set, to_set) -> count.
        mask: (K, K) 0/1 allowed transitions.
        pseudo_count: added to every allowed cell (paper: 0.1).

    Returns:
        (K, K) row-stochastic P.
    """
    allowed = (np.asarray(mask) != 0).astype(np.float64)  # (K, K)
    K = allowed.shape[0]
    pair_ids, cells, _, n_cand, counts = _candidate_incidence(pair_counts, allowed)
    mass = (counts / n_cand)[pair_ids]  # (E,)
    soft_counts = np.bincount(cells, weights=mass, minlength=K * K).reshape(K, K)  # (K, K)
    return _map_rows(soft_counts, allowed, pseudo_count)


def log_likelihood(pair_counts: Mapping[Pair, float], trans: np.ndarray) -> float:
    """Observed-data log-likelihood L(P) = Σ_m log Pr(J_m | I_m, P), Eq. 8 (uniform ρ, Eq. 7).

    Args:
        pair_counts: (from_set, to_set) -> count; each distinct pair contributes count · log Pr.
        trans: (K, K) P.
    """
    return float(sum(n * math.log(set_transition_prob(trans, *pair)) for pair, n in pair_counts.items()))


def fit_transition_model(
    records: Iterable[dict],
    taxonomy: Taxonomy,
    estimator: str = "em",
    single_label: bool = False,
    max_iter: int = 5,
    tol: float = 1e-6,
    damping: float = 0.6,
    pseudo_count: float = 0.1,
    clip: tuple[float, float] = (math.exp(-1), math.e),
) -> dict:
    """Fit P, P⁺ and P⁻ from annotated trajectories in one pass, Alg. 1 (App. E; §5.2-5.3).

    Positive (``label`` true) and negative records are counted separately; P is fit on the pooled
    counts (D⁺ ∪ D⁻, not an average of P⁺ and P⁻). Records are expected to be valid (see
    ``core/formats.py``); a malformed one raises ``ValueError`` naming its position.

    Args:
        records: annotated-trajectory dicts (DESIGN.md "Formats"): ``label`` bool and ``steps``, a
            list of ``{"states": [names], "confidence": [...] (optional), ...}``.
        taxonomy: the labels; K = taxonomy.num_states.
        estimator: ``"em"`` (Alg. 2) or ``"frequency"`` (the "EM ✗" ablation).
        single_label: keep only the highest-confidence state per step (the "Label Diver. ✗" ablation).
        max_iter, tol, damping, pseudo_count: EM settings, see :func:`estimate_transitions`.
        clip: (m, M) of Eq. 10; only recorded in the config for the weighting stage.

    Returns:
        The transitions.json dict: format, states, P / P_pos / P_neg as (K, K) nested lists,
        n_trajectories and n_transitions ({"all", "pos", "neg"}) and config.
    """
    if estimator not in ("em", "frequency"):
        raise ValueError(f"estimator must be 'em' or 'frequency', got {estimator!r}")
    K = taxonomy.num_states
    start, stop = taxonomy.start, taxonomy.stop
    # Chains are buffered as interned set ids (0 = {<start>}, 1 = {<stop>}, then one id per distinct
    # tuple of names) and counted in bulk; memory is bounded by the distinct sets and pairs.
    sets: list[frozenset[int]] = [frozenset((start,)), frozenset((stop,))]
    set_ids: dict[tuple[str, ...], int] = {}

    def new_id(names: list[str]) -> int:
        if not isinstance(names, list):
            raise ValueError(f"states must be a list of names, got {names!r}")
        if len(names) > MAX_STATES_PER_STEP or len(set(names)) < len(names):
            raise ValueError(f"states {names}: at most {MAX_STATES_PER_STEP} distinct states per step")
        indices = frozenset(taxonomy.index(name) for name in names)
        if start in indices or stop in indices:
            raise ValueError(f"states {names}: <start>/<stop> cannot label a step")
        set_ids[tuple(names)] = len(sets)
        sets.append(indices)
        return len(sets) - 1

    buffers = {True: array("q"), False: array("q")}  # label -> buffered chains
    pair_codes = {True: Counter(), False: Counter()}  # label -> Counter over pair codes
    n_traj = {True: 0, False: 0}
    for i, record in enumerate(records):
        try:
            label = record["label"]
            if label is not True and label is not False:
                raise ValueError(f"label must be true or false, got {label!r}")
            # trajectory_chain in id form: <start>, the steps with states (empty steps skipped), <stop>.
            if single_label:
                step_ids = [
                    set_ids.get(tuple(names)) or new_id(names)
                    for step in record["steps"]
                    if (names := _single_label(step.get("states"), step.get("confidence")))
                ]
            else:
                step_ids = [
                    set_ids.get(tuple(names)) or new_id(names)
                    for step in record["steps"]
                    if (names := step.get("states"))
                ]
        except (KeyError, TypeError, AttributeError, ValueError) as exc:
            rid = record.get("id") if isinstance(record, dict) else None
            raise ValueError(f"record {i + 1}{f' (id {rid})' if rid is not None else ''}: {exc}") from exc
        buffer = buffers[label]
        buffer.extend([0, *step_ids, 1, _CHAIN_END])
        if len(buffer) >= _FLUSH_AT:
            _flush_pair_codes(buffer, pair_codes[label])
        n_traj[label] += 1
    counts = {}
    for label in (True, False):
        _flush_pair_codes(buffers[label], pair_codes[label])
        counts[label] = _decode_pairs(pair_codes[label], sets)

    counts_all = counts[True] + counts[False]  # pooled D⁺ ∪ D⁻
    mask = structural_mask(K)
    settings = {"max_iter": max_iter, "tol": tol, "damping": damping, "pseudo_count": pseudo_count}
    if estimator == "em":
        fit = [estimate_transitions(c, mask, **settings) for c in (counts_all, counts[True], counts[False])]
    else:
        fit = [frequency_transitions(c, mask, pseudo_count) for c in (counts_all, counts[True], counts[False])]
    n_pos, n_neg = sum(counts[True].values()), sum(counts[False].values())
    return {
        "format": TRANSITIONS_FORMAT,
        "states": list(taxonomy.states),
        "P": fit[0].tolist(),
        "P_pos": fit[1].tolist(),
        "P_neg": fit[2].tolist(),
        "n_trajectories": {"all": n_traj[True] + n_traj[False], "pos": n_traj[True], "neg": n_traj[False]},
        "n_transitions": {"all": n_pos + n_neg, "pos": n_pos, "neg": n_neg},
        "config": {
            "estimator": estimator,
            **settings,
            "clip": [float(clip[0]), float(clip[1])],
            "single_label": bool(single_label),
        },
    }

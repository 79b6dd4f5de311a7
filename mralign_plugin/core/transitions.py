"""Meta-reasoning transition model: Eqs. 5-8 and Algorithms 1-2 (paper §3.2.2, App. E).

Notation: K states (0 = <start>, K-1 = <stop>); P is a (K, K) row-stochastic matrix; a state *set*
y ⊆ C is a frozenset of state indices with |y| in {1, 2}.
"""

from __future__ import annotations

from collections.abc import Collection

import numpy as np


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

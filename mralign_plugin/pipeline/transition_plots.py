"""Transition-model figures: heatmaps of P, P⁺, P⁻ and the advantage maps W± = P±/P (paper Figure 7).

Drawn by ``mralign fit-transitions --plot-dir`` and reused by evaluation (``mralign analyze``), so they
live with the stage that fits the model. Matplotlib with the Agg backend, so it runs headless; every
figure is labelled with state names.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mralign_plugin.core.formats import TransitionModel

MARK_FRACTION = 0.15  # Figure 7 marks the top and bottom 15 % of cells


def advantage(trans_class: np.ndarray, trans_all: np.ndarray) -> np.ndarray:
    """W = P^± / P elementwise (Figure 7), NaN where P is 0 (structurally impossible cells). (K,K)."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(trans_all > 0, trans_class / trans_all, np.nan)


def extreme_cells(values: np.ndarray, fraction: float = MARK_FRACTION) -> tuple[np.ndarray, np.ndarray]:
    """Boolean (K,K) masks of the top and bottom ``fraction`` of the finite cells of ``values``."""
    finite = np.isfinite(values)
    vals = values[finite]
    if vals.size == 0:
        empty = np.zeros_like(finite)
        return empty, empty
    hi, lo = np.quantile(vals, 1 - fraction), np.quantile(vals, fraction)
    return finite & (values >= hi), finite & (values <= lo)


def plot_matrix(
    values: np.ndarray, states: tuple[str, ...], title: str, path: Path, diverging: bool = False, mark: bool = False
) -> Path:
    """Save a (K,K) heatmap with from-states as rows and to-states as columns."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.colors import LogNorm, Normalize, TwoSlopeNorm
    from matplotlib.patches import Rectangle

    K = len(states)
    fig, ax = plt.subplots(figsize=(11, 9.5))
    shown = np.ma.masked_invalid(values)
    if diverging:
        finite = values[np.isfinite(values)]
        span = max(float(np.abs(np.log(finite[finite > 0])).max()) if finite.size else 1.0, 1e-3)
        norm = LogNorm(vmin=np.exp(-span), vmax=np.exp(span)) if finite.size else Normalize()
        cmap = "RdBu_r"
    else:
        finite = values[np.isfinite(values)]
        vmax = float(np.abs(finite).max()) if finite.size else 1.0
        vmax = vmax if vmax > 0 else 1.0  # an all-zero matrix (e.g. no shift) still draws
        # Signed values (a shift Δ) get a symmetric scale centred on 0; probabilities run from 0.
        norm = TwoSlopeNorm(vmin=-vmax, vcenter=0.0, vmax=vmax) if (finite < 0).any() else Normalize(0, vmax)
        cmap = "RdBu_r" if (finite < 0).any() else "viridis"
    image = ax.imshow(shown, cmap=cmap, norm=norm)
    fig.colorbar(image, ax=ax, fraction=0.046, pad=0.04)
    ax.set_xticks(range(K), states, rotation=60, ha="right", fontsize=8)
    ax.set_yticks(range(K), states, fontsize=8)
    ax.set_xlabel("to state (y_t)")
    ax.set_ylabel("from state (y_{t-1})")
    if mark:
        title += f"\nsolid box: top {MARK_FRACTION:.0%} of cells, dashed box: bottom {MARK_FRACTION:.0%}"
    ax.set_title(title)
    top, bottom = extreme_cells(values) if mark else (np.zeros((K, K), bool), np.zeros((K, K), bool))
    for i in range(K):
        for j in range(K):
            if not np.isfinite(values[i, j]):
                continue
            bold = top[i, j] or bottom[i, j]
            r, g, b, _ = image.cmap(image.norm(values[i, j]))
            dark = 0.299 * r + 0.587 * g + 0.114 * b < 0.5  # white text on dark cells
            ax.text(j, i, f"{values[i, j]:.2f}", ha="center", va="center", fontsize=5.5,
                    fontweight="bold" if bold else "normal", color="white" if dark else "black")
            if bold:
                ax.add_patch(Rectangle((j - 0.5, i - 0.5), 1, 1, fill=False, lw=1.4,
                                       ls="-" if top[i, j] else "--", ec="white" if dark else "black"))
    # Fixed margins instead of tight_layout: that would render the 289 cell labels one extra time.
    fig.subplots_adjust(left=0.15, right=0.97, bottom=0.15, top=0.92)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path


def plot_transition_model(model: TransitionModel, out_dir: str | Path) -> list[Path]:
    """Heatmaps of P, P⁺, P⁻ and of W⁺ = P⁺/P, W⁻ = P⁻/P with extreme cells marked (Figure 7)."""
    out_dir = Path(out_dir)
    states = model.taxonomy.states
    n = model.raw.get("n_trajectories", {})
    return [
        plot_matrix(model.trans_all, states, f"P (all trajectories, n={n.get('all', '?')})", out_dir / "P.png"),
        plot_matrix(model.trans_pos, states, f"P+ (positive, n={n.get('pos', '?')})", out_dir / "P_pos.png"),
        plot_matrix(model.trans_neg, states, f"P- (negative, n={n.get('neg', '?')})", out_dir / "P_neg.png"),
        plot_matrix(advantage(model.trans_pos, model.trans_all), states, "W+ = P+ / P (transition advantage, positive)",
                    out_dir / "W_pos.png", diverging=True, mark=True),
        plot_matrix(advantage(model.trans_neg, model.trans_all), states, "W- = P- / P (transition advantage, negative)",
                    out_dir / "W_neg.png", diverging=True, mark=True),
    ]

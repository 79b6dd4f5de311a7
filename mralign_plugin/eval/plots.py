"""Evaluation figures: scores with CIs, hit-gap positions (Figure 1), consistency buckets (Figure 5),
and the transition-shift graph (Figure 4). The transition heatmaps are pipeline/transition_plots.py.

Matplotlib with the Agg backend, so it runs headless.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=130, bbox_inches="tight")
    _pyplot().close(fig)
    return path


def plot_scores(report: dict, path: Path) -> Path | None:
    """Acc and Mis per short-answer dataset, one bar per table row, with bootstrap 95 % CIs."""
    qa = [ds for ds, task in report["datasets"].items() if task == "short_qa"]
    rows = report["rows"]
    if not qa or not rows:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(max(9.0, 2.6 * len(qa) * 2), 5.2))
    colors = plt.get_cmap("tab10")
    for ax, (key, title) in zip(axes, (("acc", "Acc (%) ↑"), ("mis", "Mis (%) ↓ (thinking on only)")), strict=True):
        # only rows with a value take a slot (thinking-off rows have no Mis); colours stay per row
        shown = [k for k, row in enumerate(rows) if any(row["results"].get(ds, {}).get(key) is not None for ds in qa)]
        width = 0.8 / max(1, len(shown))
        for slot, k in enumerate(shown):
            row = rows[k]
            for d, ds in enumerate(qa):
                res = row["results"].get(ds, {})
                value, ci = res.get(key), res.get(f"{key}_ci")
                if value is None:
                    continue
                x = d - 0.4 + width * (slot + 0.5)
                yerr = [[value - ci[0]], [ci[1] - value]] if ci else None
                ax.bar(x, value, width * 0.92, color=colors(k % 10), yerr=yerr, capsize=3)
                ax.text(x, value + (yerr[1][0] if yerr else 0) + 0.8, f"{value:.1f}", ha="center", va="bottom",
                        fontsize=8)
        ax.set_xticks(range(len(qa)), qa)
        ax.set_title(title)
        ax.set_ylim(0, max(5.0, ax.get_ylim()[1] * 1.08))
        ax.grid(axis="y", alpha=0.3)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(k % 10)) for k in range(len(rows))]
    labels = [row["method"] for row in rows]
    fig.legend(handles, labels, loc="lower center", ncol=min(4, len(rows)), bbox_to_anchor=(0.5, -0.08), frameon=False)
    fig.suptitle("Accuracy and reasoning-answer hit gap, with bootstrap 95% CIs")
    fig.tight_layout()
    return _save(fig, path)


def plot_hit_gap(report: dict, path: Path) -> Path | None:
    """Figure 1: first -> last gold position (% of the thinking), right vs wrong answers."""
    entries = []  # (label, first, last, group)
    for row in report["rows"]:
        for ds, res in row["results"].items():
            gap = res.get("hit_gap")
            for group in ("right", "wrong"):
                if gap and gap[group]["n"]:
                    g = gap[group]
                    entries.append((f"{row['method']} | {ds} | {group} (n={g['n']})", g["first"], g["last"], group))
    if not entries:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 1.8 + 0.6 * len(entries)))
    color = {"right": "tab:green", "wrong": "tab:red"}
    for y, (_, first, last, group) in enumerate(entries):
        ax.plot([first, last], [y, y], color=color[group], lw=2.5, alpha=0.7)
        ax.scatter([first], [y], marker="o", s=60, color=color[group], zorder=3)
        ax.scatter([last], [y], marker="D", s=60, color=color[group], zorder=3)
        # first's value to the left of its marker, last's to the right, so they never overlap
        ax.annotate(f"{first:.1f}", (first, y), xytext=(-8, 0), textcoords="offset points", ha="right",
                    va="center", fontsize=8)
        ax.annotate(f"{last:.1f}", (last, y), xytext=(8, 0), textcoords="offset points", ha="left",
                    va="center", fontsize=8)
    ax.set_yticks(range(len(entries)), [e[0] for e in entries], fontsize=9)
    ax.set_ylim(-0.6, len(entries) - 0.4)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("position of the gold answer in the thinking (% of its characters)")
    ax.set_title("Reasoning-answer hit gap (Figure 1): first (o) and last (◆) gold occurrence in the thinking")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_buckets(report: dict, path: Path) -> Path | None:
    """Figure 5: Acc change (percentage points) per baseline consistency bucket."""
    from mralign_plugin.eval.metrics import BUCKETS

    buckets = report.get("buckets") or []
    if not buckets:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(8.0, 1.2 * len(buckets) * 3), 5.2))
    width = 0.8 / len(buckets)
    colors = plt.get_cmap("tab10")
    titles = {"both_correct": "Both Correct", "both_wrong": "Both Wrong", "inconsistent": "Inconsistent"}
    for k, b in enumerate(buckets):
        for x0, name in enumerate(BUCKETS):
            cell = b["buckets"][name]
            if cell["delta_acc"] is None:
                continue
            x = x0 - 0.4 + width * (k + 0.5)
            ax.bar(x, cell["delta_acc"], width * 0.92, color=colors(k % 10))
            va = "bottom" if cell["delta_acc"] >= 0 else "top"
            ax.text(x, cell["delta_acc"], f"{cell['delta_acc']:+.1f}\nn={cell['n']}", ha="center", va=va, fontsize=8)
    handles = [plt.Rectangle((0, 0), 1, 1, color=colors(k % 10)) for k in range(len(buckets))]
    ax.legend(handles, [f"{b['method']} | {b['dataset']}" for b in buckets], fontsize=8, loc="best")
    ax.axhline(0, color="black", lw=0.8)
    ax.set_xticks(range(len(BUCKETS)), [titles[n] for n in BUCKETS])
    lo, hi = ax.get_ylim()
    ax.set_ylim(min(lo, -5) * 1.2, max(hi, 5) * 1.2)
    ax.set_ylabel("Acc change vs baseline (percentage points)")
    ax.set_title(f"Where the gains come from (Figure 5): buckets of {report.get('baseline')}")
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    return _save(fig, path)


def plot_shift_graph(
    delta: np.ndarray, states: tuple[str, ...], strengthened: list[tuple[int, int]], weakened: list[tuple[int, int]],
    path: Path, title: str = "Transition shift Δ = P_after − P_before",
) -> Path:
    """Figure 4 (graph): states on a circle; the strengthened edges solid, the weakened dashed.

    Args:
        delta: (K,K) Δ; edge width grows with |Δ| and each edge is labelled with its Δ.
        states: the K state names.
        strengthened, weakened: (from, to) index pairs to draw (e.g. the top 10 of each).
    """
    from matplotlib.lines import Line2D
    from matplotlib.patches import Circle, FancyArrowPatch

    plt = _pyplot()
    K = len(states)
    angles = np.pi / 2 - 2 * np.pi * np.arange(K) / K  # (K,), clockwise from the top
    pos = np.stack([np.cos(angles), np.sin(angles)], axis=1)  # (K, 2)
    fig, ax = plt.subplots(figsize=(11, 11))
    ax.set_aspect("equal")
    ax.axis("off")
    edges = [(e, "tab:blue", "-") for e in strengthened] + [(e, "tab:red", "--") for e in weakened]
    scale = max((abs(delta[i, j]) for (i, j), _, _ in edges), default=1.0) or 1.0
    anchor = 0.84 * pos  # (K, 2): edges join points inside the ring of names, so no name is covered
    for (i, j), color, style in edges:
        d = float(delta[i, j])
        lw = 1.0 + 4.0 * abs(d) / scale
        if i == j:  # self-loop: a small circle just inside the node's name
            ax.add_patch(Circle(pos[i] * 0.84, 0.055, fill=False, ec=color, lw=lw, ls=style))
            ax.text(*(pos[i] * 0.71), f"{d:+.3f}", ha="center", va="center", fontsize=8, color=color)
            continue
        rad = 0.18
        ax.add_patch(FancyArrowPatch(anchor[i], anchor[j], connectionstyle=f"arc3,rad={rad}", arrowstyle="-|>",
                                     mutation_scale=16, lw=lw, ls=style, color=color, shrinkA=4, shrinkB=4,
                                     alpha=0.85))
        dx, dy = anchor[j] - anchor[i]
        mid = (anchor[i] + anchor[j]) / 2 + 0.5 * rad * np.array([dy, -dx])  # peak of the arc3 curve
        ax.text(*mid, f"{d:+.3f}", ha="center", va="center", fontsize=8, color=color,
                bbox=dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8))
    for k, name in enumerate(states):
        ax.text(*pos[k], name, ha="center", va="center", fontsize=9.5, zorder=5,
                bbox=dict(boxstyle="round,pad=0.3", fc="#f2f2f2", ec="gray"))
    ax.set_xlim(-1.3, 1.3)
    ax.set_ylim(-1.25, 1.2)
    ax.legend([Line2D([0], [0], color="tab:blue", lw=2.5), Line2D([0], [0], color="tab:red", lw=2.5, ls="--")],
              [f"strengthened (top {len(strengthened)}, Δ > 0)", f"weakened (top {len(weakened)}, Δ < 0)"],
              loc="lower center", bbox_to_anchor=(0.5, -0.04), ncol=2, frameon=False, fontsize=10)
    ax.set_title(title + "\nedge width ∝ |Δ|, label = Δ", fontsize=12)
    return _save(fig, path)

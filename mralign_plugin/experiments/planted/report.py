"""The planted experiment's report: aggregate over seeds (mean and 95 % bootstrap interval), tables, figure."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from mralign_plugin.eval.metrics import bootstrap_ci
from mralign_plugin.experiments.planted.world import PLANTED

CURVE_METRICS = ("acc", "mis", *(f"freq/{a}->{b}" for a, b, _ in PLANTED), "dist_good", "dist_bad")
ARM_NAMES = {"base": "base", "kto": "KTO (weights off)", "mralign": "MR-ALIGN (known states)",
             "mralign_rules": "MR-ALIGN (rules tagger)"}


def mean_ci(values: list[float]) -> list[float]:
    """[mean, lo, hi] over seeds (NaNs dropped), 95 % percentile bootstrap."""
    v = np.array([x for x in values if not math.isnan(x)])
    if v.size == 0:
        return [math.nan] * 3
    lo, hi = bootstrap_ci(v, seed=0)
    return [float(v.mean()), float(lo), float(hi)]


def aggregate_curves(results: list[dict]) -> dict:
    """``{n: {arm: [{"step": s, metric: [mean, lo, hi]}]}}`` over the seeds' ``run_seed`` results."""
    out: dict = {}
    for n in results[0]["curves"]:
        for arm in results[0]["curves"][n]:
            steps = [p["step"] for p in results[0]["curves"][n][arm]]
            points = []
            for k, step in enumerate(steps):
                rows = [r["curves"][n][arm][k] for r in results if k < len(r["curves"][n][arm])]
                points.append({"step": step, **{m: mean_ci([row[m] for row in rows]) for m in CURVE_METRICS}})
            out.setdefault(n, {})[arm] = points
    return out


def _fmt(cell: list[float], digits: int = 3) -> str:
    mean, lo, hi = cell
    return "n/a" if math.isnan(mean) else f"{mean:.{digits}f} [{lo:.{digits}f}, {hi:.{digits}f}]"


def estimation_table(summary: dict) -> str:
    """Markdown table of Part 1: rows estimator × N."""
    head = ("| estimator | N | TV(P⁺, P_good) | TV(P⁻, P_bad) | max-abs P⁺ | max-abs P⁻ | planted in top W⁺ | "
            "planted in top W⁻ |\n|---|---|---|---|---|---|---|---|\n")
    lines = []
    for estimator, by_n in summary.items():
        for n, m in by_n.items():
            lines.append(f"| {estimator} | {n} | {_fmt(m['pos_tv'])} | {_fmt(m['neg_tv'])} | {_fmt(m['pos_max_abs'])} | "
                         f"{_fmt(m['neg_max_abs'])} | {_fmt(m['w_pos_recall'], 2)} | {_fmt(m['w_neg_recall'], 2)} |")
    return head + "\n".join(lines)


def training_table(curves: dict) -> str:
    """Markdown table of Part 2 at the last checkpoint of each arm (and the base), per data size."""
    cols = ("acc", "mis", "freq/retrieval->self_verification", "freq/retrieval->backtracking", "dist_good", "dist_bad")
    head = ("| n | policy | step | Acc | Mis | Pr(r→sv) (good) | Pr(r→bt) (hit gap) | TV to P_good | TV to P_bad |\n"
            "|---|---|---|---|---|---|---|---|---|\n")
    lines = []
    for n, arms in curves.items():
        first = next(iter(arms.values()))[0]
        lines.append(f"| {n} | base | 0 | " + " | ".join(_fmt(first[c]) for c in cols) + " |")
        for arm, points in arms.items():
            last = points[-1]
            lines.append(f"| {n} | {ARM_NAMES[arm]} | {last['step']} | " + " | ".join(_fmt(last[c]) for c in cols) + " |")
    return head + "\n".join(lines)


def plot_curves(curves: dict, path: str | Path) -> Path:
    """Accuracy and the planted transitions' frequencies against training steps, all arms, one row per size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = (("acc", "accuracy (held-out)"), ("freq/retrieval->self_verification", "Pr(retrieval→self_verification)"),
              ("freq/retrieval->backtracking", "Pr(retrieval→backtracking), hit gap"))
    fig, axes = plt.subplots(len(curves), len(panels), figsize=(4.2 * len(panels), 2.8 * len(curves)), squeeze=False)
    for r, (n, arms) in enumerate(curves.items()):
        for c, (metric, title) in enumerate(panels):
            ax = axes[r][c]
            for arm, points in arms.items():
                x = [p["step"] for p in points]
                mean, lo, hi = (np.array([p[metric][k] for p in points]) for k in range(3))
                ax.plot(x, mean, marker="o", ms=3, label=ARM_NAMES[arm])
                ax.fill_between(x, lo, hi, alpha=0.2)
            ax.set_title(f"{title}, n={n}", fontsize=9)
            ax.set_xlabel("optimizer step", fontsize=8)
            ax.tick_params(labelsize=7)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out, dpi=60)
    plt.close(fig)
    return out


def write_report(out: Path, part1: dict, results: list[dict], meta: dict) -> dict:
    """report.json, report.md and curves.png in ``out``; returns the report dict."""
    import json

    curves = aggregate_curves(results) if results else {}
    report = {"meta": meta, "part1": part1["summary"], "part2": curves,
              "data": [r["data"] for r in results], "sft": [r["sft"] for r in results]}
    (out / "report.json").write_text(json.dumps(report, indent=1))
    md = [f"# Planted-transition experiment\n\n{meta.get('line', '')}\n",
          "## Part 1: estimation (mean [95 % bootstrap interval] over seeds)\n", estimation_table(part1["summary"])]
    if curves:
        plot_curves(curves, out / "curves.png")
        md += ["\n## Part 2: training, last checkpoint (mean [95 % interval] over seeds)\n", training_table(curves),
               "\n![curves](curves.png)\n"]
    (out / "report.md").write_text("\n".join(md) + "\n")
    return report

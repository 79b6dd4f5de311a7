"""`mralign analyze`: the transition shift of Figure 4 and the advantage maps of Figure 7 (paper §8.4).

**Transition shift.** Two sets of outputs (e.g. the same questions before and after training) are
annotated with the same annotator, P is fit on each (Alg. 1-2, pooled over all trajectories, as
`mralign fit-transitions` does), and

    Δ = P_after − P_before            (K, K); each row of Δ sums to 0

is drawn as a heatmap and as a directed graph of the states with the ``top`` (default 10) most
strengthened edges (largest Δ > 0) solid and the ``top`` most weakened (most negative Δ) dashed;
both lists go into analysis.md / analysis.json with P_before and P_after of each edge, and the
mean number of labelled steps per trajectory (the paper notes shorter chains after alignment).

Inputs for each side: an annotated jsonl (used as is), a predictions / trajectories jsonl, or an
`mralign eval` run directory (its thinking-on predictions). Unannotated outputs are annotated here
through pipeline/annotate.py (``rules`` offline tagger by default, or ``llm`` / ``ensemble``
endpoints) into OUT/{before,after}.annotated.jsonl, which a rerun reuses; outputs without thinking
are rejected by the annotator and counted. ``label`` (needed by the fit; it does not affect the
pooled P) is the answer's correctness when gold is known, else true.

**Advantage maps.** ``--transitions transitions.json``: W⁺ = P⁺/P and W⁻ = P⁻/P with the top and
bottom 15 % of cells marked, by the same code as ``mralign fit-transitions --plot-dir`` (pipeline/transition_plots.py).

    mralign analyze --before runs/eval/vanilla --after runs/eval/mralign -o runs/analysis
    mralign analyze --transitions runs/transitions.json -o runs/analysis
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from mralign_plugin.annotate.annotators import Endpoint
from mralign_plugin.core.answers import contains_gold
from mralign_plugin.core.formats import read_jsonl, read_transitions, write_jsonl, write_transitions
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
from mralign_plugin.core.transitions import fit_transition_model
from mralign_plugin.eval.plots import plot_shift_graph
from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file
from mralign_plugin.pipeline.transition_plots import plot_matrix, plot_transition_model


@dataclass
class AnalyzeOptions:
    """Annotator for unannotated outputs (as in `mralign annotate`) and the number of edges to list."""

    annotator: str = "rules"
    endpoints: list[Endpoint] = field(default_factory=list)
    concurrency: int = 16
    top: int = 10
    taxonomy: Taxonomy = PAPER_TAXONOMY


def _outputs(source: Path) -> list[dict]:
    """Rows of a jsonl, or the thinking-on predictions of an eval run directory."""
    if source.is_dir():
        files = sorted((source / "predictions").glob("*.thinking_on.jsonl"))
        if not files:
            raise FileNotFoundError(f"{source}: no predictions/*.thinking_on.jsonl (an `mralign eval --thinking on` run?)")
        return [{**row, "id": f"{f.name.split('.')[0]}/{row['id']}"} for f in files for row in read_jsonl(f)]
    if not source.exists():
        raise FileNotFoundError(f"{source}: not found")
    return read_jsonl(source)


def load_annotated(source: str | Path, work_dir: Path, tag: str, opts: AnalyzeOptions) -> tuple[list[dict], dict]:
    """Annotated records for one side, annotating (resumably) when the input has no ``steps``.

    Returns:
        ``(records, info)``; info counts inputs, annotated and rejected records.
    """
    rows = _outputs(Path(source))
    if rows and all(isinstance(r.get("steps"), list) for r in rows):
        return rows, {"source": str(source), "inputs": len(rows), "annotated": len(rows), "rejected": 0, "annotator": "given"}
    trajectories = []
    for r in rows:
        gold = r.get("answers") or r.get("gold") or []
        label = r["label"] if isinstance(r.get("label"), bool) else (
            contains_gold(parse_response(r["response"]).answer, gold) if gold else True)
        trajectories.append({"id": r["id"], "prompt": r.get("prompt") or r.get("question", ""),
                             "question": r.get("question", ""), "response": r["response"], "label": label, "gold": gold})
    work_dir.mkdir(parents=True, exist_ok=True)
    traj_path, ann_path = work_dir / f"{tag}.trajectories.jsonl", work_dir / f"{tag}.annotated.jsonl"
    write_jsonl(traj_path, trajectories)
    summary = annotate_file(traj_path, ann_path, AnnotateOptions(
        annotator=opts.annotator, endpoints=opts.endpoints, concurrency=opts.concurrency, progress=False,
        taxonomy=opts.taxonomy))
    wanted = {t["id"] for t in trajectories}
    records = [r for r in read_jsonl(ann_path) if r["id"] in wanted]
    return records, {"source": str(source), "inputs": len(rows), "annotated": len(records),
                     "rejected": summary["rejected"], "annotator": opts.annotator}


def top_edges(delta: np.ndarray, n: int = 10) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """The ``n`` most strengthened (largest Δ > 0) and most weakened (smallest Δ < 0) cells of (K,K) Δ.

    Example:
        >>> d = np.array([[0.0, 0.3, -0.3], [0.1, -0.2, 0.1], [0.0, 0.0, 0.0]])
        >>> top_edges(d, 2)
        ([(0, 1), (1, 0)], [(0, 2), (1, 1)])
    """
    K = delta.shape[0]
    flat = delta.ravel()  # (K*K,)
    order = np.argsort(-flat, kind="stable")
    up = [divmod(int(k), K) for k in order if flat[k] > 0][:n]
    order = np.argsort(flat, kind="stable")
    down = [divmod(int(k), K) for k in order if flat[k] < 0][:n]
    return up, down


def _mean_steps(records: list[dict]) -> float:
    return float(np.mean([sum(1 for s in r["steps"] if s.get("states")) for r in records])) if records else 0.0


def transition_shift(before: list[dict], after: list[dict], taxonomy: Taxonomy = PAPER_TAXONOMY,
                     top: int = 10) -> dict:
    """Fit P on each side and rank the edges of Δ = P_after − P_before.

    Returns:
        ``{"model_before", "model_after" (transitions.json dicts), "delta" (K,K) ndarray,
        "strengthened", "weakened" (lists of {from, to, delta, p_before, p_after}), "mean_steps"}``.
    """
    if not before or not after:
        raise ValueError("transition shift: both sides need at least one annotated trajectory")
    model_b = fit_transition_model(before, taxonomy)
    model_a = fit_transition_model(after, taxonomy)
    p_b, p_a = np.asarray(model_b["P"]), np.asarray(model_a["P"])  # (K,K) each
    delta = p_a - p_b  # (K,K)
    states = taxonomy.states
    up, down = top_edges(delta, top)

    def edge(i: int, j: int) -> dict:
        return {"from": states[i], "to": states[j], "delta": round(float(delta[i, j]), 6),
                "p_before": round(float(p_b[i, j]), 6), "p_after": round(float(p_a[i, j]), 6)}

    return {"model_before": model_b, "model_after": model_a, "delta": delta,
            "strengthened": [edge(i, j) for i, j in up], "weakened": [edge(i, j) for i, j in down],
            "edges": (up, down), "mean_steps": {"before": _mean_steps(before), "after": _mean_steps(after)}}


def run_analyze(out_dir: str | Path, before: str | Path | None = None, after: str | Path | None = None,
                transitions: str | Path | None = None, opts: AnalyzeOptions | None = None) -> dict:
    """Write the transition-shift and/or advantage-map outputs into ``out_dir``; return a summary.

    Files: analysis.json, analysis.md, transitions_{before,after}.json, plots/shift_heatmap.png,
    plots/shift_graph.png; with ``transitions``: plots/advantage/{P,P_pos,P_neg,W_pos,W_neg}.png.
    """
    opts = opts or AnalyzeOptions()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    states = opts.taxonomy.states
    analysis: dict = {"format": "mralign-analysis/1", "states": list(states)}
    summary: list[str] = []
    md = ["# MR-ALIGN transition analysis", ""]
    if before is not None and after is not None:
        rec_b, info_b = load_annotated(before, out, "before", opts)
        rec_a, info_a = load_annotated(after, out, "after", opts)
        shift = transition_shift(rec_b, rec_a, opts.taxonomy, opts.top)
        write_transitions(out / "transitions_before.json", shift["model_before"])
        write_transitions(out / "transitions_after.json", shift["model_after"])
        heat = plot_matrix(shift["delta"], states, "Transition shift Δ = P_after − P_before (Figure 4)",
                           out / "plots" / "shift_heatmap.png")
        graph = plot_shift_graph(shift["delta"], states, *shift["edges"], out / "plots" / "shift_graph.png",
                                 title=f"Transition shift Δ = P_after − P_before: top {opts.top} edges each way")
        analysis.update(before={**info_b, "n_trajectories": len(rec_b), "mean_steps": shift["mean_steps"]["before"]},
                        after={**info_a, "n_trajectories": len(rec_a), "mean_steps": shift["mean_steps"]["after"]},
                        delta=shift["delta"].round(6).tolist(), strengthened=shift["strengthened"],
                        weakened=shift["weakened"], plots=[str(heat.relative_to(out)), str(graph.relative_to(out))])
        md += ["## Transition shift (Figure 4): Δ = P_after − P_before", "",
               f"- before: {info_b['source']}: {len(rec_b)} annotated trajectories ({info_b['rejected']} rejected, "
               f"annotator {info_b['annotator']}), {shift['mean_steps']['before']:.2f} labelled steps on average",
               f"- after: {info_a['source']}: {len(rec_a)} annotated trajectories ({info_a['rejected']} rejected, "
               f"annotator {info_a['annotator']}), {shift['mean_steps']['after']:.2f} labelled steps on average", ""]
        for title, edges in (("Strengthened edges (largest Δ > 0)", shift["strengthened"]),
                             ("Weakened edges (most negative Δ)", shift["weakened"])):
            md += [f"### {title}", "", "| from | to | Δ | P before | P after |", "|---|---|---:|---:|---:|"]
            md += [f"| {e['from']} | {e['to']} | {e['delta']:+.4f} | {e['p_before']:.4f} | {e['p_after']:.4f} |"
                   for e in edges] + [""]
        md += [f"![shift heatmap]({heat.relative_to(out)})", "", f"![shift graph]({graph.relative_to(out)})", ""]
        summary.append(f"transition shift: {len(rec_b)} -> {len(rec_a)} annotated trajectories; "
                       f"mean steps {shift['mean_steps']['before']:.2f} -> {shift['mean_steps']['after']:.2f}")
        for name, edges in (("strengthened", shift["strengthened"]), ("weakened", shift["weakened"])):
            summary.append(f"  most {name}: " + ", ".join(f"{e['from']}->{e['to']} {e['delta']:+.3f}" for e in edges[:5]))
        summary.append(f"  plots: {heat}, {graph}")
    if transitions is not None:
        model = read_transitions(transitions, opts.taxonomy)
        paths = plot_transition_model(model, out / "plots" / "advantage")
        analysis["advantage_plots"] = [str(p.relative_to(out)) for p in paths]
        md += ["## Advantage maps (Figure 7): W+ = P+/P, W- = P-/P", "",
               f"From {transitions}; solid boxes mark the top 15 % of cells, dashed the bottom 15 %.", ""]
        md += [f"![{p.stem}]({p.relative_to(out)})" for p in paths] + [""]
        summary.append(f"advantage maps: {', '.join(str(p) for p in paths)}")
    (out / "analysis.json").write_text(json.dumps(analysis, indent=1) + "\n", encoding="utf-8")
    (out / "analysis.md").write_text("\n".join(md), encoding="utf-8")
    summary.append(f"wrote {out / 'analysis.md'} and {out / 'analysis.json'}")
    return {**analysis, "summary": summary}

"""The main job's report: ``RUN/report.md`` and ``RUN/report.json``, and the table the terminal prints.

Every number is read from the files the stages wrote (the eval runs' ``scored/`` items, the label
counts, the trainer logs); the paired differences resample the held-out questions as pairs
(eval/metrics.py :func:`paired_difference`), since all methods answer the same questions.
"""

from __future__ import annotations

import json
from datetime import date
from pathlib import Path

import numpy as np

from mralign_plugin.eval.metrics import paired_difference
from mralign_plugin.eval.report import build_report, load_scored, write_report

DATASET = "factual"
# (report key, scored item field, column title); Acc = EM_both with thinking on (answer EM without).
METRICS = (("acc", "correct", "Acc ↑"), ("mis", "mis", "Mis ↓"), ("em_a", "em_a", "EM_a ↑"))
PAIRS = (("MR-ALIGN", "KTO"), ("MR-ALIGN", "Vanilla"), ("KTO", "Vanilla"))
DEPARTURES = (
    ("model", "SmolLM2-135M-Instruct (full fine-tuning, bf16, CPU)", "Qwen3-8B, LoRA r 32, GPUs"),
    ("prompt", "3 worked examples as chat turns; two-phase generation (prefill <think>, then </think><answer>)",
     "the inference prompt of Figure 11, a model trained to think"),
    ("data", "factual-offline: 7 templates over reference packages", "NQ-Open + SciQ training splits"),
    ("candidates", "one greedy draw per mode", "3 draws at T 0.2, top_p 0.9"),
    ("labelling rule", "majority of draws (= the one draw)", "all 3 draws agree"),
    ("filters", ">= 2 paragraphs, 15-160 thinking tokens", "5-14 paragraphs, 451-999 tokens"),
    ("λ_r", "|D+| / (1.503 |D-|), the paper's class ratio for our counts", "1.5 (4,830 / 2,143)"),
    ("annotation", "the offline rules tagger", "an LLM annotator (GPT-4-class)"),
    ("training", "2 epochs, lr 2e-5, batch 8, z0 from fixed mismatched pairs; the prompt is the question turn "
     "alone (the worked examples would make each row ~4x longer on a CPU)", "3 epochs, lr 5e-6, the inference prompt"),
    ("evaluation", "greedy, 160 thinking tokens; held-out factual-offline questions",
     "T 0.6, top_p 0.95, top_k 20, 8k tokens; NQ-Open, SciQ, SimpleQA, TruthfulQA, LongFact"),
)


def _items(run_dir: Path, mode: str = "thinking_on") -> dict[str, dict]:
    items = load_scored(run_dir, DATASET, mode)
    if not items:
        raise FileNotFoundError(f"{run_dir}: no scored/{DATASET}.{mode}.jsonl")
    return items


def paired_table(runs: dict[str, Path], n_resamples: int = 1000, seed: int = 0) -> list[dict]:
    """Paired differences (percentage points) of each pair in PAIRS, thinking on, over shared ids."""
    items = {name: _items(path) for name, path in runs.items()}
    out = []
    for a, b in PAIRS:
        ids = sorted(set(items[a]) & set(items[b]))
        row = {"a": a, "b": b, "n": len(ids)}
        for key, field, _ in METRICS:
            va = np.array([float(bool(items[a][i][field])) for i in ids])  # (N,)
            vb = np.array([float(bool(items[b][i][field])) for i in ids])  # (N,)
            diff, lo, hi = paired_difference(va, vb, n_resamples=n_resamples, seed=seed)
            row[key] = [round(100 * diff, 2), round(100 * lo, 2), round(100 * hi, 2)]
        out.append(row)
    return out


def main_rows(report: dict) -> list[dict]:
    """Table-2-shaped rows: method, n, Acc, Mis, EM_t, EM_a, answer-only Acc, with 95 % intervals."""
    rows = []
    for r in report["rows"]:
        res = r["results"][DATASET]
        rows.append({"method": r["method"], "mode": r["mode"], "n": res["n"], "acc": res["acc"], "acc_ci": res["acc_ci"],
                     "mis": res["mis"], "mis_ci": res["mis_ci"], "em_t": res["em_t"], "em_a": res["em_a"],
                     "answer_acc_ci": res["answer_acc_ci"]})
    return rows


def _f(x, digits: int = 1) -> str:
    return "–" if x is None else f"{x:.{digits}f}"


def _ci(ci) -> str:
    return "–" if not ci else f"[{ci[0]:.1f}, {ci[1]:.1f}]"


def table_lines(rows: list[dict]) -> list[str]:
    lines = ["| Method | n | Acc ↑ | 95 % CI | Mis ↓ | 95 % CI | EM_t | EM_a | EM_a 95 % CI |",
             "|---|---:|---:|---|---:|---|---:|---:|---|"]
    for r in rows:
        lines.append(f"| {r['method']} | {r['n']} | {_f(r['acc'])} | {_ci(r['acc_ci'])} | {_f(r['mis'])} | "
                     f"{_ci(r['mis_ci'])} | {_f(r['em_t'])} | {_f(r['em_a'])} | {_ci(r['answer_acc_ci'])} |")
    return lines


def paired_lines(pairs: list[dict]) -> list[str]:
    lines = ["| Difference (thinking on) | n | Δ Acc | 95 % CI | Δ Mis | 95 % CI | Δ EM_a | 95 % CI |",
             "|---|---:|---:|---|---:|---|---:|---|"]
    for p in pairs:
        cells = " | ".join(f"{p[k][0]:+.1f} | [{p[k][1]:+.1f}, {p[k][2]:+.1f}]" for k, _, _ in METRICS)
        lines.append(f"| {p['a']} − {p['b']} | {p['n']} | {cells} |")
    return lines


def verdict(pairs: list[dict]) -> str:
    """One sentence on MR-ALIGN − KTO in Acc, from its paired interval (whatever it says)."""
    p = next(p for p in pairs if (p["a"], p["b"]) == ("MR-ALIGN", "KTO"))
    diff, lo, hi = p["acc"]
    if lo > 0:
        return f"MR-ALIGN beat plain KTO on held-out Acc by {diff:+.1f} points (paired 95 % CI [{lo:+.1f}, {hi:+.1f}])."
    if hi < 0:
        return f"MR-ALIGN was worse than plain KTO on held-out Acc by {diff:+.1f} points (paired 95 % CI [{lo:+.1f}, {hi:+.1f}])."
    return (f"MR-ALIGN did not beat plain KTO here: Acc difference {diff:+.1f} points, paired 95 % CI "
            f"[{lo:+.1f}, {hi:+.1f}] includes 0.")


def write_demo_report(out: Path, record: dict, wall_seconds: float, n_resamples: int = 1000) -> dict:
    """Write report.md / report.json under ``out`` (and the combined eval report under ``out/eval``)."""
    dirs = {k: Path(v) for k, v in record["eval_dirs"].items()}
    combined = build_report([dirs["vanilla"], dirs["kto"], dirs["mralign"]], baseline=dirs["vanilla"],
                            n_resamples=n_resamples)
    write_report(combined, out / "eval")
    rows = main_rows(combined)
    pairs = paired_table({"Vanilla": dirs["vanilla"], "KTO": dirs["kto"], "MR-ALIGN": dirs["mralign"]}, n_resamples)
    analysis = json.loads((out / "analysis" / "analysis.json").read_text())
    tr = record["train"]
    report = {"format": "mralign-demo-report/1", "date": date.today().isoformat(), "machine": record["machine"],
              "wall_seconds": round(wall_seconds, 1), "stages": record["stages"], "data": record["data"],
              "label": record["label"], "train": tr, "table": rows, "paired": pairs, "verdict": verdict(pairs),
              "buckets": combined["buckets"], "shift": {"strengthened": analysis.get("strengthened", [])[:5],
                                                        "weakened": analysis.get("weakened", [])[:5]},
              "departures": [{"what": w, "here": h, "paper": p} for w, h, p in DEPARTURES]}
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render(report), encoding="utf-8")
    return report


def render(report: dict) -> str:
    tr, lab, data, m = report["train"], report["label"], report["data"], report["machine"]
    md = ["# MR-ALIGN main job: SmolLM2-135M-Instruct on factual-offline QA", "",
          f"{report['date']} · {m['processor']}, {m['cpus']} CPUs, {m['platform']} · every stage "
          f"{sum(v['seconds'] for v in report['stages'].values()) / 60:.1f} min (this invocation "
          f"{report['wall_seconds'] / 60:.1f} min; cached stages count with the time they took)", "",
          "## Held-out results (shape of the paper's Table 2)", "", *table_lines(report["table"]), "",
          "Acc = EM_both with thinking on (the gold in the thinking and in the answer), EM_a without; Mis = the hit "
          "gap (gold in the thinking, not in the answer). Intervals: percentile bootstrap over questions.", "",
          "## Paired differences (same questions; paired bootstrap, percentage points)", "",
          *paired_lines(report["paired"]), "", f"**{report['verdict']}**", "",
          "## Counts", "",
          f"- questions: {data['train']} training, {data['test']} held-out (of {data['available']['train']} / "
          f"{data['available']['test']} in the split); reference packages "
          + ", ".join(f"{k} {v}" for k, v in data["packages"].items()),
          f"- labelled: {lab.get('positive', 0)} positive, {lab.get('negative', 0)} negative of {lab.get('in', 0)} "
          f"(both correct {lab.get('both_correct', 0)}, both wrong {lab.get('both_wrong', 0)}, dropped by filters "
          f"{lab.get('no_thinking', 0) + lab.get('paragraphs', 0) + lab.get('tokens', 0)})",
          f"- training: {tr['rows']} rows, λ_c 1.0, λ_r {tr['lambda_r']:.3f}; "
          + "; ".join(f"{arm}: {a['steps']} steps, last-epoch loss {a['loss']:.4f}, mean token weight "
                      f"{a['mean_token_weight']:.3f}" for arm, a in tr["arms"].items()), "",
          "## Transition model and shift", "",
          "![W+](plots/W_pos.png) ![W-](plots/W_neg.png)", "",
          "Shift vanilla → MR-ALIGN (thinking of the held-out answers, rules tagger): strengthened "
          + _edges(report["shift"]["strengthened"]) + "; weakened " + _edges(report["shift"]["weakened"]),
          "", "![shift](analysis/plots/shift_heatmap.png) ![shift graph](analysis/plots/shift_graph.png)", "",
          "Consistency buckets against vanilla (Figure 5 shape): see [eval/report.md](eval/report.md).", "",
          "## Wall time per stage", "", "| stage | seconds | cached |", "|---|---:|---|",
          *(f"| {k} | {v['seconds']:.0f} | {'yes' if v['cached'] else ''} |" for k, v in report["stages"].items()), "",
          "## Departures from the paper at this scale", "", "| what | here | paper |", "|---|---|---|",
          *(f"| {d['what']} | {d['here']} | {d['paper']} |" for d in report["departures"]), "",
          "A 135M model on 2 CPU cores cannot reproduce the paper's 8B results; this run shows the whole method on a "
          "real model, with intervals, not the size of the paper's gains.", ""]
    return "\n".join(md)


def _edges(edges: list[dict]) -> str:
    return ", ".join(f"{e['from']}→{e['to']} {e['delta']:+.3f}" for e in edges) or "none"


def terminal_table(report: dict) -> str:
    """The table and the verdict, for the end of the run."""
    lines = [f"{'method':<22}{'n':>5}{'Acc':>7}  {'95% CI':<14}{'Mis':>6}  {'EM_a':>6}"]
    for r in report["table"]:
        lines.append(f"{r['method']:<22}{r['n']:>5}{_f(r['acc']):>7}  {_ci(r['acc_ci']):<14}{_f(r['mis']):>6}  "
                     f"{_f(r['em_a']):>6}")
    for p in report["paired"]:
        lines.append(f"{p['a'] + ' − ' + p['b']:<22}{p['n']:>5}{p['acc'][0]:>+7.1f}  "
                     f"[{p['acc'][1]:+.1f}, {p['acc'][2]:+.1f}]  (paired, Acc)")
    return "\n".join(lines + [report["verdict"]])

"""`mralign report`: combine evaluation runs into one table in the shape of the paper's Table 2.

One row per (run, thinking mode), labelled like the paper ("vanilla w/o Thinking", "vanilla w
Thinking", "MR-ALIGN"); columns per dataset: Acc↑ / Mis↓ for short-answer QA, Truth↑ / Info↑ for
TruthfulQA, F1@K↑ / #Claims for LongFact; "–" where a value does not apply (Mis without thinking)
or is pending. Also written: bootstrap 95 % CIs, answer-only accuracy and EM rates, hit-gap
positions (Figure 1), consistency buckets against ``--baseline`` (Figure 5) and their PNGs.

LongFact's K is recomputed here from the per-response claim counts of all combined runs (the
median over the pooled responses, as VeriScore does across models), unless ``--longfact-k`` fixes it.

    mralign report runs/eval/vanilla runs/eval/kto runs/eval/mralign --baseline runs/eval/vanilla -o runs/eval/table
"""

from __future__ import annotations

import json
from pathlib import Path

from mralign_plugin.core.formats import FormatError, iter_jsonl
from mralign_plugin.eval.longfact import median_k, summarize_longfact
from mralign_plugin.eval.metrics import BUCKETS, consistency_buckets

REPORT_FORMAT = "mralign-eval-report/1"
BUCKET_TITLES = {"both_correct": "Both Correct", "both_wrong": "Both Wrong", "inconsistent": "Inconsistent"}
COLUMNS = {  # task -> ((result key, header suffix), ...)
    "short_qa": (("acc", "Acc↑"), ("mis", "Mis↓")),
    "truthfulqa": (("truth", "Truth↑"), ("info", "Info↑")),
    "longfact": (("f1_at_k", "F1@K↑"), ("claims_mean", "#Claims")),
}


def load_run(run_dir: str | Path) -> dict:
    """A run's ``run.json`` with its directory under ``"dir"``."""
    path = Path(run_dir) / "run.json"
    if not path.exists():
        raise FileNotFoundError(f"{run_dir}: no run.json (is it an `mralign eval` output directory?)")
    run = json.loads(path.read_text(encoding="utf-8"))
    run["dir"] = str(Path(run_dir).resolve())
    return run


def load_scored(run_dir: str | Path, dataset: str, mode: str) -> dict[str, dict] | None:
    """id -> scored item of one (dataset, mode) of a run, or None when the run lacks it."""
    path = Path(run_dir) / "scored" / f"{dataset}.{mode}.jsonl"
    if not path.exists():
        return None
    items = {}
    for _, row in iter_jsonl(path):
        if isinstance(row, FormatError):
            raise row
        items[str(row["id"])] = row
    return items


def build_report(run_dirs: list[str | Path], baseline: str | Path | None = None, longfact_k: int | None = None,
                 n_resamples: int = 1000, seed: int = 0) -> dict:
    """The combined report dict (what report.json holds).

    Args:
        run_dirs: `mralign eval` output directories, in table order.
        baseline: a run directory whose thinking-on rows define the consistency buckets.
        longfact_k: fixed K for F1@K (default: the median over all combined LongFact responses).
        n_resamples, seed: bootstrap settings for recomputed LongFact intervals.
    """
    runs = [load_run(d) for d in run_dirs]
    datasets: dict[str, str] = {}
    for run in runs:
        for ds, task in run["datasets"].items():
            if datasets.setdefault(ds, task) != task:
                raise ValueError(f"dataset {ds!r} is {datasets[ds]} in one run and {task} in another")
    rows = []
    for run in runs:
        for row in run["rows"]:
            rows.append({**row, "run": run["name"], "dir": run["dir"]})
    labels = [r["method"] for r in rows]
    for r in rows:  # two runs with the same name: tell them apart by directory
        if labels.count(r["method"]) > 1:
            r["method"] = f"{r['method']} ({Path(r['dir']).name})"

    ks = {}
    for ds, task in datasets.items():
        if task != "longfact":
            continue
        counts = {}
        for r in rows:
            items = load_scored(r["dir"], ds, r["mode"]) or {}
            counts[id(r)] = [(it["supported"], it["claims"]) for it in items.values() if "claims" in it]
        pooled = [c for cs in counts.values() for _, c in cs]
        if not pooled:
            continue
        ks[ds] = longfact_k if longfact_k is not None else median_k(pooled)
        for r in rows:
            if ds in r["results"] and counts[id(r)]:
                old = r["results"][ds]
                r["results"][ds] = {**old, **summarize_longfact(counts[id(r)], ks[ds], old.get("n"), n_resamples, seed)}

    buckets = []
    base_label = None
    if baseline is not None:
        base_run = load_run(baseline)
        base_rows = [r for r in base_run["rows"] if r["mode"] == "thinking_on"]
        if not base_rows:
            raise ValueError(f"baseline {baseline}: no thinking-on row (buckets need EM_t)")
        base_label = base_rows[0]["method"]
        for ds, task in datasets.items():
            base_items = load_scored(base_run["dir"], ds, "thinking_on") if task == "short_qa" else None
            if not base_items:
                continue
            for r in rows:
                if r["dir"] == base_run["dir"]:  # the baseline's own rows are the reference
                    continue
                new_items = load_scored(r["dir"], ds, r["mode"])
                if new_items:
                    buckets.append({"baseline": base_label, "method": r["method"], "dataset": ds,
                                    **consistency_buckets(base_items, new_items)})
    return {"format": REPORT_FORMAT, "runs": [{"name": r["name"], "dir": r["dir"], "model": r.get("model")} for r in runs],
            "datasets": datasets, "rows": rows, "baseline": base_label, "buckets": buckets, "longfact_k": ks}


def _fmt(value, digits: int = 2) -> str:
    return "–" if value is None else f"{value:.{digits}f}"


def _ci(values) -> str:
    return "–" if not values or values[0] is None else f"[{values[0]:.1f}, {values[1]:.1f}]"


def _table(head: list[str], lines: list[list[str]]) -> list[str]:
    out = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
    return out + ["| " + " | ".join(line) + " |" for line in lines]


def render_markdown(report: dict) -> str:
    """report.md: Table 2 first, then CIs, EM rates, hit-gap positions, buckets, pending steps."""
    datasets, rows = report["datasets"], report["rows"]
    md = ["# MR-ALIGN evaluation report", ""]
    runs = ", ".join(f"`{r['name']}` ({r['dir']})" for r in report["runs"])
    md += [f"Runs: {runs}. Rates in %, one sample per question. Acc = EM_both with thinking (answer-only "
           "without); Mis = EM_t XOR EM_a; '–' = not applicable or pending.", ""]
    head, lines = ["Method"], []
    for ds, task in datasets.items():
        head += [f"{ds} {suffix}" for _, suffix in COLUMNS[task]]
    for r in rows:
        line = [r["method"]]
        for ds, task in datasets.items():
            res = r["results"].get(ds, {})
            for key, _ in COLUMNS[task]:
                line.append(_fmt(res.get(key), 1 if key == "claims_mean" else 2))
        lines.append(line)
    md += ["## Main table (shape of the paper's Table 2)", "", *_table(head, lines), ""]

    ci_head, ci_lines = ["Method"], []
    for ds, task in datasets.items():
        ci_head += [f"{ds} {suffix.rstrip('↑↓')} 95% CI" for key, suffix in COLUMNS[task] if key != "claims_mean"]
    for r in rows:
        line = [r["method"]]
        for ds, task in datasets.items():
            res = r["results"].get(ds, {})
            line += [_ci(res.get(f"{key}_ci")) for key, _ in COLUMNS[task] if key != "claims_mean"]
        ci_lines.append(line)
    md += ["## Bootstrap 95 % confidence intervals (percentile, over items)", "", *_table(ci_head, ci_lines), ""]

    qa = [ds for ds, task in datasets.items() if task == "short_qa"]
    if qa:
        head = ["Method", "Dataset", "n", "EM_t", "EM_a", "EM_both", "Acc", "answer-only Acc", "Mis",
                "no thinking", "truncated"]
        lines = []
        for r in rows:
            for ds in qa:
                res = r["results"].get(ds)
                if res:
                    lines.append([r["method"], ds, str(res["n"]), _fmt(res["em_t"]), _fmt(res["em_a"]), _fmt(res["em_both"]),
                                  _fmt(res["acc"]), _fmt(res["answer_acc"]), _fmt(res["mis"]),
                                  str(res["no_thinking"]), str(res["unterminated"])])
        md += ["## EM rates and answer-only accuracy", "",
               "answer-only Acc = mean EM_a, comparable with harnesses that ignore the thinking.", "",
               *_table(head, lines), ""]
        head = ["Method", "Dataset", "right n", "right first %", "right last %", "wrong n", "wrong first %", "wrong last %"]
        lines = []
        for r in rows:
            for ds in qa:
                gap = r["results"].get(ds, {}).get("hit_gap")
                if gap:
                    lines.append([r["method"], ds, str(gap["right"]["n"]), _fmt(gap["right"]["first"]),
                                  _fmt(gap["right"]["last"]), str(gap["wrong"]["n"]), _fmt(gap["wrong"]["first"]),
                                  _fmt(gap["wrong"]["last"])])
        if lines:
            md += ["## Hit-gap positions (Figure 1)", "",
                   "Mean position (% of the thinking, by characters) of the first and last gold occurrence in the "
                   "thinking, over items whose thinking contains the gold; right = EM_a 1, wrong = EM_a 0.", "",
                   *_table(head, lines), ""]
    if report["buckets"]:
        head = ["Method", "Dataset", "Bucket", "n", "base Acc", "new Acc", "Δ Acc", "base EM_a", "new EM_a", "Δ EM_a"]
        lines = []
        for b in report["buckets"]:
            for name in BUCKETS:
                c = b["buckets"][name]
                lines.append([b["method"], b["dataset"], BUCKET_TITLES[name], str(c["n"]), _fmt(c["base_acc"]),
                              _fmt(c["new_acc"]), _fmt(c["delta_acc"]), _fmt(c["base_answer_acc"]),
                              _fmt(c["new_answer_acc"]), _fmt(c["delta_answer_acc"])])
        md += [f"## Consistency buckets against `{report['baseline']}` (Figure 5)", "",
               "Buckets of the baseline's thinking-on items: Both Correct (EM_t = EM_a = 1), Both Wrong (both 0), "
               "Inconsistent (EM_t XOR EM_a); Δ = new − base in percentage points, items matched by id.", "",
               *_table(head, lines), ""]
    if report.get("longfact_k"):
        md += ["LongFact K (median claims per response, pooled over the runs above): "
               + ", ".join(f"{ds} K = {k}" for ds, k in report["longfact_k"].items()), ""]
    pending = [(r["method"], ds, res["pending"]) for r in rows for ds, res in r["results"].items() if res.get("pending")]
    if pending:
        md += ["## Pending", ""] + [f"- {m} / {ds}: {p}" for m, ds, p in pending] + [""]
    if report.get("plots"):
        md += ["## Figures", ""] + [f"![{p}](plots/{p})" for p in report["plots"]] + [""]
    return "\n".join(md)


def write_report(report: dict, out_dir: str | Path) -> list[Path]:
    """Write report.json, report.md and the PNGs under ``out_dir/plots``; return the paths."""
    from mralign_plugin.eval.plots import plot_buckets, plot_hit_gap, plot_scores

    out = Path(out_dir)
    plots = out / "plots"
    written = []
    for make, fname in ((plot_scores, "scores.png"), (plot_hit_gap, "hit_gap.png"), (plot_buckets, "buckets.png")):
        path = make(report, plots / fname)
        if path is not None:
            written.append(path)
    report["plots"] = [p.name for p in written]
    (out / "report.json").write_text(json.dumps(report, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    (out / "report.md").write_text(render_markdown(report), encoding="utf-8")
    return [out / "report.json", out / "report.md", *written]

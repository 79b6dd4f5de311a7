"""Verbs of evaluation and analysis (paper §7, §8.4): eval, report, analyze.

    mralign eval --model Qwen/Qwen3-8B --name vanilla --thinking both --dataset nq_open --dataset sciq -o runs/eval/vanilla
    mralign eval --predictions nq_open=preds.jsonl --dataset nq_open=nq_test.jsonl --name mine -o runs/eval/mine
    mralign report runs/eval/vanilla runs/eval/mralign --baseline runs/eval/vanilla -o runs/eval/table
    mralign analyze --before runs/eval/vanilla --after runs/eval/mralign -o runs/analysis
    mralign analyze --transitions transitions.json -o runs/analysis
"""

from __future__ import annotations

import argparse
import sys


def _eval(args: argparse.Namespace) -> int:
    from mralign_plugin.eval.judge import JudgeEndpoint
    from mralign_plugin.eval.run import EvalConfig, run_eval

    judge = None
    if args.judge_model:
        judge = JudgeEndpoint(args.judge_base_url, args.judge_model, args.judge_api_key_env or None,
                              concurrency=args.judge_concurrency, timeout=args.judge_timeout,
                              max_retries=args.judge_max_retries)
    cfg = EvalConfig(
        model=args.model, name=args.name, datasets=args.dataset, predictions=args.predictions, thinking=args.thinking,
        temperature=args.temperature, top_p=args.top_p, top_k=args.top_k, max_new_tokens=args.max_new_tokens,
        seed=args.seed, engine=args.engine, dtype=args.dtype, batch_size=args.batch_size,
        thinking_mode=args.thinking_mode, tensor_parallel_size=args.tensor_parallel_size, split=args.split,
        limit=args.limit, chunk_size=args.chunk_size, few_shot=args.few_shot, two_phase=args.two_phase,
        answer_max_tokens=args.answer_max_tokens, n_resamples=args.n_resamples, baseline=args.baseline,
        judge=judge, veriscore_home=args.veriscore_home, veriscore_extraction_model=args.veriscore_extraction_model,
        veriscore_verification_model=args.veriscore_verification_model, veriscore_label_n=args.veriscore_label_n,
        longfact_k=args.longfact_k, progress=not args.no_progress,
    )
    report = run_eval(cfg, args.output)
    _print_table(report)
    print(f"wrote {args.output}/report.md, report.json, run.json and plots/ ({', '.join(report['plots']) or 'none'})")
    return 0


def _print_table(report: dict) -> None:
    from mralign_plugin.eval.report import render_markdown

    text = render_markdown({**report, "plots": []})
    table = text.split("## Main table", 1)[1].split("\n## ", 1)[0]
    print("Main table" + table.rstrip())
    for line in text.split("## Pending", 1)[1:]:
        print("Pending" + line.split("\n## ", 1)[0].rstrip())


def _report(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mralign_plugin.eval.report import build_report, write_report

    report = build_report(args.runs, baseline=args.baseline, longfact_k=args.longfact_k)
    Path(args.output).mkdir(parents=True, exist_ok=True)
    write_report(report, args.output)
    _print_table(report)
    print(f"wrote {args.output}/report.md, report.json and plots/ ({', '.join(report['plots']) or 'none'})")
    return 0


def _analyze(args: argparse.Namespace) -> int:
    from mralign_plugin.annotate.annotators import Endpoint
    from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
    from mralign_plugin.eval.analyze import AnalyzeOptions, run_analyze

    if not args.transitions and not (args.before and args.after):
        raise ValueError("give --before and --after (transition shift) and/or --transitions (advantage maps)")
    if bool(args.before) != bool(args.after):
        raise ValueError("--before and --after go together")
    models = [m.strip() for m in (args.model or "").split(",") if m.strip()]
    urls = [u.strip() for u in (args.base_url or "http://127.0.0.1:8000/v1").split(",")]
    keys = [k.strip() for k in (args.api_key_env or "").split(",")]
    if len(urls) == 1:
        urls = urls * max(1, len(models))
    if len(keys) == 1:
        keys = keys * max(1, len(models))
    if args.annotator != "rules" and len(models) != {"llm": 1, "ensemble": 3}[args.annotator]:
        raise ValueError(f"--annotator {args.annotator} needs --model with {1 if args.annotator == 'llm' else 3} name(s)")
    endpoints = [Endpoint(u, m, k or None) for u, m, k in zip(urls, models, keys, strict=False)]
    opts = AnalyzeOptions(annotator=args.annotator, endpoints=endpoints, concurrency=args.concurrency,
                          top=args.top, taxonomy=Taxonomy.load(args.taxonomy) if args.taxonomy else PAPER_TAXONOMY)
    result = run_analyze(args.output, before=args.before, after=args.after, transitions=args.transitions, opts=opts)
    for line in result["summary"]:
        print(line)
    return 0


def _guard(func):
    """Input and configuration errors become one line on stderr and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        from mralign_plugin.core.formats import FormatError

        try:
            return func(args)
        except (FormatError, ValueError, FileNotFoundError, ImportError, KeyError, RuntimeError) as e:
            print(f"mralign {args.verb}: error: {e}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    # --- eval -----------------------------------------------------------------------------------
    p = subparsers.add_parser(
        "eval", help="Acc / Mis / buckets / hit-gap positions of a model or of predictions (paper §7)",
        description="Generate one answer per question (or read predictions), score EM_t, EM_a, EM_both, Acc, Mis and "
        "answer-only accuracy with bootstrap 95 % CIs, TruthfulQA Truth/Info (judge) and LongFact F1@K (VeriScore); "
        "write report.json, report.md (Table 2 shape) and PNGs. Rerunning reuses finished work.")
    p.add_argument("-o", "--output", required=True, help="run directory")
    p.add_argument("--model", help="hub id, local directory or LoRA adapter directory (merged into its base once)")
    p.add_argument("--name", help="method name in the table (default: last part of --model)")
    p.add_argument("--dataset", action="append", default=[], metavar="[NAME=]SOURCE",
                   help="repeatable. SOURCE: nq_open, sciq, simpleqa, truthfulqa (hub, eval split), a hub id, or a "
                   ".jsonl/.json/.parquet/.csv file in any schema of pipeline/datasets.py (LongFact: its prompt jsonl)")
    p.add_argument("--predictions", action="append", default=[], metavar="NAME=FILE",
                   help="repeatable. Score these instead of generating: lines with id and response (+ mode) or draws "
                   "(mralign generate); gold from --dataset NAME=... or from the line itself")
    p.add_argument("--thinking", choices=["on", "off", "both"], default="on",
                   help="thinking mode(s) to evaluate; off rows report answer-only Acc and no Mis (default: on)")
    g = p.add_argument_group("decoding (defaults: the paper's Table 15)")
    g.add_argument("--temperature", type=float, default=0.6, help="default: 0.6")
    g.add_argument("--top-p", type=float, default=0.95, help="default: 0.95")
    g.add_argument("--top-k", type=int, default=20,
                   help="default: 20 (paper, Table 15); 0 = off")
    g.add_argument("--max-new-tokens", type=int, default=8192, help="default: 8192")
    g.add_argument("--seed", type=int, default=0, help="sampling and bootstrap seed (default: 0)")
    g.add_argument("--engine", choices=["auto", "vllm", "transformers"], default="auto",
                   help="auto: vLLM when importable, else transformers")
    g.add_argument("--dtype", default="auto")
    g.add_argument("--batch-size", type=int, default=8, help="prompts per transformers generate call (default: 8)")
    g.add_argument("--thinking-mode", choices=["auto", "template", "prompt"], default="auto",
                   help="how thinking is switched: the chat template's enable_thinking flag or a prefilled empty block")
    g.add_argument("--tensor-parallel-size", type=int, default=1)
    g.add_argument("--chunk-size", type=int, default=64, help="questions per generate call and write (default: 64)")
    g.add_argument("--few-shot", metavar="FILE", help="worked examples as earlier chat turns (as mralign generate)")
    g.add_argument("--two-phase", action="store_true", help="thinking, then the answer, as two stops (as mralign generate)")
    g.add_argument("--answer-max-tokens", type=int, default=64, help="token budget of the answer phase (default: 64)")
    p.add_argument("--split", help="hub split (default: nq_open validation = the 3,610 test questions, sciq test, "
                   "simpleqa test, truthfulqa validation)")
    p.add_argument("--limit", type=int, help="only the first N questions of each dataset")
    p.add_argument("--n-resamples", type=int, default=1000, help="bootstrap resamples (default: 1000)")
    p.add_argument("--baseline", metavar="RUN_DIR", help="consistency buckets (Figure 5) against this run's thinking-on rows")
    g = p.add_argument_group("TruthfulQA judge (OpenAI-compatible; paper: gpt-4o, temperature 0)")
    g.add_argument("--judge-model", help="judge model name; without it TruthfulQA is left pending")
    g.add_argument("--judge-base-url", default="https://api.openai.com/v1", help="endpoint root (default: OpenAI)")
    g.add_argument("--judge-api-key-env", default="OPENAI_API_KEY",
                   help="environment variable holding the key ('' for none; default: OPENAI_API_KEY)")
    g.add_argument("--judge-concurrency", type=int, default=16)
    g.add_argument("--judge-timeout", type=float, default=120.0)
    g.add_argument("--judge-max-retries", type=int, default=5)
    g = p.add_argument_group("LongFact via VeriScore (see eval/longfact.py)")
    g.add_argument("--veriscore-home", help="a VeriScore checkout (prompt/, data/demos/): run VeriScore there")
    g.add_argument("--veriscore-extraction-model", default="gpt-4-0125-preview")
    g.add_argument("--veriscore-verification-model", default="gpt-4o")
    g.add_argument("--veriscore-label-n", type=int, choices=[2, 3], default=3)
    g.add_argument("--longfact-k", type=int, help="K of F1@K (default: the median number of claims)")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=_guard(_eval))

    # --- report ---------------------------------------------------------------------------------
    p = subparsers.add_parser("report", help="combine eval runs into one Table-2-shaped report",
                              description="One row per run and thinking mode, Acc/Mis (Truth/Info, F1@K/#Claims) per "
                              "dataset, CIs, hit-gap positions, consistency buckets against --baseline, PNGs.")
    p.add_argument("runs", nargs="+", metavar="RUN_DIR", help="`mralign eval` output directories, in table order")
    p.add_argument("-o", "--output", required=True, help="directory for report.json, report.md, plots/")
    p.add_argument("--baseline", metavar="RUN_DIR", help="consistency buckets (Figure 5) against this run")
    p.add_argument("--longfact-k", type=int, help="K of F1@K (default: median claims over all runs' responses)")
    p.set_defaults(func=_guard(_report))

    # --- analyze --------------------------------------------------------------------------------
    p = subparsers.add_parser("analyze", help="transition shift before/after (Figure 4) and advantage maps (Figure 7)",
                              description="--before/--after: annotated jsonl, predictions jsonl or eval run directories "
                              "(unannotated outputs are annotated here with the same annotator); fits P for each and "
                              "plots Δ = P_after − P_before as a heatmap and a graph. --transitions: W+ and W- heatmaps.")
    p.add_argument("-o", "--output", required=True, help="output directory")
    p.add_argument("--before", help="outputs before training (annotated jsonl, predictions jsonl or eval run dir)")
    p.add_argument("--after", help="outputs after training (same kinds)")
    p.add_argument("--transitions", help="transitions.json: plot the advantage maps W+ = P+/P, W- = P-/P")
    p.add_argument("--top", type=int, default=10, help="edges listed and drawn per direction (default: 10)")
    g = p.add_argument_group("annotator for unannotated outputs (as in `mralign annotate`)")
    g.add_argument("--annotator", choices=["rules", "llm", "ensemble"], default="rules")
    g.add_argument("--model", help="llm: one model; ensemble: three, comma-separated")
    g.add_argument("--base-url", help="1 or 3 comma-separated endpoint roots (default: http://127.0.0.1:8000/v1)")
    g.add_argument("--api-key-env", help="1 or 3 comma-separated environment variables holding keys")
    g.add_argument("--concurrency", type=int, default=16)
    p.add_argument("--taxonomy", metavar="FILE", help="YAML/JSON label set (default: the paper's 15)")
    p.set_defaults(func=_guard(_analyze))

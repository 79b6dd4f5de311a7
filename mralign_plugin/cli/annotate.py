"""Verbs of the annotation preprocessor (paper Figure 3): generate, label, annotate.

    mralign generate qa.jsonl -o candidates.jsonl --model Qwen/Qwen3-8B
    mralign label candidates.jsonl -o trajectories.jsonl --tokenizer Qwen/Qwen3-8B
    mralign annotate trajectories.jsonl -o annotated.jsonl                      # offline rules tagger
    mralign annotate trajectories.jsonl -o annotated.jsonl --annotator llm \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-32B --concurrency 64
    mralign annotate trajectories.jsonl -o annotated.jsonl --annotator ensemble \\
        --model gpt-4o,deepseek-chat,gpt-5 \\
        --base-url https://api.openai.com/v1,https://api.deepseek.com/v1,https://api.openai.com/v1 \\
        --api-key-env OPENAI_API_KEY,DEEPSEEK_API_KEY,OPENAI_API_KEY
"""

from __future__ import annotations

import argparse
import json
import sys


def _split(value: str | None) -> list[str]:
    return [v.strip() for v in value.split(",")] if value else []


def _endpoints(args: argparse.Namespace):
    from mralign_plugin.annotate.annotators import Endpoint

    if args.annotator == "rules":
        return []
    models = _split(args.model)
    want = 1 if args.annotator == "llm" else 3
    if len(models) != want:
        raise ValueError(f"--annotator {args.annotator} needs --model with {want} name(s)"
                         + (" (annotator A, annotator B, adjudicator)" if want == 3 else "") + f", got {len(models)}")
    urls = _split(args.base_url) or ["http://127.0.0.1:8000/v1"]
    keys = _split(args.api_key_env) if args.api_key_env is not None else [""]
    for name, values in (("--base-url", urls), ("--api-key-env", keys)):
        if len(values) not in (1, want):
            raise ValueError(f"{name}: give 1 value or {want} (one per model), got {len(values)}")
    urls, keys = urls * (want // len(urls)), keys * (want // len(keys))
    return [Endpoint(u, m, k or None) for u, m, k in zip(urls, models, keys, strict=True)]


def _taxonomy(path: str | None):
    from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

    return Taxonomy.load(path) if path else PAPER_TAXONOMY


def _annotate(args: argparse.Namespace) -> int:
    from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file, dry_run

    opts = AnnotateOptions(
        annotator=args.annotator, endpoints=_endpoints(args), concurrency=args.concurrency, timeout=args.timeout,
        max_retries=args.max_retries, backoff=args.backoff, max_backoff=args.max_backoff,
        temperature=args.temperature, max_tokens=args.max_tokens, structured=args.structured,
        escalate_when=args.escalate_when,
        limit=args.limit, retry_rejected=args.retry_rejected, progress=not args.no_progress,
        taxonomy=_taxonomy(args.taxonomy), ray=args.ray, ray_address=args.ray_address,
        ray_workers=args.ray_workers, ray_batch_size=args.ray_batch_size,
    )
    if args.dry_run:
        return dry_run(args.input, opts)
    summary = annotate_file(args.input, args.output, opts)
    s = summary
    print(f"in {s['in']} = annotated {s['annotated']} + rejected {s['rejected']} + skipped "
          f"{s['skipped_done'] + s['skipped_duplicate']} (already done {s['skipped_done']}, duplicate {s['skipped_duplicate']})"
          f"  in {s['seconds']:.1f} s ({s['records_per_s'] or 0:.0f} records/s)")
    if s["rejected_by_stage"]:
        print(f"rejected by stage: {s['rejected_by_stage']} -> {s['rejected_file']}")
    if "usage" in s:
        u = s["usage"]
        print(f"usage: {u.get('requests', 0)} requests ({u.get('retries', 0)} retries, "
              f"{u.get('structured_probes', 0)} structured-outputs probes), "
              f"{u.get('prompt_tokens', 0)} prompt + {u.get('completion_tokens', 0)} completion tokens")
        if u.get("structured"):
            print(f"structured outputs (response_format): {u['structured']}")
    if "ensemble_rules" in s:
        print(f"ensemble steps by rule: {s['ensemble_rules']}")
    if s["interrupted"]:
        print("interrupted: rerun the same command to resume")
    print(json.dumps(summary), file=sys.stderr if args.quiet_json else sys.stdout)
    return 130 if s["interrupted"] else 0


def _generate(args: argparse.Namespace) -> int:
    from pathlib import Path

    from mralign_plugin.pipeline.generate import INFERENCE_PROMPT, GenerateOptions, SamplingConfig, generate_file

    template = Path(args.prompt_template).read_text(encoding="utf-8") if args.prompt_template else INFERENCE_PROMPT
    opts = GenerateOptions(prompt_template=template, few_shot=args.few_shot, two_phase=args.two_phase,
        answer_max_tokens=args.answer_max_tokens, model=args.model, engine=args.engine, dtype=args.dtype, batch_size=args.batch_size,
        thinking_mode=args.thinking_mode, tensor_parallel_size=args.tensor_parallel_size, split=args.split,
        limit=args.limit, source_name=args.source_name, chunk_size=args.chunk_size, progress=not args.no_progress,
        ray=args.ray, ray_address=args.ray_address, ray_workers=args.ray_workers, gpus_per_worker=args.gpus_per_worker,
    )
    sampling = SamplingConfig(n=args.n, temperature=args.temperature, top_p=args.top_p, top_k=args.top_k,
                              max_new_tokens=args.max_new_tokens, seed=args.seed)
    s = generate_file(args.source, args.output, opts, sampling)
    print(f"{s['questions']} questions: generated {s['generated']}, already done {s['skipped_done']} "
          f"({s['seconds']:.1f} s) -> {s['output']}")
    return 0


def _label(args: argparse.Namespace) -> int:
    from itertools import chain

    from mralign_plugin.core.formats import iter_jsonl, write_jsonl
    from mralign_plugin.pipeline.label import LabelOptions, format_summary, label_rows

    opts = LabelOptions(min_paragraphs=args.min_paragraphs, max_paragraphs=args.max_paragraphs,
                        min_tokens=args.min_tokens, max_tokens=args.max_tokens, tokenizer=args.tokenizer,
                        no_filter=args.no_filter, rule=args.rule)
    trajectories, summary = label_rows(chain.from_iterable(iter_jsonl(p) for p in args.candidates), opts)
    write_jsonl(args.output, trajectories)
    print(format_summary(summary))
    print(f"wrote {len(trajectories)} trajectories -> {args.output}")
    if args.summary_json:
        with open(args.summary_json, "w", encoding="utf-8") as f:
            json.dump({k: {s: dict(c) for s, c in v.items()} if k == "by_source" else dict(v)
                       for k, v in summary.items()}, f, indent=1)
    return 0


def apply_recipe(args: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Fill flags from the recipe section named after the verb (``annotate: {model: ..., base_url: ...}``).

    Keys are the flags' names (``base_url`` or ``base-url``); a list becomes a comma-separated value; a
    flag given on the command line wins. Unknown keys are errors, other sections are ignored.
    """
    if not args.recipe:
        return
    from mralign_plugin.recipe import RecipeError, load_recipe

    section = load_recipe(args.recipe).get(args.verb) or {}
    if not isinstance(section, dict):
        raise RecipeError(f"{args.recipe}: {args.verb}: expected a mapping of flag names")
    options = {a.dest: a for a in parser._actions if a.option_strings and a.dest not in ("help", "recipe")}
    for key, value in section.items():
        dest = key.replace("-", "_")
        if dest not in options:
            raise RecipeError(f"{args.recipe}: {args.verb}.{key}: unknown key; valid: {', '.join(sorted(options))}")
        if getattr(args, dest) == parser.get_default(dest):
            setattr(args, dest, ",".join(map(str, value)) if isinstance(value, list) else value)


def _guard(func, parser: argparse.ArgumentParser):
    """Recipe defaults, then the verb; input and configuration errors become one line and exit status 2."""

    def run(args: argparse.Namespace) -> int:
        try:
            apply_recipe(args, parser)
            return func(args)
        except (ValueError, FileNotFoundError, ImportError, KeyError) as e:
            print(f"mralign {args.verb}: error: {e}", file=sys.stderr)
            return 2

    return run


def _add_recipe_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument("--recipe", metavar="YAML", help="take unset flags from this recipe's section named after the verb")


def _add_ray_flags(p: argparse.ArgumentParser, workers_help: str) -> None:
    g = p.add_argument_group("Ray (pip install 'mralign_plugin[ray]')")
    g.add_argument("--ray", action="store_true", help="run as a Ray Data job; output identical to a local run")
    g.add_argument("--ray-address", default=None,
                   help="cluster address for ray.init (default: auto = the running cluster; 'local' starts one here)")
    g.add_argument("--ray-workers", type=int, default=2, help=workers_help)


def register(subparsers: argparse._SubParsersAction) -> None:
    # --- generate -------------------------------------------------------------------------------
    p = subparsers.add_parser("generate", help="N candidate answers per question, thinking on and off (paper §3)",
                              description="Sample candidates for labelling. Output: one jsonl row per question with "
                              "draws.thinking_on / draws.thinking_off (N texts each) and the sampling config.")
    p.add_argument("source", help="QA file (.jsonl/.json/.parquet/.csv; schemas: question/answers, NQ-Open "
                   "question/answer, SciQ question/correct_answer, SimpleQA problem/answer) or a hub dataset "
                   "(nq_open, sciq, simpleqa or an id; needs `datasets`)")
    p.add_argument("-o", "--output", required=True, help="candidates jsonl (appended to; finished ids are skipped)")
    p.add_argument("--model", required=True, help="model id or local directory")
    p.add_argument("--engine", choices=["auto", "vllm", "transformers"], default="auto",
                   help="auto: vLLM when importable, else transformers (default: auto)")
    p.add_argument("--n", type=int, default=3, help="draws per question and mode (default: 3, paper)")
    p.add_argument("--temperature", type=float, default=0.2, help="default: 0.2 (paper)")
    p.add_argument("--top-p", type=float, default=0.9, help="default: 0.9 (paper)")
    p.add_argument("--top-k", type=int, default=0, help="default: 0 = off (the paper samples with T and top_p)")
    p.add_argument("--max-new-tokens", type=int, default=1536, help="default: 1536")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--thinking-mode", choices=["auto", "template", "prompt"], default="auto",
                   help="template: the chat template's enable_thinking flag (Qwen3); prompt: prefill an empty "
                   "<think></think> for thinking off; auto: template when supported (default)")
    p.add_argument("--prompt-template", metavar="FILE",
                   help="user-message template with {question} (default: the paper's inference prompt, Figure 11)")
    p.add_argument("--few-shot", metavar="FILE", help="worked examples as earlier chat turns: JSON {examples: [{question, "
                   "thinking: [paragraphs], answer}]} (e.g. mralign_plugin/data/few_shot_factual.json)")
    p.add_argument("--two-phase", action="store_true", help="prefill <think>, stop at </think> or --max-new-tokens, then "
                   "prefill </think><answer> and stop at </answer>: for models never trained to think")
    p.add_argument("--answer-max-tokens", type=int, default=64, help="token budget of the answer phase (default: 64)")
    p.add_argument("--dtype", default="auto", help="auto, bfloat16, float16 or float32 (default: auto)")
    p.add_argument("--batch-size", type=int, default=8, help="prompts per transformers generate call (default: 8)")
    p.add_argument("--tensor-parallel-size", type=int, default=1, help="vLLM tensor parallelism (default: 1)")
    p.add_argument("--split", help="hub split (default: train; test for simpleqa)")
    p.add_argument("--limit", type=int, help="only the first N questions")
    p.add_argument("--source-name", help="name recorded in each row's `source` (default: file stem / dataset)")
    p.add_argument("--chunk-size", type=int, default=64, help="questions per write and per Ray batch (default: 64)")
    p.add_argument("--no-progress", action="store_true")
    _add_ray_flags(p, "model replicas, one per worker (default: 2)")
    p.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray worker (default: 0)")
    _add_recipe_flag(p)
    p.set_defaults(func=_guard(_generate, p))

    # --- label ----------------------------------------------------------------------------------
    p = subparsers.add_parser("label", help="positive / negative trajectories from candidates (paper §3, Table 1)",
                              description="Positive = thinking on correct and off wrong in ALL draws (or a majority: "
                              "--rule); negative = the reverse. Keeps the first thinking-on draw that passes the filters; dedups questions.")
    p.add_argument("candidates", nargs="+", help="candidates jsonl from `mralign generate` (several: one per source)")
    p.add_argument("-o", "--output", required=True, help="trajectories jsonl")
    p.add_argument("--min-paragraphs", type=int, default=4, help="exclusive lower bound (default: 4, paper)")
    p.add_argument("--max-paragraphs", type=int, default=15, help="exclusive upper bound (default: 15, paper)")
    p.add_argument("--min-tokens", type=int, default=450, help="exclusive lower bound on reasoning tokens (default: 450)")
    p.add_argument("--max-tokens", type=int, default=1000, help="exclusive upper bound (default: 1000)")
    p.add_argument("--tokenizer", default="Qwen/Qwen3-8B", help="tokenizer counting reasoning tokens (id or directory)")
    p.add_argument("--no-filter", action="store_true", help="skip the paragraph and token filters")
    p.add_argument("--rule", choices=["all", "majority"], default="all",
                   help="all: every draw agrees (paper); majority: more than half of the draws, e.g. 2 of 3")
    p.add_argument("--summary-json", help="also write the per-source counts as JSON")
    _add_recipe_flag(p)
    p.set_defaults(func=_guard(_label, p))

    # --- annotate -------------------------------------------------------------------------------
    p = subparsers.add_parser("annotate", help="segment thinking and add 1-2 meta-reasoning states per step",
                              description="Resumable and loss-free: rerun the same command to continue; failures "
                              "go to OUTPUT.rejected.jsonl with the reason.")
    p.add_argument("input", help="trajectories jsonl ({id, prompt|question, response, label, gold})")
    p.add_argument("-o", "--output", required=True, help="annotated jsonl (appended to)")
    p.add_argument("--annotator", choices=["rules", "llm", "ensemble"], default="rules",
                   help="rules: offline cue tagger (default); llm: one endpoint; ensemble: A + B + adjudicator")
    g = p.add_argument_group("LLM endpoints (OpenAI-compatible chat completions)")
    g.add_argument("--model", help="model name; ensemble: three, comma-separated (A,B,adjudicator)")
    g.add_argument("--base-url", help="endpoint root, e.g. http://127.0.0.1:8000/v1; 1 or 3 comma-separated "
                   "(default: http://127.0.0.1:8000/v1)")
    g.add_argument("--api-key-env", help="environment variable(s) holding the API key; 1 or 3 (default: none)")
    g.add_argument("--concurrency", type=int, default=16, help="requests in flight per endpoint (default: 16)")
    g.add_argument("--timeout", type=float, default=120.0, help="seconds per request (default: 120)")
    g.add_argument("--max-retries", type=int, default=5, help="retries per request on timeout/429/5xx (default: 5)")
    g.add_argument("--backoff", type=float, default=1.0, help="base of the exponential backoff, seconds (default: 1)")
    g.add_argument("--max-backoff", type=float, default=60.0, help="cap on one wait, Retry-After included (default: 60)")
    g.add_argument("--temperature", type=float, default=0.0, help="annotator sampling temperature (default: 0)")
    g.add_argument("--max-tokens", type=int, help="max completion tokens per request (default: server's)")
    g.add_argument("--structured", choices=["auto", "on", "off"], default="auto",
                   help="send the answer's JSON Schema as response_format (structured outputs): auto = until an "
                   "endpoint refuses it, then the plain prompt for that endpoint (logged); on = always (a refusal "
                   "rejects the record); off = never (default: auto)")
    g.add_argument("--escalate-when", choices=["lt2", "empty"], default="lt2",
                   help="ensemble: ask the adjudicator when consolidation leaves <2 labels (lt2, the paper's "
                   "literal rule) or none (empty)")
    p.add_argument("--taxonomy", metavar="FILE", help="YAML/JSON label set (default: the paper's 15)")
    p.add_argument("--limit", type=int, help="read at most N input records")
    p.add_argument("--dry-run", action="store_true", help="print the exact prompt for the first record and exit")
    p.add_argument("--retry-rejected", action="store_true", help="retry records of OUTPUT.rejected.jsonl")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--quiet-json", action="store_true", help="print the JSON summary to stderr instead of stdout")
    _add_ray_flags(p, "Ray Data workers (default: 2)")
    p.add_argument("--ray-batch-size", type=int, default=64, help="records per Ray batch (default: 64)")
    _add_recipe_flag(p)
    p.set_defaults(func=_guard(_annotate, p))

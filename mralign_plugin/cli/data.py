"""Verbs on annotated data and the transition model: validate, fit-transitions, weigh, demo.

    mralign validate annotated.jsonl
    mralign fit-transitions annotated.jsonl -o transitions.json --plot-dir plots/
    mralign weigh annotated.jsonl --transitions transitions.json -o weighted.jsonl
    mralign demo --out runs/demo
"""

from __future__ import annotations

import argparse
import sys


def _taxonomy(args: argparse.Namespace):
    from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

    return Taxonomy.load(args.taxonomy) if args.taxonomy else PAPER_TAXONOMY


def _add_taxonomy_flag(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--taxonomy", metavar="FILE",
                        help="YAML/JSON label set ({name, group, definition} per label); default: the paper's 15")


def _validate(args: argparse.Namespace) -> int:
    from mralign_plugin.core.formats import validate_file

    n, problems = validate_file(args.file, _taxonomy(args))
    for _, message in problems:
        print(message)
    bad_lines = len({lineno for lineno, _ in problems})
    print(f"{args.file}: {n} records, {len(problems)} problems on {bad_lines} lines" if problems
          else f"{args.file}: {n} records, all valid")
    return 1 if problems else 0


def _fit(args: argparse.Namespace) -> int:
    from mralign_plugin.pipeline.fit_transitions import fit_transitions_file

    model = fit_transitions_file(args.annotated, args.output, _taxonomy(args), estimator=args.estimator,
                                 single_label=args.single_label, plot_dir=args.plot_dir)
    n, m = model["n_trajectories"], model["n_transitions"]
    print(f"wrote {args.output}: {n['all']} trajectories ({n['pos']} positive, {n['neg']} negative), "
          f"{m['all']} transitions, estimator={args.estimator}" + (", single-label" if args.single_label else ""))
    if args.plot_dir:
        print(f"heatmaps of P, P+, P-, W+, W- in {args.plot_dir}/")
    return 0


def _weigh(args: argparse.Namespace) -> int:
    from mralign_plugin.pipeline.weigh import weigh_file

    stats = weigh_file(args.annotated, args.transitions, args.output, _taxonomy(args))
    print(f"wrote {args.output}: {stats['records']} records, {stats['steps']} steps; step weight mean "
          f"{stats['weights/mean']:.3f}, range [{stats['weights/min']:.3f}, {stats['weights/max']:.3f}], "
          f"clipped {stats['weights/clip_frac']:.1%}")
    return 0


def _demo(args: argparse.Namespace) -> int:
    from mralign_plugin.demo import run_demo
    from mralign_plugin.recipe import RecipeError

    if args.no_train and not args.quick:
        print("mralign demo: error: --no-train applies to --quick only", file=sys.stderr)
        return 2
    if args.out is None:
        args.out = "runs/demo-quick" if args.quick else "runs/demo"
    try:
        return run_demo(args.out, quick=args.quick, train=not args.no_train, questions=args.questions,
                        seed=args.seed, recipe=args.recipe, fresh=args.fresh, progress=not args.no_progress)
    except RecipeError as e:
        print(f"mralign demo: error: {e}", file=sys.stderr)
        return 2


def _guard(func):
    """Turn format errors into one readable line and exit status 2 instead of a traceback."""

    def run(args: argparse.Namespace) -> int:
        from mralign_plugin.core.formats import FormatError

        try:
            return func(args)
        except (FormatError, FileNotFoundError, KeyError) as e:
            print(f"mralign {args.verb}: error: {e}", file=sys.stderr)
            return 2

    return run


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser("validate", help="check an annotated jsonl; report every problem at once")
    p.add_argument("file")
    _add_taxonomy_flag(p)
    p.set_defaults(func=_guard(_validate))

    p = subparsers.add_parser("fit-transitions", help="EM estimate of P, P+, P- (Alg. 1-2) -> transitions.json")
    p.add_argument("annotated", help="annotated-trajectory jsonl")
    p.add_argument("-o", "--output", required=True, help="transitions.json to write")
    p.add_argument("--plot-dir", help="also write heatmaps of P, P+, P-, W+ = P+/P, W- = P-/P (Figure 7)")
    p.add_argument("--estimator", choices=["em", "frequency"], default="em",
                   help="em (paper) or the 'EM ✗' ablation: one uniform-split counting pass")
    p.add_argument("--single-label", action="store_true",
                   help="ablation 'Label Diver. ✗': keep only the highest-confidence state per step")
    _add_taxonomy_flag(p)
    p.set_defaults(func=_guard(_fit))

    p = subparsers.add_parser("weigh", help="add Eq. 10 step_weights to every annotated record")
    p.add_argument("annotated")
    p.add_argument("--transitions", required=True, help="transitions.json from fit-transitions")
    p.add_argument("-o", "--output", required=True)
    _add_taxonomy_flag(p)
    p.set_defaults(func=_guard(_weigh))

    p = subparsers.add_parser("demo", help="the main job: MR-ALIGN vs KTO vs vanilla on SmolLM2 (see README)",
                              description="Every MR-ALIGN stage on SmolLM2-135M-Instruct and factual QA built offline, "
                              "then the held-out evaluation and runs/demo/report.md (about 15 min on 2 CPU cores). "
                              "--quick: the one-minute smoke test on the bundled corpus and a tiny random model.")
    p.add_argument("--out", default=None, help="output directory (default: runs/demo, runs/demo-quick with --quick)")
    p.add_argument("--quick", action="store_true", help="bundled corpus, tiny random Llama, about a minute")
    p.add_argument("--questions", type=int, help="training questions (default 300; held-out: half as many)")
    p.add_argument("--seed", type=int, help="question split and order (default 0)")
    p.add_argument("--recipe", help="settings file (default: the embedded recipes/demo-cpu.yaml)")
    p.add_argument("--fresh", action="store_true", help="delete the output directory first (default: resume)")
    p.add_argument("--no-progress", action="store_true")
    p.add_argument("--no-train", action="store_true",
                   help="--quick: stop after the transition model and weights (no OpenRLHF needed)")
    p.set_defaults(func=_guard(_demo))

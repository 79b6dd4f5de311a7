"""`mralign experiment planted`: the controlled experiment with planted transitions (issue 15).

    mralign experiment planted --out runs/planted [--quick] [--seeds 5] [--jobs 2] [--part all|1|2]
"""

from __future__ import annotations

import argparse


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "experiment",
        help="controlled experiments with known ground truth (planted: planted meta-reasoning transitions)",
        description="Part 1: how well em / frequency / single_label recover planted transition matrices. Part 2: "
                    "plain KTO vs MR-ALIGN on a tiny policy in the planted world, through the real trainer.",
    )
    p.add_argument("name", choices=("planted",), help="which experiment")
    p.add_argument("--out", default="runs/planted", help="run directory (report.md, report.json, curves.png)")
    p.add_argument("--seeds", type=int, default=5, help="number of seeds (0..K-1)")
    p.add_argument("--quick", action="store_true", help="reduced Part 2: one data size, KTO and MR-ALIGN only")
    p.add_argument("--jobs", type=int, default=2, help="Part 2 worker processes at a time (one thread each)")
    p.add_argument("--part", choices=("all", "1", "2"), default="all", help="run only Part 1 or Part 2")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from mralign_plugin.experiments.planted.run import run_planted

    if args.seeds < 1 or args.jobs < 1:
        print("mralign experiment: --seeds and --jobs must be at least 1")
        return 2
    run_planted(args.out, seeds=args.seeds, quick=args.quick, jobs=args.jobs, part=args.part)
    return 0

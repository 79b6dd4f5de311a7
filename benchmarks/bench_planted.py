"""Benchmark Part 1 of the planted experiment: cost and error of each estimator on the same traces.

For each N, one set of planted traces (seed 0; half P_good, half P_bad, 30 % two-label steps) is fitted with
every estimator of ``experiments/planted/estimation.py``; it prints the fit time and the errors of P⁺ / P⁻
against the planted matrices, and the ratio of each estimator's error to the EM's (the named baseline of
Table 3's "EM ✗" is ``frequency``, of "Label Diver. ✗" ``single_label``).

    python benchmarks/bench_planted.py                 # N = 1k, 10k, 100k
    python benchmarks/bench_planted.py --sizes 10000   # one size
"""

from __future__ import annotations

import argparse
import time

from mralign_plugin.experiments.planted import estimation, world


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1000, 10000, 100000])
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    print(f"{'N':>7} {'estimator':<13}{'fit s':>8}{'TV P+':>8}{'TV P-':>8}{'TV / EM':>9}{'W+ top':>8}{'W- top':>8}")
    for n in args.sizes:
        t = time.perf_counter()
        records = world.sample_records(world.make_questions(args.seed), n, args.seed)
        sample_s = time.perf_counter() - t
        rows = {}
        for est in estimation.ESTIMATORS:
            t = time.perf_counter()
            model = estimation.fit_world(records, est)
            rows[est] = (time.perf_counter() - t, estimation.score_fit(model))
        em_tv = rows["em"][1]["pos_tv"] + rows["em"][1]["neg_tv"]
        for est, (secs, s) in rows.items():
            ratio = (s["pos_tv"] + s["neg_tv"]) / em_tv
            print(f"{n:>7} {est:<13}{secs:>8.2f}{s['pos_tv']:>8.3f}{s['neg_tv']:>8.3f}{ratio:>9.2f}"
                  f"{s['w_pos_recall']:>8.2f}{s['w_neg_recall']:>8.2f}")
        print(f"{n:>7} (sampling the traces: {sample_s:.2f} s)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

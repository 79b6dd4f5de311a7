"""Benchmark the transition model (Alg. 1-2) on a synthetic corpus of annotated trajectories.

What it measures, in one run:

  (a) the vectorised EM (``estimate_transitions`` on distinct-pair counts) against the literal
      one-observation-at-a-time Alg. 2 (``estimate_transitions_literal``) on the same observations;
      the literal run uses a subsample and is scaled linearly (its cost is linear in observations);
  (b) ``mralign fit-transitions FILE -o OUT`` end to end against a process that only json.loads
      every line of the same file;
  (c) peak memory (ru_maxrss) of the fit process at two corpus sizes: it should not grow with the
      corpus, because the fit streams records and keeps only distinct-pair counts.

The corpus mimics real annotated records: K = 17 (the paper's taxonomy), chains sampled from a
planted P+ / P- (about 8 steps), 30 % of steps carrying a second random state, a short
``<think>`` response with one paragraph per step.

    python benchmarks/bench_transitions.py            # 1,000,000 trajectories
    python benchmarks/bench_transitions.py --quick    # 20,000, a few seconds
    python benchmarks/bench_transitions.py --repeats 2  # on a busy machine
"""

from __future__ import annotations

import argparse
import json
import random
import subprocess
import sys
import tempfile
import time
from itertools import accumulate, pairwise
from pathlib import Path

import numpy as np

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.core.transitions import (
    count_transitions,
    estimate_transitions,
    estimate_transitions_literal,
    structural_mask,
)

PYTHON = sys.executable
WORDS = (
    "the question asks about which country city river author year first known record source claim "
    "answer likely because therefore however recall check consider option evidence suggests"
).split()
PARSE_ONLY = "import json, sys\nfor line in open(sys.argv[1], encoding='utf-8'):\n    json.loads(line)\n"
LAUNCHER = (
    "import os, sys, time\n"
    "t0 = time.perf_counter()\n"
    "pid = os.posix_spawn(sys.argv[1], sys.argv[1:], os.environ)\n"
    "_, status, usage = os.wait4(pid, 0)\n"
    "elapsed = time.perf_counter() - t0\n"
    "print(elapsed, usage.ru_utime + usage.ru_stime, usage.ru_maxrss)\n"
    "sys.exit(os.waitstatus_to_exitcode(status))\n"
)
FIT_DIRECT = (
    "import json, sys\n"
    "from mralign_plugin.core.taxonomy import PAPER_TAXONOMY\n"
    "from mralign_plugin.core.transitions import fit_transition_model\n"
    "records = (json.loads(line) for line in open(sys.argv[1], encoding='utf-8'))\n"
    "json.dump(fit_transition_model(records, PAPER_TAXONOMY), open(sys.argv[2], 'w'))\n"
)


def planted_matrix(num_states: int, rng: np.random.Generator, stop_prob: float) -> np.ndarray:
    """A random P on the structural mask: each label row stops w.p. ``stop_prob``. (K, K)."""
    K = num_states
    trans = rng.dirichlet(np.full(K - 2, 0.3), size=K) * (1.0 - stop_prob)  # (K, K-2) label columns
    trans = np.concatenate([np.zeros((K, 1)), trans, np.full((K, 1), stop_prob)], axis=1)  # (K, K)
    trans[0, 1:-1] /= trans[0, 1:-1].sum()  # <start> always emits at least one labelled step
    trans[0, -1] = 0.0
    trans[-1] = 0.0
    trans[-1, -1] = 1.0
    return trans


def make_sampler(seed: int, stop_prob: float = 1 / 8, second_state_prob: float = 0.3):
    """Return ``sample(i) -> record`` drawing chains from planted P+ (label true) or P- (false)."""
    K = PAPER_TAXONOMY.num_states
    names = PAPER_TAXONOMY.states
    np_rng = np.random.default_rng(seed)
    cum = {
        label: [list(accumulate(row)) for row in planted_matrix(K, np_rng, stop_prob).tolist()]
        for label in (True, False)
    }
    rng = random.Random(seed)
    states = range(K)

    def sample(i: int) -> dict:
        label = rng.random() < 0.65
        rows = cum[label]
        a, steps, paragraphs = 0, [], []
        while True:
            a = rng.choices(states, cum_weights=rows[a])[0]
            if a == K - 1 or len(steps) == 30:
                break
            step_states = [names[a]]
            if rng.random() < second_state_prob:
                b = rng.randrange(1, K - 1)
                if b != a:
                    step_states.append(names[b])
            step = {"paragraphs": [len(paragraphs)], "states": step_states}
            if rng.random() < 0.5:
                step["confidence"] = [float(rng.randint(5, 10)) for _ in step_states]
            steps.append(step)
            paragraphs.append(" ".join(rng.choices(WORDS, k=rng.randint(10, 25))).capitalize() + ".")
        answer = rng.choice(WORDS).capitalize()
        return {
            "id": f"syn-{i:07d}",
            "prompt": f"Which {' '.join(rng.choices(WORDS, k=6))}?",
            "response": "<think>\n" + "\n\n".join(paragraphs) + f"\n</think>\n<answer>{answer}</answer>",
            "label": label,
            "gold": [answer],
            "steps": steps,
        }

    return sample


def write_corpus(path: Path, n: int, seed: int, small_path: Path, n_small: int) -> list[list[frozenset[int]]]:
    """Write ``n`` records to ``path`` (the first ``n_small`` also to ``small_path``); return their chains."""
    sample = make_sampler(seed)
    index = {name: i for i, name in enumerate(PAPER_TAXONOMY.states)}
    interned: dict[tuple[str, ...], frozenset[int]] = {}
    start, stop = frozenset((0,)), frozenset((PAPER_TAXONOMY.stop,))
    chains = []
    with open(path, "w", encoding="utf-8") as f, open(small_path, "w", encoding="utf-8") as g:
        for i in range(n):
            record = sample(i)
            line = json.dumps(record) + "\n"
            f.write(line)
            if i < n_small:
                g.write(line)
            keys = [tuple(s["states"]) for s in record["steps"]]
            sets = [interned.setdefault(k, frozenset(index[x] for x in k)) for k in keys]
            chains.append([start, *sets, stop])
    return chains


def run_measured(argv: list[str]) -> tuple[float, float, float]:
    """Run a command; return (wall s, CPU s = user + sys, peak RSS MiB). Raises on a non-zero exit.

    A fresh small Python process spawns the command and reads its rusage: on Linux a child's
    ru_maxrss starts from its parent's RSS at fork, so forking from this (large) process would
    inflate it. CPU time is what the ratios use: it is far less sensitive to other load on the
    machine than wall time.
    """
    out = subprocess.run([PYTHON, "-c", LAUNCHER, *argv], capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"{' '.join(argv[:5])} ... failed:\n{out.stderr}")
    wall, cpu, maxrss_kib = out.stdout.split()[-3:]
    return float(wall), float(cpu), float(maxrss_kib) / 1024


def best_of(repeats: int, argv: list[str]) -> tuple[float, float, float]:
    """The run with the least CPU time among ``repeats`` runs of ``argv`` (see run_measured)."""
    return min((run_measured(argv) for _ in range(repeats)), key=lambda measured: measured[1])


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


def bench_em(chains: list[list[frozenset[int]]], literal_sample: int, repeats: int = 5) -> None:
    """(a) vectorised EM on distinct-pair counts vs the literal Alg. 2 on every observation."""
    mask = structural_mask(PAPER_TAXONOMY.num_states)
    n_obs = sum(len(c) - 1 for c in chains)

    t0 = time.perf_counter()
    counts = count_transitions(chains)
    t_count = time.perf_counter() - t0
    t_em = min(_timed(estimate_transitions, counts, mask)[1] for _ in range(repeats))

    sub = chains[:literal_sample]
    observations = [pair for chain in sub for pair in pairwise(chain)]
    literal, t_lit_sub = _timed(estimate_transitions_literal, observations, mask)
    vectorised = estimate_transitions(count_transitions(sub), mask)
    t_lit = t_lit_sub * n_obs / len(observations)
    scaled = len(observations) < n_obs

    print(f"(a) EM on {len(chains):,} trajectories, {n_obs:,} observations, {len(counts):,} distinct pairs")
    print(f"    counting pass (count_transitions):           {t_count:9.3f} s")
    print(f"    vectorised EM on the counts (best of {repeats}):   {t_em:9.4f} s")
    print(
        f"    literal Alg. 2 on {len(observations):,} observations:  {t_lit_sub:9.3f} s"
        + (f"  -> scaled linearly to {n_obs:,}: {t_lit:.1f} s" if scaled else "")
    )
    print(f"    literal vs vectorised on that subsample: max |dP| = {np.abs(literal - vectorised).max():.1e}")
    print(f"    speed-up, EM:             {t_lit / t_em:10,.0f}x  (target >= 100x) {verdict(t_lit / t_em >= 100)}")
    # The counting pass is per observation; in the fit it is fused with reading records, see (b).
    print(f"    speed-up, counting + EM:  {t_lit / (t_count + t_em):10,.0f}x  (for information)")


def _timed(fn, *args):
    t0 = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - t0


def bench_cli(path: Path, small_path: Path, out_dir: Path, n: int, n_small: int, repeats: int) -> None:
    """(b) fit-transitions end to end vs parse only, and (c) peak memory at two corpus sizes."""
    cli = [PYTHON, "-m", "mralign_plugin.cli", "fit-transitions"]
    help_run = subprocess.run([*cli, "--help"], capture_output=True, text=True)
    t_parse = best_of(repeats, [PYTHON, "-c", PARSE_ONLY, str(path)])
    t_direct = best_of(repeats, [PYTHON, "-c", FIT_DIRECT, str(path), str(out_dir / "direct.json")])
    print(
        f"(b) {n:,} records, {path.stat().st_size / 2**20:,.0f} MiB of jsonl; "
        f"CPU time (user+sys) of each process, best of {repeats}"
    )
    print(f"    parse only (json.loads every line):           {_row(t_parse)}")
    print(f"    json.loads + fit_transition_model (library):  {_row(t_direct)}   {t_direct[1] / t_parse[1]:.2f}x parse")
    if help_run.returncode != 0:
        print("    mralign fit-transitions: not available yet, skipped (b) and (c):")
        print("      " + (help_run.stderr.strip().splitlines() or ["?"])[-1])
        return
    t_cli = best_of(repeats, [*cli, str(path), "-o", str(out_dir / "cli.json")])
    ratio = t_cli[1] / t_parse[1]
    print(
        f"    mralign fit-transitions (end to end):         {_row(t_cli)}   {ratio:.2f}x parse"
        f"  (target <= 1.5x) {verdict(ratio <= 1.5)}"
    )
    rss_small, rss_big = run_measured([*cli, str(small_path), "-o", str(out_dir / "cli_small.json")])[2], t_cli[2]
    growth = rss_big / rss_small
    print(
        f"(c) peak RSS of mralign fit-transitions: {n_small:,} records {rss_small:.0f} MiB, "
        f"{n:,} records {rss_big:.0f} MiB: {growth:.2f}x for {n / n_small:.0f}x the corpus "
        f"(target <= 1.2x) {verdict(growth <= 1.2)}"
    )


def _row(measured: tuple[float, float, float]) -> str:
    wall, cpu, rss = measured
    return f"{cpu:8.2f} s CPU ({wall:6.2f} s wall)   peak {rss:5.0f} MiB"


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", type=int, default=1_000_000, help="trajectories in the corpus (default 1,000,000)")
    parser.add_argument("--quick", action="store_true", help="20,000 trajectories, literal on 5,000")
    parser.add_argument(
        "--literal-sample",
        type=int,
        default=50_000,
        help="trajectories the literal Alg. 2 runs on before linear scaling (default 50,000)",
    )
    parser.add_argument("--repeats", type=int, default=1, help="runs per process in (b); the least CPU time counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--keep", metavar="DIR", help="write the corpus here and keep it (default: a temp dir)")
    return parser


def main() -> None:
    args = make_parser().parse_args()
    sys.stdout.reconfigure(line_buffering=True)  # progress is visible when redirected to a file
    n = 20_000 if args.quick else args.n
    literal_sample = min(5_000 if args.quick else args.literal_sample, n)
    n_small = max(n // 10, 1)
    with tempfile.TemporaryDirectory(prefix="bench_transitions_") as tmp:
        work = Path(args.keep or tmp)
        work.mkdir(parents=True, exist_ok=True)
        path, small_path = work / f"annotated_{n}.jsonl", work / f"annotated_{n_small}.jsonl"
        t0 = time.perf_counter()
        chains = write_corpus(path, n, args.seed, small_path, n_small)
        print(f"wrote {n:,} synthetic trajectories to {path} in {time.perf_counter() - t0:.1f} s")
        bench_em(chains, literal_sample)
        del chains
        bench_cli(path, small_path, work, n, n_small, args.repeats)
        if n < 1_000_000:
            print(f"note: targets are set for --n 1,000,000; at {n:,} fixed costs (imports, 3 EM fits) weigh more")


if __name__ == "__main__":
    main()

"""`mralign demo --quick`: the one-minute smoke test, on the bundled demo corpus with embedded defaults.

validate -> fit-transitions (P, P⁺, P⁻, heatmaps) -> weigh (Eq. 10) -> segment-weighted KTO and the
plain-KTO baseline on a tiny random Llama through OpenRLHF (CPU) -> a short report.

    mralign demo --quick --out runs/demo-quick             # about a minute on 2 CPU cores
    mralign demo --quick --out runs/demo-quick --no-train  # the transition model only (no OpenRLHF needed)

The tiny model is random, so the training stage shows that the whole path runs and what it logs
(loss, reward margin, mean token weight), not a quality result.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from mralign_plugin.core.formats import read_transitions, validate_file
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.data import demo_corpus_path
from mralign_plugin.pipeline.fit_transitions import fit_transitions_file
from mralign_plugin.pipeline.transition_plots import advantage
from mralign_plugin.pipeline.weigh import weigh_file


def _top_transitions(ratio: np.ndarray, trans_class: np.ndarray, states: tuple[str, ...], n: int = 5) -> list[str]:
    # Rank by advantage W only the transitions the class really makes (P± at least twice the uniform
    # rate); rows a class rarely visits stay near-uniform from smoothing and would rank on noise.
    observed = np.isfinite(ratio) & (trans_class >= 2.0 / (len(states) - 1))
    flat = np.where(observed, ratio, -np.inf).ravel()
    order = np.argsort(flat)[::-1][:n]
    K = len(states)
    return [f"{states[i // K]} -> {states[i % K]}  W={flat[i]:.2f}  P±={trans_class.flat[i]:.2f}" for i in order if np.isfinite(flat[i])]


# Embedded training defaults: the paper's beta and lambdas (Table 13); a large learning rate so the
# random tiny model visibly moves in 2 epochs of 120 rows.
TRAIN_FLAGS = (
    "--data.max_len", "1024", "--data.apply_chat_template", "--kto.beta", "0.1", "--kto.desirable_weight", "1.0",
    "--kto.undesirable_weight", "1.5", "--train.micro_batch_size", "4", "--train.batch_size", "8",
    "--train.max_epochs", "2", "--train.seed", "42", "--adam.lr", "1e-3", "--lr_scheduler", "constant",
    "--lr_warmup_ratio", "0", "--ds.zero_stage", "0", "--ds.attn_implementation", "sdpa",
)


def _train_arm(model: Path, data: Path, out: Path, weights: str) -> list[dict]:
    """One run of the KTO trainer CLI (a subprocess, as a user runs it); returns its per-step log."""
    out.mkdir(parents=True, exist_ok=True)
    argv = [sys.executable, "-m", "mralign_plugin.cli.train_kto", "--model.model_name_or_path", str(model),
            "--data.dataset", str(data), "--mralign.weights", weights, "--ckpt.output_dir", str(out / "model"),
            "--ckpt.path", str(out / "checkpoints"), *TRAIN_FLAGS]
    # One thread: for a model this small, threads only add contention on a 2-core machine.
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    with open(out / "train.log", "w") as log:
        done = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"training ({weights=}) failed with exit status {done.returncode}; see {out / 'train.log'}")
    lines = (out / "model" / "train_log.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


def _last_epoch_mean(log: list[dict], key: str) -> float:
    last = [row[key] for row in log if row["epoch"] == log[-1]["epoch"]]
    return sum(last) / len(last)


def run_training(out: Path) -> None:
    """Segment-weighted KTO (MR-ALIGN) vs plain KTO on the weighted demo corpus, same data and seed."""
    model = out / "tiny-llama"
    if not (model / "config.json").exists():
        # A subprocess like the training runs, so library warnings land in the log, not the report.
        with open(out / "tiny-llama.log", "w") as log:
            subprocess.run([sys.executable, "-m", "mralign_plugin.tiny_model", str(model)], stdout=log,
                           stderr=subprocess.STDOUT, check=True)
    print(f"      {'run':<22}{'steps':>6}{'loss':>9}{'margin':>9}{'mean ω':>9}   (last-epoch means)")
    for name, weights in (("MR-ALIGN (weights on)", "on"), ("KTO (weights off)", "off")):
        log = _train_arm(model, out / "weighted.jsonl", out / ("mralign" if weights == "on" else "kto"), weights)
        print(f"      {name:<22}{log[-1]['global_step']:>6}{_last_epoch_mean(log, 'loss'):>9.4f}"
              f"{_last_epoch_mean(log, 'margin'):>9.3f}{_last_epoch_mean(log, 'mean_token_weight'):>9.3f}")
    print(f"      checkpoints and logs: {out / 'mralign'}/, {out / 'kto'}/")


def run_quick(out_dir: str | Path, train: bool = True) -> int:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    corpus = demo_corpus_path()
    print(f"[1/5] validate {corpus.name}")
    n, problems = validate_file(corpus)
    if problems:
        print("\n".join(message for _, message in problems))
        return 1
    print(f"      {n} records, all valid")

    print("[2/5] fit-transitions (EM, Alg. 1-2): P, P+, P- and heatmaps")
    model = fit_transitions_file(corpus, out / "transitions.json", plot_dir=out / "plots", progress=False)
    counts = model["n_trajectories"]
    print(f"      {counts['pos']} positive / {counts['neg']} negative trajectories, "
          f"{model['n_transitions']['all']} transitions -> {out / 'transitions.json'}")

    print("[3/5] weigh (Eq. 10): per-step weights clip(P±/P, 1/e, e)")
    stats = weigh_file(corpus, out / "transitions.json", out / "weighted.jsonl", progress=False)
    print(f"      {stats['steps']} steps, mean weight {stats['weights/mean']:.3f}, "
          f"range [{stats['weights/min']:.3f}, {stats['weights/max']:.3f}], clipped {stats['weights/clip_frac']:.1%}"
          f" -> {out / 'weighted.jsonl'}")

    if train:
        print("[4/5] train: segment-weighted KTO vs plain KTO, tiny random Llama, OpenRLHF on CPU")
        run_training(out)
    else:
        print("[4/5] train: skipped (--no-train)")

    print("[5/5] report")
    tm = read_transitions(out / "transitions.json")
    states = PAPER_TAXONOMY.states
    for name, trans_class in (("positive", tm.trans_pos), ("negative", tm.trans_neg)):
        print(f"      most {name}-typical transitions (W = P{'+' if name == 'positive' else '-'}/P):")
        for line in _top_transitions(advantage(trans_class, tm.trans_all), trans_class, states):
            print(f"        {line}")
    print(f"      heatmaps: {out / 'plots'}/{{P,P_pos,P_neg,W_pos,W_neg}}.png")
    return 0

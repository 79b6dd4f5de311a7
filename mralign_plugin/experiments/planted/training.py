"""Part 2 of the planted experiment: plain KTO vs MR-ALIGN on a tiny policy, through the real trainer.

For one seed (``run_seed``):

1. build the world's tiny Llama and train it on a 50/50 mix of P_good and P_bad traces (the base policy);
2. for each data size n, sample n traces from the base on the training questions, label them by answer
   correctness (``pipeline/label.is_correct``), annotate them with the known states and with the rules
   tagger, fit P, P⁺, P⁻ (``pipeline/fit_transitions``) and weigh them (``pipeline/weigh``);
3. train plain KTO (weights off), MR-ALIGN (known states) and MR-ALIGN on the rules tagger's states from the
   same base, data, seed and steps, through ``adapters/openrlhf/train.build_trainer`` and ``KTOTrainer.fit``
   (the path ``mralign train`` runs), saving an HF model every ``save_steps`` optimizer steps;
4. sample from the base and every saved model on the held-out questions and ``measure`` them.

Hyperparameters are fixed in ``PlantedConfig`` (chosen before any held-out result was looked at).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import subprocess
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

from mralign_plugin.annotate.rules import annotate_rules
from mralign_plugin.core.formats import write_jsonl
from mralign_plugin.core.segment import parse_response
from mralign_plugin.experiments.planted.policy import build_model, measure, sample, supervised
from mralign_plugin.experiments.planted.world import (
    known_states,
    make_questions,
    sample_records,
    split_questions,
)
from mralign_plugin.pipeline.fit_transitions import fit_transitions_file
from mralign_plugin.pipeline.label import is_correct
from mralign_plugin.pipeline.weigh import weigh_file

TRAINER_MODULE = "mralign_plugin.cli.train_kto"  # run as a process, never imported (cli is above us)
ARMS = ("kto", "mralign", "mralign_rules")  # weights off; on with known states; on with rules-tagger states


@dataclass(frozen=True)
class PlantedConfig:
    """Everything Part 2 depends on (fixed before looking at held-out results)."""

    sizes: tuple[int, ...] = (128, 512)  # KTO rows sampled from the base policy
    sft_traces: int = 2400
    sft_epochs: int = 8
    sft_lr: float = 5e-3
    hidden: int = 64
    layers: int = 2
    eval_per_question: int = 8  # held-out samples per question (24 held-out questions)
    kto_epochs: int = 3
    batch_size: int = 16
    micro_batch_size: int = 8
    lr: float = 2e-4
    beta: float = 0.1
    desirable_weight: float = 1.0
    undesirable_weight: float = 1.5
    evals_per_run: int = 4  # checkpoints per training run (plus the base at step 0)
    arms: tuple[str, ...] = ARMS


def kto_rows(samples: list[dict], annotator: str) -> list[dict]:
    """Sampled traces -> annotated records: label = answer correct, steps from ``annotator`` ("known"/"rules")."""
    rows = []
    for k, s in enumerate(samples):
        q, response = s["question"], s["response"]
        if annotator == "known":
            parsed = parse_response(response)
            steps = known_states([response[a:b] for a, b in parsed.paragraphs])
        else:
            steps = annotate_rules(response)
        rows.append({"id": f"{q.id}-{k}", "prompt": q.prompt, "response": response,
                     "label": is_correct(response, [q.gold]), "gold": [q.gold], "steps": steps})
    return rows


def prepare_data(samples: list[dict], out: Path) -> dict[str, Path]:
    """Annotate, fit and weigh with the project's stages; ``{annotator: weighted.jsonl}`` in ``out``."""
    paths = {}
    for annotator in ("known", "rules"):
        d = out / annotator
        d.mkdir(parents=True, exist_ok=True)
        write_jsonl(d / "annotated.jsonl", kto_rows(samples, annotator))
        fit_transitions_file(d / "annotated.jsonl", d / "transitions.json", progress=False)
        weigh_file(d / "annotated.jsonl", d / "transitions.json", d / "weighted.jsonl", progress=False)
        paths[annotator] = d / "weighted.jsonl"
    return paths


def trainer_argv(cfg: PlantedConfig, base: Path, data: Path, out: Path, weights: bool, seed: int,
                 save_steps: int) -> list[str]:
    """The flags of ``mralign train`` / ``python -m mralign_plugin.cli.train_kto`` for one arm."""
    return ["--model.model_name_or_path", str(base), "--data.dataset", str(data), "--data.max_len", "512",
            "--mralign.weights", "on" if weights else "off", "--kto.beta", str(cfg.beta),
            "--kto.desirable_weight", str(cfg.desirable_weight), "--kto.undesirable_weight", str(cfg.undesirable_weight),
            "--train.micro_batch_size", str(cfg.micro_batch_size), "--train.batch_size", str(cfg.batch_size),
            "--train.max_epochs", str(cfg.kto_epochs), "--train.seed", str(seed), "--adam.lr", str(cfg.lr),
            "--lr_scheduler", "constant", "--lr_warmup_ratio", "0", "--ds.zero_stage", "0",
            "--ds.attn_implementation", "sdpa", "--ckpt.output_dir", str(out / "model"),
            "--ckpt.path", str(out / "checkpoints"), "--ckpt.save_steps", str(save_steps), "--ckpt.save_hf",
            "--ckpt.disable_ds", "--ckpt.max_num", "100"]


def train_arm(argv: list[str], log_path: Path) -> None:
    """One run of the trainer CLI (``python -m mralign_plugin.cli.train_kto``, what ``mralign train`` launches on
    a CPU), as a subprocess: ``build_trainer`` + ``KTOTrainer.fit`` + the final HF model."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled"}
    with open(log_path, "w") as log:
        done = subprocess.run([sys.executable, "-m", TRAINER_MODULE, *argv], stdout=log, stderr=subprocess.STDOUT,
                              env=env)
    if done.returncode != 0:
        raise RuntimeError(f"training failed with exit status {done.returncode}; see {log_path}")


def checkpoints(out: Path) -> list[tuple[int, Path]]:
    """(global step, HF model dir) of every checkpoint a run saved, in step order."""
    found = [(int(p.name[len("global_step"):-len("_hf")]), p) for p in (out / "checkpoints").glob("global_step*_hf")]
    return sorted(found)


def run_seed(seed: int, cfg: PlantedConfig, out: Path, progress=None) -> dict:
    """Part 2 for one seed; returns ``{"seed", "sft", "data": {n: ...}, "curves": {n: {arm: [{step, ...}]}}}``."""
    import torch

    torch.set_num_threads(1)  # a model this small only loses from threads on a shared 2-core machine
    out.mkdir(parents=True, exist_ok=True)
    questions = make_questions(seed)
    train_q, test_q = split_questions(questions, seed)
    init = build_model(out / "init", questions, seed, cfg.hidden, cfg.layers)
    sft_stats = supervised(init, sample_records(questions, cfg.sft_traces, seed), out / "base", seed,
                           epochs=cfg.sft_epochs, lr=cfg.sft_lr)
    base = out / "base"
    base_eval = measure(sample(base, test_q, cfg.eval_per_question, seed + 1))
    result = {"seed": seed, "sft": sft_stats, "data": {}, "curves": {}}
    for n in cfg.sizes:
        per_q = -(-n // len(train_q))
        drawn = sample(base, train_q, per_q, seed + 2)
        drawn = random.Random(seed).sample(drawn, n)
        data = prepare_data(drawn, out / f"n{n}")
        rows = [json.loads(line) for line in data["known"].read_text().splitlines()]
        result["data"][str(n)] = {"n": n, "pos": sum(r["label"] for r in rows), "neg": sum(not r["label"] for r in rows)}
        total_steps = n // cfg.batch_size * cfg.kto_epochs
        save_steps = max(1, total_steps // cfg.evals_per_run)
        curves = {}
        for arm in cfg.arms:
            run_dir = out / f"n{n}" / arm
            shutil.rmtree(run_dir, ignore_errors=True)
            run_dir.mkdir(parents=True)
            train_arm(trainer_argv(cfg, base, data["rules" if arm == "mralign_rules" else "known"], run_dir,
                                   weights=arm != "kto", seed=seed, save_steps=save_steps), run_dir / "train.log")
            curve = [{"step": 0, **base_eval}]
            for step, path in checkpoints(run_dir):
                curve.append({"step": step, **measure(sample(path, test_q, cfg.eval_per_question, seed + 1))})
                shutil.rmtree(path)  # the curve is what is kept; the final model stays in run_dir/model
            curves[arm] = curve
            if progress is not None:
                progress.update(1)
        result["curves"][str(n)] = curves
    return result


def main(argv: list[str] | None = None) -> int:
    """Worker entry point: ``python -m mralign_plugin.experiments.planted.training SEED OUT CONFIG_JSON``."""
    import sys

    seed, out, config = (argv if argv is not None else sys.argv[1:])[:3]
    raw = json.loads(config)
    cfg = PlantedConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in raw.items()})
    result = run_seed(int(seed), cfg, Path(out))
    (Path(out) / "result.json").write_text(json.dumps(result))
    return 0


def config_json(cfg: PlantedConfig) -> str:
    return json.dumps(asdict(cfg))


if __name__ == "__main__":
    raise SystemExit(main())

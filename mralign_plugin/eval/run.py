"""`mralign eval`: generate (or read) predictions, score them with the paper's metrics, write a report.

One run = one model or method (a table row per thinking mode) on one or more datasets (§7):

* short-answer QA (NQ-Open, SciQ without options, SimpleQA, or any ``{question, answers}`` file):
  EM_t / EM_a / EM_both, Acc, Mis, answer-only accuracy, bootstrap 95 % CIs, hit-gap positions
  (eval/metrics.py);
* TruthfulQA (generation): Truth / Info from an OpenAI-compatible judge (eval/judge.py);
* LongFact: F1@K and #Claims from VeriScore's output (eval/longfact.py).

Generation reuses pipeline/generate.py (vLLM when importable, else transformers; the paper's
inference prompt, Figure 11) with the evaluation decoding of Table 15: T 0.6, top_p 0.95,
top_k 20, max_tokens 8192, one sample per
question (§9 item 17). A LoRA adapter directory
(``adapter_config.json``) is merged into its base model once (``RUN/merged_model``). Everything is
resumable: finished predictions, judge verdicts and VeriScore outputs are reused by a rerun.

    mralign eval --model Qwen/Qwen3-8B --name vanilla --thinking both \\
        --dataset nq_open --dataset sciq --dataset simpleqa -o runs/eval/vanilla
    mralign eval --model runs/mralign/lora --name MR-ALIGN --dataset nq_open --dataset sciq \\
        --baseline runs/eval/vanilla -o runs/eval/mralign
    mralign eval --predictions nq_open=my_predictions.jsonl --name mine -o runs/eval/mine

Run directory:

    config.json                      the EvalConfig of the last invocation
    predictions/NAME.MODE.jsonl      QA row + prompt, response, mode, model, sampling
    scored/NAME.MODE.jsonl           per item: em_t, em_a, em_both, mis, correct, first_pos, last_pos, answer, ...
    judge/NAME.MODE.jsonl            TruthfulQA verdicts (resume file)
    veriscore/NAME__MODE.jsonl       VeriScore input (+ its model_output/ when run)
    run.json                         this run's summaries (read by `mralign report`)
    report.json, report.md, plots/   the Table-2-shaped report (eval/report.py)
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from mralign_plugin.core.formats import FormatError, iter_jsonl, read_jsonl, write_jsonl
from mralign_plugin.core.segment import parse_response
from mralign_plugin.eval import longfact
from mralign_plugin.eval.judge import JudgeEndpoint, judge_items, summarize_judgments
from mralign_plugin.eval.metrics import hit_gap, score_response, summarize
from mralign_plugin.pipeline.datasets import HUB_DATASETS, load_qa, to_qa
from mralign_plugin.pipeline.resumable import ResumableOutput, id_key

RUN_FORMAT = "mralign-eval-run/1"
MODES = ("thinking_off", "thinking_on")
# Evaluation splits of the paper's benchmarks (§7.1): NQ-Open's 3,610-question test set is the hub's
# "validation" split; SciQ test has 1,000 questions; SimpleQA and TruthfulQA have one split each.
EVAL_SPLITS = {"nq_open": "validation", "sciq": "test", "simpleqa": "test", "truthfulqa": "validation"}
TASKS = ("short_qa", "truthfulqa", "longfact")


@dataclass
class EvalConfig:
    """Everything `mralign eval` can be told; defaults are the paper's evaluation settings (Table 15)."""

    model: str | None = None  # hub id, local directory or LoRA adapter directory
    name: str | None = None  # method name in the table (default: the model's last path part)
    datasets: list[str] = field(default_factory=list)  # "NAME=SOURCE" or SOURCE (file or hub id / short name)
    predictions: list[str] = field(default_factory=list)  # "NAME=FILE": score these instead of generating
    thinking: str = "on"  # on | off | both
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 20
    max_new_tokens: int = 8192
    seed: int = 0
    engine: str = "auto"
    dtype: str = "auto"
    batch_size: int = 8
    thinking_mode: str = "auto"
    tensor_parallel_size: int = 1
    split: str | None = None  # overrides EVAL_SPLITS for hub datasets
    limit: int | None = None
    chunk_size: int = 64
    few_shot: str | None = None  # worked examples as earlier chat turns (pipeline/generate.py load_few_shot)
    two_phase: bool = False  # thinking and answer as two stops (pipeline/generate.py complete)
    answer_max_tokens: int = 64
    n_resamples: int = 1000
    baseline: str | None = None  # a run directory: consistency buckets against its thinking-on rows
    judge: JudgeEndpoint | None = None
    veriscore_home: str | None = None
    veriscore_extraction_model: str = longfact.DEFAULT_EXTRACTION_MODEL
    veriscore_verification_model: str = longfact.DEFAULT_VERIFICATION_MODEL
    veriscore_label_n: int = 3
    longfact_k: int | None = None
    progress: bool = True


def parse_dataset_spec(spec: str) -> tuple[str, str]:
    """``"NAME=SOURCE"`` or ``"SOURCE"`` -> (name, source); names keep ``[A-Za-z0-9_-]``.

    Example:
        >>> parse_dataset_spec("nq=data/nq test.jsonl")
        ('nq', 'data/nq test.jsonl')
        >>> parse_dataset_spec("sciq"), parse_dataset_spec("/x/simple.qa.csv")
        (('sciq', 'sciq'), ('simple_qa', '/x/simple.qa.csv'))
    """
    name, sep, source = spec.partition("=")
    if not sep:
        source = spec
        name = spec if spec in HUB_DATASETS else Path(spec).stem
    name = re.sub(r"[^A-Za-z0-9_-]", "_", name.strip())
    if not name or not source:
        raise ValueError(f"dataset spec {spec!r}: expected NAME=SOURCE or SOURCE")
    return name, source


def task_of(rows: list[dict]) -> str:
    """``truthfulqa`` (rows carry ``best_answer``), ``longfact`` (no gold) or ``short_qa``."""
    if rows and all("best_answer" in r for r in rows):
        return "truthfulqa"
    if rows and all(not r["answers"] for r in rows):
        return "longfact"
    return "short_qa"


def method_label(name: str, mode: str, modes: list[str]) -> str:
    """Table row label: the paper's "w/o Thinking" / "w Thinking" suffixes when the run has both modes."""
    if mode == "thinking_off":
        return f"{name} w/o Thinking"
    return f"{name} w Thinking" if "thinking_off" in modes else name


def _modes(thinking: str) -> list[str]:
    try:
        return {"on": ["thinking_on"], "off": ["thinking_off"], "both": ["thinking_off", "thinking_on"]}[thinking]
    except KeyError:
        raise ValueError(f"thinking must be on, off or both, got {thinking!r}") from None


# ---------------------------------------------------------------------------------------------
# Predictions: generated here, or imported from a file made elsewhere.


def resolve_model(model: str, out_dir: Path) -> str:
    """The model path to load: a LoRA adapter directory is merged into its base once (needs peft)."""
    adapter = Path(model)
    if not (adapter / "adapter_config.json").exists():
        return model
    merged = out_dir / "merged_model"
    if (merged / "config.json").exists():
        return str(merged)
    try:
        from peft import AutoPeftModelForCausalLM
    except ImportError:
        raise ImportError(f"{model} is a LoRA adapter; merging it needs peft: pip install peft") from None
    from transformers import AutoTokenizer

    base_name = json.loads((adapter / "adapter_config.json").read_text())["base_model_name_or_path"]
    model_obj = AutoPeftModelForCausalLM.from_pretrained(str(adapter)).merge_and_unload()
    model_obj.save_pretrained(merged)
    has_tokenizer = any((adapter / f).exists() for f in ("tokenizer.json", "tokenizer_config.json"))
    AutoTokenizer.from_pretrained(str(adapter) if has_tokenizer else base_name).save_pretrained(merged)
    return str(merged)


class _LazyEngine:
    """Builds the generation engine on first use, so scoring-only runs never load a model."""

    def __init__(self, cfg: EvalConfig, out_dir: Path) -> None:
        self.cfg, self.out_dir, self.engine, self.mode = cfg, out_dir, None, None

    def get(self):
        if self.engine is None:
            import torch

            from mralign_plugin.pipeline.generate import make_engine, resolve_thinking_mode

            torch.manual_seed(self.cfg.seed)
            path = resolve_model(self.cfg.model, self.out_dir)
            self.engine = make_engine(self.cfg.engine, path, self.cfg.dtype, self.cfg.batch_size, self.cfg.seed,
                                      self.cfg.tensor_parallel_size)
            self.mode = resolve_thinking_mode(self.engine.tokenizer, self.cfg.thinking_mode)
        return self.engine


def sampling_config(cfg: EvalConfig):
    """pipeline/generate.py's SamplingConfig for one evaluation sample per question (Table 15)."""
    from mralign_plugin.pipeline.generate import SamplingConfig

    return SamplingConfig(n=1, temperature=cfg.temperature, top_p=cfg.top_p, top_k=cfg.top_k,
                          max_new_tokens=cfg.max_new_tokens, seed=cfg.seed)


def generate_predictions(rows: list[dict], path: Path, mode: str, cfg: EvalConfig, lazy: _LazyEngine) -> int:
    """Append a prediction for every row whose id is not yet in ``path``; return how many were made."""
    from mralign_plugin.pipeline.generate import complete, load_few_shot, messages_for

    with ResumableOutput(path, id_key, "mralign eval") as out:
        todo = [r for r in rows if r["id"] not in out.done]
        if not todo:
            return 0
        engine = lazy.get()
        sampling = sampling_config(cfg)
        few_shot = load_few_shot(cfg.few_shot) if cfg.few_shot else None
        progress = None
        if cfg.progress:
            from tqdm import tqdm

            progress = tqdm(total=len(todo), unit="q", desc=f"eval {path.stem} ({engine.name})", dynamic_ncols=True)
        for start in range(0, len(todo), cfg.chunk_size):
            chunk = todo[start : start + cfg.chunk_size]
            messages = [messages_for(r["question"], few_shot=few_shot) for r in chunk]
            texts = complete(engine, messages, sampling, mode == "thinking_on", lazy.mode, cfg.two_phase,
                             cfg.answer_max_tokens)  # [[text]] per question
            for row, msgs, draws in zip(chunk, messages, texts, strict=True):
                out.write({**row, "prompt": msgs, "response": draws[0], "mode": mode, "model": cfg.model,
                           "engine": engine.name, "thinking_mode": lazy.mode, "sampling": asdict(sampling)})
            if progress is not None:
                progress.update(len(chunk))
    if progress is not None:
        progress.close()
    return len(todo)


def import_predictions(path: str | Path, name: str, gold: dict[str, dict] | None, default_modes: list[str]) -> dict[str, list[dict]]:
    """Predictions made elsewhere, grouped by mode, each joined with its QA row.

    A line needs ``id`` (or gets the line index) and either ``response`` (its mode from ``mode``,
    else the run's single ``--thinking`` mode) or ``draws`` (the output of ``mralign generate``: the
    first draw of each mode is used). Gold comes from ``gold`` (the ``--dataset`` of the same name)
    by id, else from the line itself in any schema of pipeline/datasets.py (``gold`` also works).
    """
    by_mode: dict[str, list[dict]] = {}
    for n, (lineno, row) in enumerate(iter_jsonl(path)):
        if isinstance(row, FormatError):
            raise row
        record_id = str(row["id"]) if row.get("id") not in (None, "") else f"{name}-{n:06d}"
        if gold is not None:
            if record_id not in gold:
                raise ValueError(f"{path}:{lineno}: id {record_id!r} is not in dataset {name!r}")
            qa = gold[record_id]
        else:
            fields = {k: v for k, v in row.items() if k not in ("response", "draws", "mode")}
            if "gold" in fields and "answers" not in fields:
                fields["answers"] = fields.pop("gold")
            try:
                qa = to_qa({**fields, "id": record_id}, n, name)
            except ValueError as e:
                raise ValueError(f"{path}:{lineno}: {e}; give --dataset {name}=SOURCE for the gold") from None
        if isinstance(row.get("draws"), dict):
            responses = {m: row["draws"][m][0] for m in MODES if row["draws"].get(m)}
        elif isinstance(row.get("response"), str):
            mode = row.get("mode")
            if mode is None:
                if len(default_modes) != 1:
                    raise ValueError(f"{path}:{lineno}: no `mode` field; use --thinking on or off for this file")
                mode = default_modes[0]
            if mode not in MODES:
                raise ValueError(f"{path}:{lineno}: mode must be one of {MODES}, got {mode!r}")
            responses = {mode: row["response"]}
        else:
            raise ValueError(f"{path}:{lineno}: needs a `response` string or `draws` (from mralign generate)")
        for mode, text in responses.items():
            by_mode.setdefault(mode, []).append({**qa, "response": text, "mode": mode,
                                                 "model": row.get("model"), "imported_from": str(path)})
    return by_mode


# ---------------------------------------------------------------------------------------------
# Scoring.


def score_short_qa(preds: list[dict], mode: str) -> list[dict]:
    """Per-item EM metrics (eval/metrics.py) of predictions of one mode."""
    return [{"id": p["id"], "mode": mode, **score_response(p["response"], p["answers"], mode == "thinking_on")}
            for p in preds]


def _final_answers(preds: list[dict], mode: str) -> list[dict]:
    return [{"id": p["id"], "mode": mode, "question": p["question"], "best_answer": p.get("best_answer", ""),
             "answer": parse_response(p["response"]).answer} for p in preds]


def evaluate_dataset(name: str, task: str, preds: list[dict], mode: str, cfg: EvalConfig, out: Path) -> tuple[dict, list[dict]]:
    """Summary and per-item rows of one (dataset, mode)."""
    if task == "short_qa":
        items = score_short_qa(preds, mode)
        summary = summarize(items, mode == "thinking_on", n_resamples=cfg.n_resamples, seed=cfg.seed)
        if mode == "thinking_on":
            summary["hit_gap"] = hit_gap(items)
        return {"task": task, **summary}, items
    items = _final_answers(preds, mode)
    if task == "truthfulqa":
        if cfg.judge is None:
            return {"task": task, "n": len(items), "truth": None, "info": None,
                    "pending": "no judge: pass --judge-model (and --judge-base-url) to score Truth / Info"}, items
        verdicts, failed = judge_items(items, out / "judge" / f"{name}.{mode}.jsonl", cfg.judge)
        by_id = {v["id"]: v for v in verdicts}
        for it in items:
            if it["id"] in by_id:
                it.update(truthful=by_id[it["id"]]["truthful"], informative=by_id[it["id"]]["informative"])
        summary = summarize_judgments(verdicts, len(items), failed, cfg.n_resamples, cfg.seed)
        if failed:
            summary["pending"] = f"{failed} items failed to judge; rerun to retry them"
        return {"task": task, **summary}, items
    # LongFact: VeriScore input, the hook, then F1@K when its output is there.
    vdir = (out / "veriscore").resolve()
    vdir.mkdir(parents=True, exist_ok=True)
    stem = longfact.input_stem(name, mode)
    write_jsonl(vdir / f"{stem}.jsonl", longfact.input_rows(items, cfg.name or "model", prompt_source=name))
    result = longfact.output_path(vdir, stem, cfg.veriscore_label_n)
    argv = longfact.command(vdir / f"{stem}.jsonl", vdir, cfg.veriscore_extraction_model,
                            cfg.veriscore_verification_model, cfg.veriscore_label_n)
    if not result.exists() and cfg.veriscore_home:
        longfact.run_veriscore(argv, cfg.veriscore_home, vdir)
    if not result.exists():
        return {"task": task, "n": len(items), "f1_at_k": None, "claims_mean": None,
                "pending": "run VeriScore (eval/longfact.py), then rerun this eval: " + " ".join(argv)}, items
    scored = {r["id"]: r for r in longfact.match_to_items(longfact.read_output(result), items)}
    for it in items:
        if it["id"] in scored:
            it.update(supported=scored[it["id"]]["supported"], claims=scored[it["id"]]["claims"])
    counts = [(it["supported"], it["claims"]) for it in items if "claims" in it]
    return {"task": task, **longfact.summarize_longfact(counts, cfg.longfact_k, len(items), cfg.n_resamples, cfg.seed),
            "veriscore_output": str(result)}, items


# ---------------------------------------------------------------------------------------------
# The whole run.


def run_eval(cfg: EvalConfig, out_dir: str | Path) -> dict:
    """Generate or import predictions, score every (dataset, mode), write run.json and the report.

    Returns:
        The report dict written to ``out_dir/report.json`` (see eval/report.py).
    """
    from mralign_plugin.eval.report import build_report, write_report

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    modes = _modes(cfg.thinking)
    if not cfg.datasets and not cfg.predictions:
        raise ValueError("nothing to evaluate: give --dataset and/or --predictions")
    name = cfg.name or (Path(cfg.model.rstrip("/")).name if cfg.model else "predictions")
    cfg.name = name
    (out / "config.json").write_text(json.dumps(asdict(cfg), indent=1, default=str) + "\n", encoding="utf-8")
    start = time.perf_counter()

    sources: dict[str, str] = dict(parse_dataset_spec(s) for s in cfg.datasets)
    imported: dict[str, str] = dict(parse_dataset_spec(s) for s in cfg.predictions)
    if any(n not in imported for n in sources) and not cfg.model:
        raise ValueError("--dataset without --predictions of the same name needs --model to generate")
    lazy = _LazyEngine(cfg, out)
    predictions: dict[tuple[str, str], list[dict]] = {}
    for ds in list(dict.fromkeys([*sources, *imported])):
        gold = None
        if ds in sources:
            split = cfg.split or EVAL_SPLITS.get(sources[ds])
            gold_rows = load_qa(sources[ds], split=split, limit=cfg.limit, name=ds)
            gold = {r["id"]: r for r in gold_rows}
        if ds in imported:
            for mode, rows in import_predictions(imported[ds], ds, gold, modes).items():
                path = out / "predictions" / f"{ds}.{mode}.jsonl"
                path.parent.mkdir(parents=True, exist_ok=True)
                write_jsonl(path, rows)
                predictions[(ds, mode)] = rows
            continue
        for mode in modes:
            path = out / "predictions" / f"{ds}.{mode}.jsonl"
            generate_predictions(gold_rows, path, mode, cfg, lazy)
            wanted = set(gold)
            predictions[(ds, mode)] = [p for p in read_jsonl(path) if p["id"] in wanted]

    datasets: dict[str, str] = {}
    run_modes = sorted({m for _, m in predictions}, key=MODES.index)
    rows = {m: {"method": method_label(name, m, run_modes), "mode": m, "results": {}} for m in run_modes}
    for (ds, mode), preds in predictions.items():
        task = task_of(preds)
        datasets[ds] = task
        summary, items = evaluate_dataset(ds, task, preds, mode, cfg, out)
        (out / "scored").mkdir(exist_ok=True)
        write_jsonl(out / "scored" / f"{ds}.{mode}.jsonl", items)
        rows[mode]["results"][ds] = summary

    run = {"format": RUN_FORMAT, "name": name, "model": cfg.model, "datasets": datasets,
           "rows": [rows[m] for m in run_modes], "seconds": round(time.perf_counter() - start, 2),
           "config": json.loads((out / "config.json").read_text())}
    (out / "run.json").write_text(json.dumps(run, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    report = build_report([out], baseline=cfg.baseline, longfact_k=cfg.longfact_k,
                          n_resamples=cfg.n_resamples, seed=cfg.seed)
    write_report(report, out)
    return report

"""MR-ALIGN's transition-aware reward as a TRL ``GRPOTrainer`` reward function (``reward_funcs=``).

TRL 1.16 calls each reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)``, one list entry per completion (the dataset's other columns
repeated per generation), and expects one float per completion. The reward itself is reward/scorer.py, the
same scorer OpenRLHF's reward file and server use.

    from mralign_plugin.adapters.trl.grpo import MRAlignReward
    trainer = GRPOTrainer(model, reward_funcs=MRAlignReward("recipes/reward.yaml"), train_dataset=prompts, ...)

    # a real online RL run on the CPU: a few GRPO steps of SmolLM2-135M-Instruct on the bundled corpus's questions
    mralign fit-transitions mralign_plugin/data/demo_annotated.jsonl -o runs/grpo/transitions.json
    echo "transitions: transitions.json" > runs/grpo/reward.yaml
    python -m mralign_plugin.adapters.trl.grpo --model "$(python -m mralign_plugin.smollm2)" \
        --reward-config runs/grpo/reward.yaml --output-dir runs/grpo/model --max-steps 3

The config (and its transitions file) is loaded when the reward is built, so a bad file stops the run at
start, naming it. After that the call never raises: a completion that cannot be scored gets 0.0, is counted
(``mralign/errors``) and logged, and the run goes on. The gold answer comes from the ``label_key`` column
(default ``gold``): a string, a list of aliases, or ``{"gold": ..., "steps": [...]}``.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path

from mralign_plugin.core.reward import ERROR_PARTS
from mralign_plugin.reward.scorer import RewardScorer, batch_logs, load_scorer


def completion_text(completion: object) -> str:
    """The text of a TRL completion: a string, or (conversational) the content of its assistant messages.

    Example:
        >>> completion_text([{"role": "assistant", "content": "<think>a</think>b"}])
        '<think>a</think>b'
    """
    if isinstance(completion, str):
        return completion
    if isinstance(completion, list) and all(isinstance(m, dict) for m in completion):
        return "".join(str(m.get("content") or "") for m in completion if m.get("role", "assistant") == "assistant")
    raise TypeError(f"completion: expected a string or a list of messages, got {type(completion).__name__}")


class MRAlignReward:
    """A TRL reward function scoring completions with MR-ALIGN's reward (loaded once, at construction).

    Args:
        config: the reward config (YAML / JSON, e.g. ``recipes/reward.yaml``); loading errors raise here.
        label_key: the dataset column with the gold answer (and optionally annotated steps).
    """

    def __init__(self, config: str | Path, label_key: str = "gold") -> None:
        try:
            self.scorer: RewardScorer = load_scorer(config)
        except Exception as e:
            raise ValueError(f"mralign reward: cannot load the reward config {config}: {e}") from e
        self.label_key = label_key
        self.__name__ = "mralign"  # TRL names the reward's log columns after the function

    def __call__(self, prompts: Sequence | None = None, completions: Sequence | None = None,
                 log_metric: Callable[[str, float], None] | None = None, **columns) -> list[float]:
        n = len(completions) if isinstance(completions, Sequence) else 0
        try:
            texts, failed = [], {}
            for i, completion in enumerate(completions):
                try:
                    texts.append(completion_text(completion))
                except TypeError as e:
                    texts.append("")
                    failed[i] = e
            labels = columns.get(self.label_key)
            parts = self.scorer.score_parts(texts, None, list(labels) if labels is not None else None)
            for i, e in failed.items():
                parts[i] = self.scorer.error_parts(e)
        except Exception as e:  # e.g. completions is not a sequence: never raise into the trainer
            parts = [self.scorer.error_parts(e)] * n
        if log_metric is not None:
            for name, value in batch_logs(parts or [ERROR_PARTS]).items():
                log_metric(name, value)
        return [p.reward for p in parts]


def train_grpo(model: str, reward_config: str | Path, rows: Sequence[dict], output_dir: str | Path, max_steps: int = 3,
               num_generations: int = 4, max_completion_length: int = 64, learning_rate: float = 1e-5,
               seed: int = 0) -> tuple:
    """A few TRL ``GRPOTrainer`` steps with MR-ALIGN's reward on the CPU (transformers generation).

    Args:
        model: an HF causal LM directory or id.
        reward_config: the reward config (loaded first: a bad file stops here, before the model loads).
        rows: ``{"question": str, "gold": [str, ...]}`` each; the question becomes a one-turn chat prompt.
        output_dir, max_steps, num_generations, max_completion_length, learning_rate, seed: GRPOConfig's.

    Returns:
        ``(trainer, log_history)``: the trainer after ``train()``, and its per-step logs (``rewards/mralign/mean``,
        ``mralign/errors``, ``loss``, ...).
    """
    reward = MRAlignReward(reward_config)
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import GRPOConfig, GRPOTrainer

    dataset = Dataset.from_list([{"prompt": [{"role": "user", "content": r["question"]}], "gold": list(r["gold"])}
                                 for r in rows])
    tokenizer = AutoTokenizer.from_pretrained(model)
    tokenizer.padding_side = "left"  # generation pads on the left
    config = GRPOConfig(output_dir=str(output_dir), per_device_train_batch_size=num_generations,
                        num_generations=num_generations, max_steps=max_steps,
                        max_completion_length=max_completion_length, learning_rate=learning_rate, logging_steps=1,
                        report_to="none", use_cpu=not torch.cuda.is_available(), bf16=False, save_strategy="no",
                        seed=seed)
    trainer = GRPOTrainer(AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32), reward_funcs=reward,
                          args=config, train_dataset=dataset, processing_class=tokenizer)
    trainer.train()
    return trainer, [entry for entry in trainer.state.log_history if "loss" in entry]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m mralign_plugin.adapters.trl.grpo",
                                description="A few GRPO steps (TRL) with MR-ALIGN's reward, on the CPU or a GPU.")
    p.add_argument("--model", required=True, help="HF causal LM (e.g. $(python -m mralign_plugin.smollm2))")
    p.add_argument("--reward-config", required=True, help="reward config (recipes/reward.yaml shape)")
    p.add_argument("--prompts", default=None,
                   help="jsonl with prompt (or question) and gold; default: the bundled corpus's questions")
    p.add_argument("--output-dir", default="runs/grpo/model")
    p.add_argument("--max-steps", type=int, default=3)
    p.add_argument("--num-generations", type=int, default=4)
    p.add_argument("--max-completion-length", type=int, default=64)
    p.add_argument("--learning-rate", type=float, default=1e-5)
    args = p.parse_args(argv)
    if args.prompts is None:
        from mralign_plugin.data import demo_corpus_path

        args.prompts = demo_corpus_path()
    records = [json.loads(line) for line in Path(args.prompts).read_text(encoding="utf-8").splitlines() if line]
    rows = [{"question": r.get("question", r.get("prompt")), "gold": r["gold"]} for r in records]
    _, logs = train_grpo(args.model, args.reward_config, rows, args.output_dir, args.max_steps, args.num_generations,
                         args.max_completion_length, args.learning_rate)
    for entry in logs:
        print(json.dumps({k: entry[k] for k in ("step", "loss", "rewards/mralign/mean", "mralign/transition",
                                                 "mralign/outcome", "mralign/errors") if k in entry}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

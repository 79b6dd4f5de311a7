"""MR-ALIGN's transition-aware reward as a TRL ``GRPOTrainer`` reward function (``reward_funcs=``).

TRL 1.16 calls each reward function as ``f(prompts=..., completions=..., completion_ids=..., **columns,
trainer_state=..., log_extra=..., log_metric=...)``, one list entry per completion (the dataset's other columns
repeated per generation), and expects one float per completion. The reward itself is reward/scorer.py, the
same scorer OpenRLHF's reward file and server use.

    from mralign_plugin.adapters.trl.grpo import MRAlignReward
    trainer = GRPOTrainer(model, reward_funcs=MRAlignReward("recipes/reward.yaml"), train_dataset=prompts, ...)

The config (and its transitions file) is loaded when the reward is built, so a bad file stops the run at
start, naming it. After that the call never raises: a completion that cannot be scored gets 0.0, is counted
(``mralign/errors``) and logged, and the run goes on. The gold answer comes from the ``label_key`` column
(default ``gold``): a string, a list of aliases, or ``{"gold": ..., "steps": [...]}``.
"""

from __future__ import annotations

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

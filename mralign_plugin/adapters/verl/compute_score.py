"""MR-ALIGN's transition-aware reward as verl's custom reward function (scalar: one reward per rollout).

    export MRALIGN_REWARD_CONFIG=$PWD/recipes/reward.yaml
    python -m verl.trainer.main_ppo ... \\
        reward.custom_reward_function.path="$(mralign reward-path --framework verl)" \\
        reward.custom_reward_function.name=compute_score \\
        +ray_kwargs.ray_init.runtime_env.env_vars.MRALIGN_REWARD_CONFIG=$MRALIGN_REWARD_CONFIG

verl 0.9.1 loads this file by path in each reward worker and calls ``compute_score(data_source=...,
solution_str=..., ground_truth=..., extra_info=...)`` once per rollout (``solution_str``: the decoded response,
special tokens skipped; ``ground_truth``: the row's ``reward_model.ground_truth``: a gold string, a list of
aliases, or ``{"gold": ..., "steps": [...]}``). It returns ``{"score": reward, ...the terms}``; verl puts the
score on the last response token and logs the other keys.

The config is loaded when verl loads the file, so a bad config stops the workers at start, naming the file.
After that the call never raises: a rollout that cannot be scored gets 0.0 with ``error`` 1, is counted and logged.
"""

from __future__ import annotations

from mralign_plugin.adapters.verl import config_path
from mralign_plugin.reward.scorer import RewardScorer, load_scorer


def _load() -> RewardScorer:
    path = config_path()
    try:
        return load_scorer(path)
    except Exception as e:
        raise RuntimeError(f"mralign reward: cannot load the reward config {path}: {e}") from e


SCORER = _load()


def compute_score(data_source: object = None, solution_str: str = "", ground_truth: object = None,
                  extra_info: dict | None = None, **kwargs) -> dict[str, float]:
    """One rollout's reward and its terms: ``score``, ``transition``, ``outcome``, ``hit_gap``, ``n_segments``,
    ``error`` (1.0 when it could not be scored; its score is then 0.0)."""
    parts = SCORER.score_parts([solution_str], None, [ground_truth])[0]
    return {"score": parts.reward, "transition": parts.transition, "outcome": parts.outcome,
            "hit_gap": parts.hit_gap, "n_segments": float(parts.n_segments),
            "error": 0.0 if parts.error is None else 1.0}

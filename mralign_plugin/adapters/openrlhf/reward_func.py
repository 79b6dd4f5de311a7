"""MR-ALIGN's transition-aware reward as an OpenRLHF reward function file (``--reward.remote_url FILE.py``).

OpenRLHF 0.11 loads this file in every vLLM rollout actor and calls ``reward_func`` once per sample.
The reward config comes from the environment variable ``MRALIGN_REWARD_CONFIG`` (a YAML / JSON path;
see ``recipes/reward.yaml``); it is loaded on the first call and cached for the process.

    export MRALIGN_REWARD_CONFIG=$PWD/recipes/reward.yaml
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url "$(mralign reward-path)" --data.label_key gold

``reward_func`` never raises: a sample that cannot be scored (or a config that cannot be loaded) gets
reward 0.0 and counts in ``mralign/errors``, and the cause is logged. ``mralign ppo`` checks the
config before launching, so a broken config fails there, not in the middle of a run.
"""

from __future__ import annotations

import logging
import os
import threading

import numpy as np
import torch

from mralign_plugin.adapters.openrlhf.reward_contract import reply, score_reply
from mralign_plugin.core.reward import ERROR_PARTS
from mralign_plugin.reward import CONFIG_ENV
from mralign_plugin.reward.scorer import RewardScorer, load_scorer

logger = logging.getLogger("mralign.reward")


_loaded: dict[str, RewardScorer | Exception] = {}  # config path -> scorer, or why it failed (logged once)
_loading = threading.Lock()  # OpenRLHF calls reward_func from several threads (asyncio.to_thread)


def _scorer(config_path: str) -> RewardScorer:
    """The scorer for ``config_path``, loaded on first use; raises the load error (logged once) after that."""
    with _loading:
        if config_path not in _loaded:
            try:
                if not config_path:
                    raise RuntimeError(f"{CONFIG_ENV} is not set; point it to a reward config (recipes/reward.yaml)")
                _loaded[config_path] = load_scorer(config_path)
            except Exception as e:
                logger.error("mralign reward: cannot load %s=%s (%s: %s); every reward will be 0.0",
                             CONFIG_ENV, config_path, type(e).__name__, e)
                _loaded[config_path] = e
    scorer = _loaded[config_path]
    if isinstance(scorer, Exception):
        raise scorer
    return scorer


def reward_func(queries: list[str], prompts: list[str], labels: list, **kwargs) -> dict:
    """Rewards of a batch of rollouts (OpenRLHF passes one at a time).

    Args:
        queries: decoded prompt + response, special tokens kept.
        prompts: the prompts as given to the engine.
        labels: the dataset's ``--data.label_key`` values: a gold string, a list of aliases, or a
            mapping with ``gold`` and optionally ``steps`` (states of the response's paragraphs).

    Returns:
        ``{"rewards": (B,) float tensor, "scores": (B,) float tensor, "extra_logs": {name: float}}``.
    """
    try:
        result = score_reply(_scorer(os.environ.get(CONFIG_ENV, "")), queries, prompts, labels)
    except Exception as e:  # no config, or it failed to load (logged once): never raise into OpenRLHF
        n = len(queries) if isinstance(queries, list | tuple) else 1
        result = reply([ERROR_PARTS._replace(error=f"{type(e).__name__}: {e}")] * n)
    return {
        "rewards": torch.from_numpy(np.array(result["rewards"], dtype=np.float32)),  # (B,)
        "scores": torch.from_numpy(np.array(result["scores"], dtype=np.float32)),  # (B,)
        "extra_logs": result["extra_logs"],
    }

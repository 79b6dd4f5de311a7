"""verl adapter: the scalar ``compute_score`` file (``compute_score.py``) and the dense reward manager
``mralign_dense`` (``dense.py``). Only verl's contract lives here; the reward is reward/scorer.py.

Both read the reward config from ``MRALIGN_REWARD_CONFIG`` (as OpenRLHF's reward file does) and load it when
verl loads them, at the start of a run: a config or transitions file that cannot be loaded stops the run there,
naming the file. verl is imported only by ``dense.py`` (``pip install "mralign_plugin[verl]"``).
"""

from __future__ import annotations

import os
from pathlib import Path

from mralign_plugin.reward import CONFIG_ENV


def config_path() -> str:
    """The reward config named by ``MRALIGN_REWARD_CONFIG``; RuntimeError when it is unset or missing."""
    path = os.environ.get(CONFIG_ENV, "")
    if not path:
        raise RuntimeError(f"{CONFIG_ENV} is not set: point it to a reward config (recipes/reward.yaml), and pass "
                           f"it to verl's Ray workers (+ray_kwargs.ray_init.runtime_env.env_vars.{CONFIG_ENV}=...)")
    if not Path(path).is_file():
        raise RuntimeError(f"{CONFIG_ENV}={path}: no such file")
    return path


def compute_score_path() -> str:
    """Absolute path of the file for verl's ``reward.custom_reward_function.path`` (``mralign reward-path``)."""
    return str(Path(__file__).with_name("compute_score.py").resolve())


def dense_manager_path() -> str:
    """Absolute path of the dense manager's file for ``reward.reward_manager.module.path`` (``--dense``)."""
    return str(Path(__file__).with_name("dense.py").resolve())

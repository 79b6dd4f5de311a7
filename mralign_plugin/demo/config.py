"""The main job's settings: embedded defaults, equal to ``recipes/demo-cpu.yaml`` (a test keeps them so).

Sections: ``demo`` (sizes, seed), ``generate`` / ``label`` / ``eval`` (the options of those verbs),
``trainer`` (the KTO trainer's dotted flags, identical for both arms). ``mralign demo --recipe FILE``
reads another file of the same shape; ``--questions`` and ``--seed`` override ``demo``.
"""

from __future__ import annotations

import copy
import math
from pathlib import Path

from mralign_plugin.recipe import RecipeError, load_recipe

DEFAULTS: dict = {
    "demo": {"questions": 300, "held_out": 150, "seed": 0},
    "generate": {"few_shot": "bundled", "two_phase": True, "prompt_template": "Question: {question}", "n": 1,
                 "temperature": 0.0, "max_new_tokens": 160, "answer_max_tokens": 32, "dtype": "bfloat16",
                 "batch_size": 32},
    "label": {"rule": "majority", "min_paragraphs": 1, "max_paragraphs": 100, "min_tokens": 14, "max_tokens": 161},
    "trainer": {
        "kto": {"beta": 0.1, "desirable_weight": 1.0, "undesirable_weight": "auto", "target_ratio": 1.503,
                "kl_mode": "fixed"},
        "ref": {"precompute": True},
        "data": {"max_len": 1024, "apply_chat_template": True},
        "train": {"micro_batch_size": 4, "batch_size": 8, "max_epochs": 2, "seed": 42},
        "adam": {"lr": 2.0e-5},
        "lr_scheduler": "constant",
        "lr_warmup_ratio": 0.0,
        "ds": {"zero_stage": 0, "param_dtype": "bf16", "attn_implementation": "sdpa"},
    },
    "eval": {"temperature": 0.0, "max_new_tokens": 160, "answer_max_tokens": 32, "dtype": "bfloat16",
             "batch_size": 32, "n_resamples": 1000, "trained_thinking_off": False},
}
# Keys of ``trainer`` that the demo resolves itself; the rest go to the trainer as flags.
DEMO_ONLY_TRAINER_KEYS = ("kto.target_ratio",)


def _check_keys(given: dict, known: dict, where: str, path: Path | str) -> None:
    for key, value in given.items():
        if key not in known:
            raise RecipeError(f"{path}: {where}{key}: unknown key; valid: {', '.join(sorted(known))}")
        if isinstance(known[key], dict):
            if not isinstance(value, dict):
                raise RecipeError(f"{path}: {where}{key}: expected a mapping")
            _check_keys(value, known[key], f"{where}{key}.", path)


def _merge(base: dict, top: dict) -> dict:
    out = copy.deepcopy(base)
    for key, value in top.items():
        out[key] = _merge(out[key], value) if isinstance(value, dict) and isinstance(out.get(key), dict) else value
    return out


def load_demo_config(recipe: str | Path | None = None, questions: int | None = None, seed: int | None = None) -> dict:
    """The defaults, updated by ``recipe`` (same shape; unknown keys are errors) and the CLI sizes."""
    config = copy.deepcopy(DEFAULTS)
    if recipe is not None:
        given = load_recipe(recipe)
        _check_keys(given, DEFAULTS, "", recipe)
        config = _merge(config, given)
    if questions is not None:
        if questions < 2:
            raise RecipeError("--questions must be at least 2")
        config["demo"]["questions"] = questions
        config["demo"]["held_out"] = max(1, questions // 2)
    if seed is not None:
        config["demo"]["seed"] = seed
    return config


def rejected_weight(n_positive: int, n_negative: int, target_ratio: float) -> float:
    """λ_r such that λ_c |D⁺| / (λ_r |D⁻|) = ``target_ratio`` with λ_c = 1 (KTO's class balance, §5.5).

    The paper's λ_r = 1.5 with 4,830 positives and 2,143 negatives is a ratio of 1.503; the demo keeps
    that ratio for its own counts (method/MRALIGN.md §6, "Why λ_r = 1.5").

    Example:
        >>> round(rejected_weight(4830, 2143, 1.503), 2)
        1.5
    """
    if n_positive < 1 or n_negative < 1:
        raise ValueError(f"KTO needs both classes: {n_positive} positive, {n_negative} negative trajectories")
    weight = n_positive / (target_ratio * n_negative)
    if not math.isfinite(weight) or weight <= 0:
        raise ValueError(f"target_ratio must be positive, got {target_ratio}")
    return weight

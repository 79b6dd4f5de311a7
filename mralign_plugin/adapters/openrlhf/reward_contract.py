"""OpenRLHF's remote-reward reply, shared by the reward function file and the HTTP server.

OpenRLHF 0.11's ``--reward.remote_url`` (a Python file's ``reward_func`` or a ``/get_reward`` server)
expects ``{"rewards": [float], "scores": [float], "extra_logs": {name: float}}`` per call; the
scoring itself is framework-neutral (reward/scorer.py).
"""

from __future__ import annotations

from collections.abc import Sequence

from mralign_plugin.core.reward import RewardParts
from mralign_plugin.reward.scorer import RewardScorer, batch_logs


def reply(parts: Sequence[RewardParts]) -> dict:
    """``{"rewards", "scores", "extra_logs"}``: extra_logs are batch means, ``mralign/errors`` a count."""
    return {"rewards": [p.reward for p in parts], "scores": [p.score for p in parts], "extra_logs": batch_logs(parts)}


def score_reply(scorer: RewardScorer, queries: Sequence, prompts: Sequence | None = None,
                labels: Sequence | None = None) -> dict:
    """OpenRLHF's reply for one call: ``rewards`` and ``scores`` (lists of floats) and ``extra_logs``."""
    try:
        parts = scorer.score_parts(queries, prompts, labels)
    except Exception as e:  # e.g. queries is not a sequence
        parts = [scorer.error_parts(e)] * (len(queries) if isinstance(queries, Sequence) else 1)
    return reply(parts)

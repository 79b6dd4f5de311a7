"""MR-ALIGN's dense segment reward as a verl reward manager (registered as ``mralign_dense`` by ``plugin.py``).

Each thinking segment's transition score goes on that segment's last token, the outcome / hit-gap / format
terms (and the closing transition) on the final token; the tokens sum to the scalar reward of
``compute_score.py`` (core/reward.py ``dense_terms``). verl 0.9.1 config:

    export MRALIGN_REWARD_CONFIG=$PWD/recipes/reward.yaml
    python -m verl.trainer.main_ppo ... \\
        reward.reward_manager.source=importlib \\
        reward.reward_manager.name=MRAlignDenseRewardManager \\
        reward.reward_manager.module.path="$(mralign reward-path --framework verl --dense)" \\
        +ray_kwargs.ray_init.runtime_env.env_vars.MRALIGN_REWARD_CONFIG=$MRALIGN_REWARD_CONFIG

or ``reward.reward_manager.name=mralign_dense`` with the default ``source=register``: installing the package
registers it through verl's ``verl.plugins`` entry point group, which ``import verl`` loads (``plugin.py``).

How verl 0.9.1 uses a manager (read from its source): a reward-loop worker calls ``run_single`` on each rollout
and collects ``reward_score``; ``RewardLoopManager.compute_rm_score`` then builds the ``rm_scores`` tensor with
the manager class's ``assemble_rm_scores`` (here: the dense placement). When the reward streams with the
rollout instead (verl's agent loop, the default without a reward model), verl puts ``reward_score`` on the last
token itself: ``run_single`` returns a :class:`DenseReward`, a float equal to the scalar reward that carries its
token placement, so that path receives the same total.

The manager decodes responses without the tokenizer's space clean-up (so that each character has its token);
for a tokenizer that cleans up (GPT-2, Llama 3) its text can differ from verl's default decode by a space
before punctuation. The config is loaded when verl builds the manager, so a bad config stops the workers at start, naming the file;
after that a rollout that cannot be scored gets 0.0 (``mralign/error`` 1), is counted and logged.
"""

from __future__ import annotations

import logging

import numpy as np
import torch
from verl import DataProto
from verl.experimental.reward_loop.reward_manager.base import RewardManagerBase

from mralign_plugin.adapters.verl import config_path
from mralign_plugin.reward.scorer import load_scorer

logger = logging.getLogger("mralign.reward")


class DenseReward(float):
    """The scalar reward of one rollout, carrying ``token_rewards``: (response token index, value) pairs summing to it."""

    token_rewards: tuple[tuple[int, float], ...]

    def __new__(cls, total: float, token_rewards: tuple[tuple[int, float], ...]) -> DenseReward:
        value = super().__new__(cls, total)
        value.token_rewards = token_rewards
        return value

    def __reduce__(self):  # Ray pickles it between the reward worker and the driver
        return DenseReward, (float(self), self.token_rewards)


def piece_lengths(tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Per token id (V,): the characters it decodes to alone (special tokens 0), and whether that decode holds a
    U+FFFD (a byte fragment of a multi-byte character, whose true length shows only decoded with its neighbours)."""
    pieces = tokenizer.batch_decode([[i] for i in range(len(tokenizer))], skip_special_tokens=True,
                                    clean_up_tokenization_spaces=False)
    lengths = np.fromiter((len(p) for p in pieces), dtype=np.int64, count=len(pieces))
    return lengths, np.fromiter(("\ufffd" in p for p in pieces), dtype=bool, count=len(pieces))


class MRAlignDenseRewardManager(RewardManagerBase):
    """verl reward manager: MR-ALIGN's reward, dense over the response tokens (see the module docstring).

    Args: as verl's ``NaiveRewardManager`` (``compute_score`` is not used: the reward is MR-ALIGN's).
    """

    def __init__(self, config, tokenizer, compute_score=None, reward_router_address=None,
                 reward_model_tokenizer=None) -> None:
        super().__init__(config, tokenizer, compute_score)
        path = config_path()
        try:
            self.scorer = load_scorer(path)
            if self.scorer.implicit is not None:
                raise ValueError("the dense reward needs mode: transition")
        except Exception as e:
            raise RuntimeError(f"mralign reward: cannot load the reward config {path}: {e}") from e
        self.piece_lengths, self.fragments = piece_lengths(tokenizer)  # (V,), (V,)
        self.n_approximate = 0  # rollouts whose characters were mapped onto tokens by re-encoding or by position

    def token_positions(self, ids: np.ndarray, text: str, chars: list[int]) -> list[int]:
        """Response token index holding each character index of ``text`` (the decode of ``ids``).

        The tokens' lone decodes, concatenated, give ``text`` (byte-level BPE), except across a run of byte-fragment
        tokens: such a run holds whole characters (a token with a partial byte is a fragment itself), so it is
        decoded as one and its characters go to its last token. When the lengths still do not add up, the text is
        re-encoded with offsets, and as a last resort positions scale with length.
        """
        n = len(ids)
        lengths = self.piece_lengths[ids]  # (n,) a copy (fancy indexing)
        fragment = self.fragments[ids]  # (n,) bool
        if fragment.any():
            edges = np.diff(np.concatenate(([0], fragment.view(np.int8), [0])))  # (n + 1,)
            for a, b in zip(np.flatnonzero(edges == 1), np.flatnonzero(edges == -1), strict=True):  # runs [a, b)
                joint = self.tokenizer.decode(ids[a:b], skip_special_tokens=True, clean_up_tokenization_spaces=False)
                lengths[a:b] = 0
                lengths[b - 1] = len(joint)  # the run's characters all on its last token: the ends stay sorted
        ends = np.cumsum(lengths)  # (n,) end character of each token
        if n == 0 or ends[-1] != len(text):
            self.n_approximate += 1
            offsets = self.tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)["offset_mapping"]
            if len(offsets) == n:
                ends = np.asarray([end for _, end in offsets], dtype=np.int64)  # (n,)
            else:
                scale = n / max(len(text), 1)
                return [min(int(c * scale), max(n - 1, 0)) for c in chars]
        return np.minimum(np.searchsorted(ends, chars, side="right"), max(n - 1, 0)).tolist()

    async def run_single(self, data: DataProto) -> dict:
        item = data[-1:][0]  # as NaiveRewardManager: one rollout (the last sequence of a multi-turn sample)
        response_ids = item.batch["responses"]
        valid = int(item.batch["attention_mask"][-response_ids.shape[-1]:].sum())
        ground_truth = (item.non_tensor_batch.get("reward_model") or {}).get("ground_truth")
        # Off the event loop, as NaiveRewardManager decodes and scores (verl runs many rollouts concurrently).
        parts, token_rewards = await self.loop.run_in_executor(
            None, self._score, response_ids[:valid], ground_truth)
        info = {"mralign/transition": parts.transition, "mralign/outcome": parts.outcome,
                "mralign/hit_gap": parts.hit_gap, "mralign/n_segments": float(parts.n_segments),
                "mralign/error": 0.0 if parts.error is None else 1.0}
        return {"reward_score": DenseReward(parts.reward, token_rewards), "reward_extra_info": info}

    def _score(self, response_ids: torch.Tensor, ground_truth: object) -> tuple:
        """One rollout's reward parts and its (token index, value) pairs."""
        # Without clean-up (" ." -> "."), the decode is the concatenation of the tokens' own decodes, so every
        # character maps onto its token; tokenizers of current reasoning models (Qwen3, SmolLM2) never clean up.
        text = self.tokenizer.decode(response_ids, skip_special_tokens=True, clean_up_tokenization_spaces=False)
        parts, pairs = self.scorer.score_dense([text], [ground_truth])[0]
        ids = response_ids.numpy()  # (n,)
        positions = self.token_positions(ids, text, [c for c, _ in pairs[:-1]])
        positions.append(max(len(ids) - 1, 0))  # the final pair on the last token (EOS included), as verl's scalar
        return parts, tuple(zip(positions, (v for _, v in pairs), strict=True))

    @classmethod
    def assemble_rm_scores(cls, data: DataProto, scores: list[float]) -> torch.Tensor:
        """(B, T_response) rewards: each rollout's token rewards on their tokens (a plain float on its last token)."""
        prompt_length = data.batch["prompts"].size(1)
        valid = data.batch["attention_mask"][:, prompt_length:].sum(dim=1).tolist()  # B ints
        rows, cols, values = [], [], []
        for i, score in enumerate(scores):
            last = max(int(valid[i]) - 1, 0)
            for pos, value in getattr(score, "token_rewards", None) or ((last, float(score)),):
                rows.append(i)
                cols.append(min(pos, last))
                values.append(value)
        rm_scores = torch.zeros_like(data.batch["responses"], dtype=torch.float32)  # (B, T)
        rm_scores.index_put_((torch.tensor(rows), torch.tensor(cols)), torch.tensor(values, dtype=torch.float32),
                             accumulate=True)
        return rm_scores

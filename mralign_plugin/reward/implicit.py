"""Implicit process reward (``mode: implicit``): Eq. 9 of an MR-ALIGN-trained policy against its reference.

    r_impl = β Σ_k ω_k (log π(tok_k | ·) − log π_ref(tok_k | ·))   over the response tokens k

with ω_k = w_t on the tokens of thinking segment t and 1 elsewhere (tags, answer), the per-token
weights of Eq. 9 (core/weights.py). A rollout has no desirable / undesirable label yet, so w_t uses
the positive class: w_t = clip(Pr(y_t | y_{t−1}, P⁺) / Pr(y_t | y_{t−1}, P), 1/e, e) = W⁺ of Eq. 10,
i.e. the reward asks "how much more likely has training made this trace, counting most the
transitions typical of good traces". Interpretation: our choice, the paper defines no reward model.

Both models are loaded once (HF checkpoints; GPU-oriented, works on CPU) and scored in batches. The
response is re-tokenised from its text, after the prompt part of the query, as the trainer tokenises.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

import numpy as np
import torch

from mralign_plugin.core.formats import TransitionModel
from mralign_plugin.core.reward import ImplicitConfig
from mralign_plugin.core.weights import step_weights, token_weights

_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


class ImplicitScorer:
    """Policy + reference loaded once; :meth:`process_rewards` scores rollouts in batches.

    Args:
        config: the ``implicit`` section of the reward config.
        model: transition model (P⁺ and P give W⁺ for the segment weights).
    """

    def __init__(self, config: ImplicitConfig, model: TransitionModel) -> None:
        from transformers import AutoModelForCausalLM, AutoTokenizer

        self.config = config
        self.model = model
        device = config.device if config.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
        self.device = torch.device(device)
        dtype = _DTYPES.get(config.dtype) or (torch.bfloat16 if self.device.type == "cuda" else torch.float32)
        self.tokenizer = AutoTokenizer.from_pretrained(config.policy)
        if not self.tokenizer.is_fast:
            raise ValueError(f"implicit.policy: {config.policy} has no fast tokenizer (needed for offsets)")
        self.pad_id = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        self.policy = AutoModelForCausalLM.from_pretrained(config.policy, dtype=dtype).to(self.device).eval()
        self.ref = AutoModelForCausalLM.from_pretrained(config.ref, dtype=dtype).to(self.device).eval()
        self._busy = threading.Lock()  # one batch at a time on the device (reward_func runs in several threads)

    def process_rewards(
        self, prompts: Sequence[str], responses: Sequence[str], steps: Sequence[Sequence[dict]]
    ) -> list[float]:
        """r_impl of each rollout.

        Args:
            prompts: the query text before each response (chat-template tokens kept).
            responses: the responses, special tokens removed.
            steps: each response's steps, ``[{"paragraphs": [i, ...], "states": [names]}, ...]``.

        Returns:
            One float per rollout.
        """
        taxonomy = self.model.taxonomy
        clip_min, clip_max = self.model.clip
        rows = []
        for prompt, response, response_steps in zip(prompts, responses, steps, strict=True):
            states = [[taxonomy.index(name) for name in step["states"]] for step in response_steps]
            seg_weights = step_weights(states, self.model.trans_pos, self.model.trans_all, clip_min, clip_max)  # W⁺
            response_ids, omega = token_weights(response, response_steps, seg_weights, self.tokenizer)  # (n,)
            prompt_ids = self.tokenizer(prompt, add_special_tokens=False)["input_ids"]
            rows.append((prompt_ids, response_ids, omega))
        rewards: list[float] = []
        with self._busy:
            for i in range(0, len(rows), self.config.batch_size):
                rewards += self._score_batch(rows[i : i + self.config.batch_size])
        return rewards

    @torch.inference_mode()
    def _score_batch(self, rows: list[tuple[list[int], list[int], np.ndarray]]) -> list[float]:
        B = len(rows)
        T = max(len(p) + len(r) for p, r, _ in rows)
        sequences = torch.full((B, T), self.pad_id, dtype=torch.long)  # (B, T), right-padded
        attention_mask = torch.zeros((B, T), dtype=torch.long)  # (B, T)
        weights = torch.zeros((B, T - 1), dtype=torch.float32)  # (B, T-1): ω at the position predicting each token
        for b, (prompt_ids, response_ids, omega) in enumerate(rows):
            n_p, n_r = len(prompt_ids), len(response_ids)
            sequences[b, : n_p + n_r] = torch.tensor(prompt_ids + response_ids, dtype=torch.long)
            attention_mask[b, : n_p + n_r] = 1
            first = max(n_p, 1)  # token 0 has no prediction
            weights[b, first - 1 : n_p + n_r - 1] = torch.from_numpy(omega[first - n_p :]).float()
        sequences, attention_mask = sequences.to(self.device), attention_mask.to(self.device)
        policy_logps = self._logps(self.policy, sequences, attention_mask)  # (B, T-1)
        ref_logps = self._logps(self.ref, sequences, attention_mask)  # (B, T-1)
        on = weights > 0  # response tokens (ω > 0 everywhere on them: W⁺ ≥ 1/e)
        diff = torch.where(on, policy_logps - ref_logps, torch.zeros_like(policy_logps))  # (B, T-1)
        rewards = self.config.beta * (weights * diff).sum(-1)  # (B,), Eq. 9
        return rewards.tolist()

    def _logps(self, model, sequences: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """log p(token t+1 | tokens ≤ t): (B, T) ids → (B, T-1) float32 on the CPU."""
        logits = model(input_ids=sequences, attention_mask=attention_mask).logits[:, :-1].float()  # (B, T-1, V)
        logps = torch.log_softmax(logits, dim=-1)  # (B, T-1, V)
        return logps.gather(-1, sequences[:, 1:, None]).squeeze(-1).cpu()  # (B, T-1)

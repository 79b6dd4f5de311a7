"""The OpenRLHF KTO dataset and micro-batch collate, on the shared row encoding of core/kto_rows.py.

* Rows are encoded by :func:`mralign_plugin.core.kto_rows.encode_row` (the same tokens and token weights ω
  the TRL adapter trains on). Actor returns log-probs shifted by one (position t = log p(token t+1)), so
  response token j of the padded row lands at column j − 1 of ``response_mask`` and ``token_weights``.
* Rows longer than ``max_len`` are dropped or have the middle of their thinking cut (counted per status).
* z0's mismatched pairs (x_i, y_{i+1 mod B}) are built inside the micro-batch (``kl_mode="batch"``), which
  needs B ≥ 2: at B = 1 the "mismatched" pair is the sample itself and z0 degenerates into its own log-ratio.
  ``kl_mode="fixed"`` pairs each row once with another row's response (a seeded cycle over the data), so
  its reference log-probs can be precomputed; "accumulated" pairs are made by the trainer; "none": z0 = 0.

Shapes: B rows, L padded sequence length; the shifted per-token tensors are (B, L − 1).
"""

from __future__ import annotations

import random
from collections.abc import Sequence

import numpy as np
import torch

from mralign_plugin.core.kto_rows import OVERLENGTH, encode_row

KL_MODES = ("batch", "accumulated", "fixed", "none")
BALANCE_BAND = (1.0, 1.5)  # λ_c|D⁺| / (λ_r|D⁻|), paper §4.3 (the KTO paper says [1, 4/3])


def check_micro_batch(kl_mode: str, micro_batch_size: int) -> None:
    """Refuse settings under which z0 cannot be estimated from mismatched pairs."""
    if kl_mode not in KL_MODES:
        raise ValueError(f"kto.kl_mode must be one of {KL_MODES}; got {kl_mode!r}")
    if kl_mode == "batch" and micro_batch_size < 2:
        raise ValueError(
            "kto.kl_mode=batch builds z0's mismatched pairs (prompt_i, response_{i+1}) inside the micro-batch, "
            "so train.micro_batch_size must be >= 2: at 1 the pair is the sample itself and z0 silently becomes "
            "its own log-ratio. Raise train.micro_batch_size, or set kto.kl_mode=accumulated (pairs with the "
            "previous micro-batch's responses), kto.kl_mode=fixed (each row paired once with another row's "
            "response) or kto.kl_mode=none (z0 = 0, APO-zero style)."
        )


def class_balance_message(n_pos: int, n_neg: int, lambda_c: float, lambda_r: float) -> str | None:
    """A warning when λ_c·|D⁺| / (λ_r·|D⁻|) leaves [1, 1.5], with the λ_r that centres it; else None."""
    if n_pos == 0 or n_neg == 0:
        return f"the data has {n_pos} desirable and {n_neg} undesirable rows: KTO needs both classes"
    ratio = lambda_c * n_pos / (lambda_r * n_neg)
    lo, hi = BALANCE_BAND
    if lo <= round(ratio, 2) <= hi:  # the paper's 4830 / (1.5 * 2143) = 1.503 counts as 1.50
        return None
    centred = lambda_c * n_pos / (n_neg * (lo + hi) / 2)
    return (
        f"lambda_c*|D+| / (lambda_r*|D-|) = {lambda_c}*{n_pos} / ({lambda_r}*{n_neg}) = {ratio:.3f} is outside "
        f"[{lo}, {hi}]; kto.undesirable_weight={centred:.3f} would centre it at {(lo + hi) / 2}"
    )


class KTODataset(torch.utils.data.Dataset):
    """Tokenised KTO rows; ``collate_fn`` builds the micro-batch (and z0's mismatched pairs).

    Attributes:
        counts: how many rows were "ok", "truncated", "dropped" (over ``max_len``) or "unweighted".
        n_pos, n_neg: desirable / undesirable rows kept.
    """

    def __init__(
        self,
        rows: Sequence[dict],
        tokenizer,
        max_len: int,
        use_weights: bool = True,
        overlength: str = "drop",
        apply_chat_template: bool = True,
        kl_mode: str = "batch",
        seed: int = 42,
    ) -> None:
        if overlength not in OVERLENGTH:
            raise ValueError(f"data.overlength must be one of {OVERLENGTH}; got {overlength!r}")
        if kl_mode not in KL_MODES:
            raise ValueError(f"kto.kl_mode must be one of {KL_MODES}; got {kl_mode!r}")
        self.pad_token_id = tokenizer.pad_token_id
        self.max_len = max_len
        self.kl_mode = kl_mode
        self.counts = {"ok": 0, "truncated": 0, "dropped": 0, "unweighted": 0}
        self.items = []
        for row in rows:
            item, status = encode_row(row, tokenizer, max_len, use_weights, overlength, apply_chat_template)
            self.counts[status] += 1
            if item is not None:
                item["index"] = len(self.items)
                self.items.append(item)
        self.n_pos = sum(item["desirable"] for item in self.items)
        self.n_neg = len(self.items) - self.n_pos
        # kl_mode="fixed": one cycle through a seeded shuffle, so no row is paired with itself (n >= 2).
        order = list(range(len(self.items)))
        random.Random(seed).shuffle(order)
        self.partner = {a: b for a, b in zip(order, order[1:] + order[:1], strict=True)}

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, index: int) -> dict:
        return self.items[index]

    def collate_fn(self, items: list[dict]) -> dict:
        """Right-padded micro-batch and, for kl_mode batch / fixed, z0's mismatched rows (batch refuses B = 1)."""
        prompts = [item["prompt_ids"] for item in items]
        responses = [item["response_ids"] for item in items]
        batch = pad_rows(prompts, responses, [item["weights"] for item in items], self.pad_token_id)
        batch["desirable"] = torch.tensor([item["desirable"] for item in items], dtype=torch.bool)  # (B,)
        batch["prompts"], batch["responses"] = prompts, responses
        batch["index"] = [item["index"] for item in items]
        if self.kl_mode == "batch":
            check_micro_batch("batch", len(items))
            shifted = responses[1:] + responses[:1]  # y_{i+1 mod B}
            batch["kl"] = mismatched_rows(prompts, shifted, self.pad_token_id, self.max_len)
        elif self.kl_mode == "fixed":
            partners = [self.items[self.partner[item["index"]]]["response_ids"] for item in items]
            batch["kl"] = mismatched_rows(prompts, partners, self.pad_token_id, self.max_len)
        return batch


def pad_rows(
    prompts: Sequence[list[int]], responses: Sequence[list[int]], weights: Sequence[np.ndarray] | None, pad_id: int
) -> dict[str, torch.Tensor]:
    """Concatenate prompt + response per row and right-pad.

    Returns:
        input_ids (B, L) long, attention_mask (B, L) long, response_mask (B, L − 1) bool and, when
        ``weights`` is given, token_weights (B, L − 1) float32 (ω on response tokens, 0 elsewhere).
        Column t of the shifted tensors refers to token t + 1.
    """
    lengths = [len(p) + len(r) for p, r in zip(prompts, responses, strict=True)]
    batch, width = len(prompts), max(lengths)
    input_ids = torch.full((batch, width), pad_id, dtype=torch.long)  # (B, L)
    attention_mask = torch.zeros(batch, width, dtype=torch.long)  # (B, L)
    response_mask = torch.zeros(batch, width - 1, dtype=torch.bool)  # (B, L-1)
    token_weights = torch.zeros(batch, width - 1)  # (B, L-1)
    for i, (prompt, response) in enumerate(zip(prompts, responses, strict=True)):
        n_p, n = len(prompt), lengths[i]
        input_ids[i, :n] = torch.tensor(prompt + response)
        attention_mask[i, :n] = 1
        response_mask[i, n_p - 1 : n - 1] = True  # tokens n_p..n-1 sit at shifted columns n_p-1..n-2
        if weights is not None:
            token_weights[i, n_p - 1 : n - 1] = torch.as_tensor(weights[i], dtype=torch.float32)
    out = {"input_ids": input_ids, "attention_mask": attention_mask, "response_mask": response_mask}
    if weights is not None:
        out["token_weights"] = token_weights
    return out


def mismatched_rows(
    prompts: Sequence[list[int]], responses: Sequence[list[int]], pad_id: int, max_len: int
) -> dict[str, torch.Tensor]:
    """Rows (prompt_i, responses[i]) for z0, the response cut at ``max_len`` (they only estimate a mean KL)."""
    cut = [r[: max(1, max_len - len(p))] for p, r in zip(prompts, responses, strict=True)]
    return pad_rows(prompts, cut, None, pad_id)

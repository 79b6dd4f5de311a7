"""Unpaired KTO rows → token ids, response masks and MR-ALIGN token weights; the micro-batch collate.

Rows come from ``mralign weigh`` (``prompt``, ``response``, ``label``, ``steps``, ``step_weights``) or any
unpaired KTO jsonl (``prompt``, ``completion``, ``label``; plain KTO, weight 1 everywhere). ``prompt`` is a
string or a list of chat messages.

* The chat template is applied to the prompt only (generation prompt included); the response text is
  tokenised alone and appended verbatim, so no template can rewrite its ``<think>`` block. EOS is forced last.
* Token weights ω (Eq. 9) come from the core's character weights through the tokenizer's offset mapping.
  Actor returns log-probs shifted by one (position t = log p(token t+1)), so response token j of the
  padded row lands at column j − 1 of ``response_mask`` and ``token_weights``.
* Rows longer than ``max_len`` are never cut silently: dropped (counted), or with
  ``overlength="truncate_thinking"`` the middle of the thinking is removed (counted); the answer is kept whole.
* z0's mismatched pairs (x_i, y_{i+1 mod B}) are built inside the micro-batch (``kl_mode="batch"``), which
  needs B ≥ 2: at B = 1 the "mismatched" pair is the sample itself and z0 degenerates into its own log-ratio.
  ``kl_mode="fixed"`` pairs each row once with another row's response (a seeded cycle over the data), so
  its reference log-probs can be precomputed; "accumulated" pairs are made by the trainer; "none": z0 = 0.

Shapes: B rows, L padded sequence length; the shifted per-token tensors are (B, L − 1).
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from mralign_plugin.core.formats import FormatError, iter_jsonl
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.weights import char_weights, token_weights_from_offsets

KL_MODES = ("batch", "accumulated", "fixed", "none")
OVERLENGTH = ("drop", "truncate_thinking")
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


def read_rows(path: str | Path, max_samples: int | None = None) -> list[dict]:
    """Read a jsonl file of KTO rows (bad lines raise :class:`FormatError` naming the line)."""
    rows = []
    for lineno, record in iter_jsonl(path):
        if isinstance(record, FormatError):
            raise record
        record["_line"] = f"{path}:{lineno}"
        rows.append(record)
        if max_samples is not None and len(rows) >= max_samples:
            break
    return rows


def encode_prompt(prompt: str | list[dict], tokenizer, apply_chat_template: bool) -> list[int]:
    """Prompt token ids; a message list always goes through the chat template (with generation prompt)."""
    if isinstance(prompt, list) or apply_chat_template:
        messages = prompt if isinstance(prompt, list) else [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        return list(tokenizer(text, add_special_tokens=False)["input_ids"])
    return list(tokenizer(prompt, add_special_tokens=True)["input_ids"])


def _thinking_token_range(response: str, offsets: np.ndarray) -> tuple[int, int]:
    """[a, b) token indices whose first character lies inside the thinking blocks (tags excluded)."""
    spans = parse_response(response).think_spans
    if not spans:
        return 0, 0
    start, end = spans[0][0], spans[-1][1]
    inside = np.flatnonzero((offsets[:, 0] >= start) & (offsets[:, 0] < end) & (offsets[:, 1] > offsets[:, 0]))
    return (int(inside[0]), int(inside[-1]) + 1) if len(inside) else (0, 0)


def encode_row(
    row: dict, tokenizer, max_len: int, use_weights: bool, overlength: str = "drop", apply_chat_template: bool = True
) -> tuple[dict | None, str]:
    """Tokenise one row.

    Returns:
        ``(item, status)``: item = {prompt_ids, response_ids, weights (len(response_ids),), desirable}, or
        None when dropped; status is "ok", "truncated", "dropped" or "unweighted" (weights requested but the
        row has no ``step_weights``: trained with weight 1).
    """
    where = row.get("_line", "row")
    response = row.get("response", row.get("completion"))
    if not isinstance(response, str) or not response:
        raise FormatError(f"{where}: needs a non-empty 'response' (or 'completion') string")
    label = row.get("label")
    if label not in (True, False, 0, 1):
        raise FormatError(f"{where}: 'label' must be true (desirable) or false (undesirable); got {label!r}")
    if "prompt" not in row:
        raise FormatError(f"{where}: missing 'prompt'")

    prompt_ids = encode_prompt(row["prompt"], tokenizer, apply_chat_template)
    encoding = tokenizer(response, add_special_tokens=False, return_offsets_mapping=True)
    response_ids = list(encoding["input_ids"])
    offsets = np.asarray(encoding["offset_mapping"], dtype=np.int64).reshape(-1, 2)  # (n, 2)

    status = "ok"
    weights = np.ones(len(response_ids))  # (n,)
    if use_weights:
        if "step_weights" in row:
            paragraphs = parse_response(response).paragraphs
            try:
                char_w = char_weights(response, paragraphs, [s["paragraphs"] for s in row["steps"]],
                                      row["step_weights"])  # (L_chars,)
            except (ValueError, KeyError, TypeError) as e:
                raise FormatError(f"{where}: steps / step_weights: {e}") from None
            weights = token_weights_from_offsets(char_w, offsets)  # (n,)
        else:
            status = "unweighted"

    if not response_ids or response_ids[-1] != tokenizer.eos_token_id:
        response_ids.append(tokenizer.eos_token_id)
        weights = np.append(weights, 1.0)
        offsets = np.vstack([offsets, [[len(response), len(response)]]])

    excess = len(prompt_ids) + len(response_ids) - max_len
    if excess > 0:
        a, b = _thinking_token_range(response, offsets)
        if overlength != "truncate_thinking" or b - a <= excess:  # never remove the whole thinking
            return None, "dropped"
        keep = (b - a) - excess
        cut = slice(a + keep // 2, b - (keep - keep // 2))  # the middle of the thinking
        response_ids = response_ids[: cut.start] + response_ids[cut.stop :]
        weights = np.concatenate([weights[: cut.start], weights[cut.stop :]])
        status = "truncated"

    item = {
        "prompt_ids": prompt_ids,
        "response_ids": response_ids,
        "weights": weights.astype(np.float32),
        "desirable": bool(label),
    }
    return item, status


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

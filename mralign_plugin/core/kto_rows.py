"""Unpaired KTO rows → prompt ids, response ids and MR-ALIGN token weights ω (Eq. 9), framework-neutral.

Every KTO adapter (OpenRLHF's collate in adapters/openrlhf/data.py, TRL's dataset in adapters/trl/kto.py)
encodes rows here, so both train on the same tokens and the same weights.

Rows come from ``mralign weigh`` (``prompt``, ``response``, ``label``, ``steps``, ``step_weights``) or any
unpaired KTO jsonl (``prompt``, ``completion``, ``label``; plain KTO, weight 1 everywhere). ``prompt`` is a
string or a list of chat messages.

* The chat template is applied to the prompt only (generation prompt included); the response text is
  tokenised alone and appended verbatim, so no template can rewrite its ``<think>`` block. EOS is forced last.
* Token weights ω come from the core's character weights through the tokenizer's offset mapping; they are
  aligned with the response ids (n,), not yet shifted: a framework's collate places them.
* Rows longer than ``max_len`` are never cut silently: dropped, or with ``overlength="truncate_thinking"``
  the middle of the thinking is removed; the answer is kept whole.

The tokenizer is any Hugging Face fast tokenizer (duck-typed: no transformers import here).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from mralign_plugin.core.formats import FormatError, iter_jsonl
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.weights import char_weights, token_weights_from_offsets

OVERLENGTH = ("drop", "truncate_thinking")


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

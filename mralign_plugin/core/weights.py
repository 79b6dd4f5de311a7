"""Segment weights w_t (Eq. 10) and the per-token weight vector ω of Eq. 9 (method/MRALIGN.md §5.4–5.5, §9.1–9.4).

Notation: K states (0 = ``<start>``); P = ``trans_all`` the pooled (K, K) transition matrix;
P^± = ``trans_class``, P⁺ for a desirable sample and P⁻ for an undesirable one (§9.2, the caller
chooses); y_t ⊆ C the state set of annotated step t; w_t = ``seg_weights[t]``; ω the per-token
weights, (n,) for the n response tokens; L = ``len(response)`` in characters (``str`` indices,
not bytes).
"""

from __future__ import annotations

import math
import re
from collections.abc import Collection, Sequence
from typing import TYPE_CHECKING

import numpy as np

from mralign_plugin.core.segment import Span, parse_response
from mralign_plugin.core.transitions import set_transition_prob

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

_WHITESPACE = re.compile(r"\s*")


def step_weights(
    step_states: Sequence[Collection[int]],
    trans_class: np.ndarray,
    trans_all: np.ndarray,
    clip_min: float = 1 / math.e,
    clip_max: float = math.e,
    start: int = 0,
) -> list[float]:
    """w_t = clip(Pr(y_t | y_{t-1}, P^±) / Pr(y_t | y_{t-1}, P), m, M), Eq. 10, with Pr from Eq. 7.

    Interpretation (§9.3, §9.4): y_0 = {``start``}; a step with no states gets w_t = 1 and is
    skipped in the chain, so the previous labelled step links to the next labelled one. Where
    Pr(·|P) = 0 (a cell masked or never smoothed), 0/0 gives 1 (no evidence either way) and a
    positive numerator gives ``clip_max`` (the limit of the ratio).

    Args:
        step_states: y_1..y_τ, the state indices of each step (empty for an unlabelled step).
        trans_class: (K, K) P⁺ for a desirable trajectory, P⁻ for an undesirable one.
        trans_all: (K, K) pooled P.
        clip_min: m, default 1/e (§9.1).
        clip_max: M, default e.
        start: index of ``<start>``.

    Returns:
        τ floats in [clip_min, clip_max] (1.0 for unlabelled steps).
    """
    weights = []
    prev: Collection[int] = (start,)
    for states in step_states:
        if not states:
            weights.append(1.0)
            continue
        numer = set_transition_prob(trans_class, prev, states)
        denom = set_transition_prob(trans_all, prev, states)
        if denom > 0:
            ratio = numer / denom
        else:
            ratio = math.inf if numer > 0 else 1.0
        weights.append(min(max(ratio, clip_min), clip_max))  # plain floats: np.clip costs more per step
        prev = states
    return weights


def char_weights(
    response: str,
    paragraph_spans: Sequence[Span],
    steps_paragraphs: Sequence[Sequence[int]],
    seg_weights: Sequence[float],
) -> np.ndarray:
    """Weight of every character of the response: ω before tokenisation (Eq. 9; §9.4).

    Characters of a step's paragraphs get its w_t, and so does the separator after each of those
    paragraphs (the whitespace that follows it, which for spans from :func:`parse_response` reaches
    the next paragraph or the end of the thinking block). Everything else (tags, the answer,
    paragraphs no step covers, whitespace before the first paragraph) gets 1.

    Args:
        response: the response text.
        paragraph_spans: ``(start, end)`` of every paragraph in ``response``
            (``parse_response(response).paragraphs``).
        steps_paragraphs: for each step, the indices of its paragraphs.
        seg_weights: w_t for each step, as from :func:`step_weights`.

    Returns:
        (L,) float64.

    Raises:
        ValueError: a paragraph index out of range (naming it and its step), or a count mismatch
            between steps and weights.
    """
    if len(steps_paragraphs) != len(seg_weights):
        raise ValueError(f"{len(steps_paragraphs)} steps but {len(seg_weights)} step weights")
    weights = np.ones(len(response))  # (L,)
    for t, (paragraphs, weight) in enumerate(zip(steps_paragraphs, seg_weights, strict=True)):
        for p in paragraphs:
            if not 0 <= p < len(paragraph_spans):
                raise ValueError(
                    f"step {t}: paragraph index {p} out of range (the thinking has {len(paragraph_spans)} paragraphs)"
                )
            start, end = paragraph_spans[p]
            weights[start : _WHITESPACE.match(response, end).end()] = weight
    return weights


def token_weights_from_offsets(char_w: np.ndarray, offsets: np.ndarray | Sequence[Span]) -> np.ndarray:
    """ω per token: the weight of the character where each token starts (Eq. 9; §9.4).

    A token straddling two spans takes the weight of the span holding its first character; tokens
    with zero-length offsets (EOS and other special tokens) or starting outside ``char_w`` get 1.

    Args:
        char_w: (L,) character weights from :func:`char_weights`.
        offsets: (n, 2) character ``(start, end)`` of every token (a fast tokenizer's
            ``offset_mapping``).

    Returns:
        (n,) float64.
    """
    offsets = np.asarray(offsets, dtype=np.int64).reshape(-1, 2)  # (n, 2)
    starts, ends = offsets[:, 0], offsets[:, 1]  # (n,), (n,)
    real = (ends > starts) & (starts >= 0) & (starts < len(char_w))  # (n,) bool
    weights = np.ones(len(offsets))  # (n,)
    weights[real] = char_w[starts[real]]
    return weights


def token_weights(
    response: str,
    steps: Sequence[dict],
    seg_weights: Sequence[float],
    tokenizer: PreTrainedTokenizerBase,
) -> tuple[list[int], np.ndarray]:
    """Token ids of the response and their weights ω (Eq. 9), the response tokenised alone.

    Args:
        response: the response text (no prompt).
        steps: the annotated steps, ``[{"paragraphs": [0, 1], ...}, ...]`` (DESIGN.md format).
        seg_weights: w_t for each step.
        tokenizer: a fast (Rust-backed) Hugging Face tokenizer, for ``return_offsets_mapping``.

    Returns:
        ``(input_ids, weights)``: n ids (no special tokens added) and (n,) float64 weights.
    """
    paragraph_spans = parse_response(response).paragraphs
    char_w = char_weights(response, paragraph_spans, [step["paragraphs"] for step in steps], seg_weights)  # (L,)
    encoding = tokenizer(response, return_offsets_mapping=True, add_special_tokens=False)
    return list(encoding["input_ids"]), token_weights_from_offsets(char_w, encoding["offset_mapping"])

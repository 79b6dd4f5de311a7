"""The paper's evaluation metrics (App. A.2, Figures 1 and 5; method/MRALIGN.md §7.2, §8.4, §9 items 6-7).

Notation: N items. For one response, y_t is its thinking (the ``<think>`` blocks, core/segment.py)
and y_a its final answer (``<answer>…</answer>``, else the text after the last ``</think>``, else
the whole response); gold is a list of aliases. "⊆" is containment after SQuAD normalisation on
whole words, any alias counting (core/answers.py; §9 item 6 reads the printed "=" as containment).

* EM_t = [gold ⊆ y_t], EM_a = [gold ⊆ y_a], EM_both = EM_t ∧ EM_a.
* **Acc** = (1/N) Σ EM_both for thinking on; for thinking off (no y_t) Acc is answer-only, mean EM_a.
* **Mis** = (1/N) Σ EM_t ⊕ EM_a, thinking on only (the reasoning–answer hit gap).
* **answer_acc** = (1/N) Σ EM_a in both modes, comparable with harnesses that ignore the thinking.

Rates are reported in percent with percentile-bootstrap 95 % intervals over items. Everything here
is a pure function of strings and lists.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterable, Mapping, Sequence

import numpy as np

from mralign_plugin.core.answers import contains_gold, normalize_answer
from mralign_plugin.core.segment import parse_response

BUCKETS = ("both_correct", "both_wrong", "inconsistent")
_ARTICLES = re.compile(r"\b(a|an|the)\b")  # the article step of SQuAD normalisation, as in core/answers.py
_WORD = re.compile(r"\S+")
_PUNCT = frozenset(string.punctuation)


def normalized_words(text: str) -> list[tuple[str, int]]:
    """SQuAD-normalised words of ``text`` with the offset in ``text`` of each word's first character.

    ``" ".join(w for w, _ in normalized_words(t)) == normalize_answer(t)``, so a phrase found here
    is exactly a hit of :func:`~mralign_plugin.core.answers.contains_gold`, now with a position.

    Example:
        >>> normalized_words("The Lion-King, by Elton.")
        [('lionking', 4), ('by', 15), ('elton', 18)]
    """
    lowered = text.lower()
    if len(lowered) == len(text):  # the usual case: lower-casing maps characters one to one
        pairs = [(c, i) for i, c in enumerate(lowered) if c not in _PUNCT]
    else:  # e.g. "İ" lowers to two characters: map each produced character to its source
        pairs = [(c, i) for i, ch in enumerate(text) for c in ch.lower() if c not in _PUNCT]
    chars = [c for c, _ in pairs]
    stripped = "".join(chars)
    for m in _ARTICLES.finditer(stripped):
        chars[m.start() : m.end()] = [" "] * (m.end() - m.start())
    spaced = "".join(chars)
    return [(m.group(), pairs[m.start()][1]) for m in _WORD.finditer(spaced)]


def gold_offsets(text: str, aliases: Iterable[str]) -> list[int]:
    """Sorted character offsets in ``text`` where some normalised alias starts, on word boundaries.

    Example:
        >>> gold_offsets("Paris? Yes, PARIS is the capital.", ["paris"])
        [0, 12]
    """
    words = normalized_words(text)
    tokens = [w for w, _ in words]
    hits = set()
    for alias in aliases:
        needle = normalize_answer(alias).split()
        if not needle:
            continue
        for i in range(len(tokens) - len(needle) + 1):
            if tokens[i : i + len(needle)] == needle:
                hits.add(words[i][1])
    return sorted(hits)


def hit_positions(thinking: str, aliases: Iterable[str]) -> tuple[float, float] | None:
    """Relative positions (% of the thinking) of the first and last gold occurrence, Figure 1.

    Interpretation (the paper gives no unit): position = 100 · (character offset of the
    occurrence's first character in the stripped thinking) / (its length in characters). None when
    the gold does not occur.

    Example:
        >>> hit_positions("Paris, or maybe Lyon. Paris.", ["Paris"])
        (0.0, 78.57142857142857)
    """
    text = thinking.strip()
    offsets = gold_offsets(text, aliases)
    if not offsets:
        return None
    return 100.0 * offsets[0] / len(text), 100.0 * offsets[-1] / len(text)


def score_response(response: str, gold: Sequence[str], thinking: bool) -> dict:
    """Per-item metrics of one response.

    Args:
        response: generated text (thinking and answer).
        gold: gold aliases; a hit when any one is contained.
        thinking: the row was generated with thinking on. Off: ``em_t``, ``em_both``, ``mis`` and
            the positions are None, and ``correct`` (the item's Acc term) is EM_a.

    Returns:
        ``{em_t, em_a, em_both, mis, correct, first_pos, last_pos, has_thinking, unterminated, answer}``.

    Example:
        >>> r = "<think>It is Paris.</think><answer>Lyon</answer>"
        >>> s = score_response(r, ["Paris"], thinking=True)
        >>> s["em_t"], s["em_a"], s["em_both"], s["mis"], s["correct"]
        (True, False, False, True, False)
        >>> score_response("<answer>Paris</answer>", ["paris"], thinking=False)["correct"]
        True
    """
    parsed = parse_response(response)
    em_a = contains_gold(parsed.answer, gold)
    item = {"em_a": em_a, "has_thinking": parsed.has_thinking, "unterminated": parsed.unterminated,
            "answer": parsed.answer[:300]}
    if not thinking:
        return {"em_t": None, "em_both": None, "mis": None, "correct": em_a, "first_pos": None, "last_pos": None, **item}
    em_t = contains_gold(parsed.thinking, gold)
    positions = hit_positions(parsed.thinking, gold) if em_t else None
    return {
        "em_t": em_t, "em_both": em_t and em_a, "mis": em_t != em_a, "correct": em_t and em_a,
        "first_pos": positions[0] if positions else None, "last_pos": positions[1] if positions else None, **item,
    }


def bootstrap_ci(
    values: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """Percentile-bootstrap interval of the mean over items, for each column.

    Args:
        values: (N,) or (N, M) per-item values (e.g. 0/1 hits); rows are resampled together, so
            the M metrics of one resample share the same items.
        n_resamples: B, the number of resamples.
        confidence: two-sided level (0.95: the 2.5th and 97.5th percentiles).
        seed: seed of the resampling, so a report is reproducible.

    Returns:
        ``(lo, hi)``, each () or (M,), in the units of ``values``; NaN when N = 0.
    """
    values = np.asarray(values, dtype=np.float64)
    if values.shape[0] == 0:
        nan = np.full(values.shape[1:], np.nan)
        return nan, nan.copy()
    rng = np.random.default_rng(seed)
    N = values.shape[0]
    means = []
    for start in range(0, n_resamples, 256):  # chunks bound memory to 256 · N indices
        idx = rng.integers(0, N, size=(min(256, n_resamples - start), N))  # (b, N)
        means.append(values[idx].mean(axis=1))  # (b,) or (b, M)
    means = np.concatenate(means)  # (B,) or (B, M)
    alpha = 1.0 - confidence
    lo, hi = np.quantile(means, [alpha / 2, 1 - alpha / 2], axis=0)
    return lo, hi


def paired_difference(
    a: np.ndarray, b: np.ndarray, n_resamples: int = 1000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float, float]:
    """Mean of ``a - b`` over the same items, with a paired percentile-bootstrap interval.

    Both methods answered the same questions, so the items are resampled as pairs: the interval is
    that of the mean per-item difference, much narrower than two independent intervals when the
    methods agree on most items.

    Args:
        a, b: (N,) per-item values of two methods on the same N items, in the same order.

    Returns:
        ``(mean difference, lo, hi)`` in the units of the values; NaN when N = 0.

    Example:
        >>> paired_difference(np.array([1, 1, 0, 1]), np.array([1, 1, 0, 1]))
        (0.0, 0.0, 0.0)
    """
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired values need the same 1-D shape, got {a.shape} and {b.shape}")
    diff = a - b  # (N,)
    lo, hi = bootstrap_ci(diff, n_resamples=n_resamples, confidence=confidence, seed=seed)
    return (float(diff.mean()) if diff.size else float("nan")), float(lo), float(hi)


def _pct(x: float) -> float:
    return round(100.0 * float(x), 4)


def summarize(items: Sequence[Mapping], thinking: bool, n_resamples: int = 1000, seed: int = 0) -> dict:
    """Acc, Mis and answer-only accuracy of one (dataset, mode), in percent, with 95 % CIs.

    Args:
        items: outputs of :func:`score_response`, one per test item.
        thinking: the mode of the items; off gives ``mis`` None and Acc = answer accuracy.
        n_resamples, seed: bootstrap settings.

    Returns:
        ``{n, acc, acc_ci, mis, mis_ci, answer_acc, answer_acc_ci, em_t, em_a, em_both,
        no_thinking, unterminated}``; rates in percent, ``*_ci`` = [lo, hi], None where undefined.
    """
    n = len(items)
    correct = np.array([bool(it["correct"]) for it in items], dtype=np.float64)  # (N,)
    em_a = np.array([bool(it["em_a"]) for it in items], dtype=np.float64)  # (N,)
    out: dict = {"n": n}
    if n == 0:
        return {**out, "acc": None, "acc_ci": None, "mis": None, "mis_ci": None, "answer_acc": None,
                "answer_acc_ci": None, "em_t": None, "em_a": None, "em_both": None, "no_thinking": 0, "unterminated": 0}
    columns = [correct, em_a]
    if thinking:
        mis = np.array([bool(it["mis"]) for it in items], dtype=np.float64)  # (N,)
        columns.append(mis)
    lo, hi = bootstrap_ci(np.stack(columns, axis=1), n_resamples=n_resamples, seed=seed)  # (M,), (M,)
    out.update(acc=_pct(correct.mean()), acc_ci=[_pct(lo[0]), _pct(hi[0])],
               answer_acc=_pct(em_a.mean()), answer_acc_ci=[_pct(lo[1]), _pct(hi[1])])
    if thinking:
        out.update(mis=_pct(columns[2].mean()), mis_ci=[_pct(lo[2]), _pct(hi[2])],
                   em_t=_pct(np.mean([bool(it["em_t"]) for it in items])), em_a=_pct(em_a.mean()),
                   em_both=_pct(correct.mean()))
    else:
        out.update(mis=None, mis_ci=None, em_t=None, em_a=_pct(em_a.mean()), em_both=None)
    out["no_thinking"] = sum(1 for it in items if not it.get("has_thinking"))
    out["unterminated"] = sum(1 for it in items if it.get("unterminated"))
    return out


def hit_gap(items: Iterable[Mapping]) -> dict:
    """Figure 1: mean first / last gold position (% of the thinking), for right vs wrong answers.

    Only thinking-on items whose thinking contains the gold (EM_t = 1) have positions; "right"
    means EM_a = 1 (which, given EM_t = 1, is EM_both), "wrong" EM_a = 0.

    Returns:
        ``{"right": {n, first, last}, "wrong": {n, first, last}}``; means None when n = 0.
    """
    groups: dict[str, list[tuple[float, float]]] = {"right": [], "wrong": []}
    for it in items:
        if it.get("em_t") and it.get("first_pos") is not None:
            groups["right" if it["em_a"] else "wrong"].append((it["first_pos"], it["last_pos"]))
    out = {}
    for key, pos in groups.items():
        arr = np.array(pos, dtype=np.float64).reshape(-1, 2)  # (n, 2)
        out[key] = {"n": len(pos), "first": round(float(arr[:, 0].mean()), 4) if pos else None,
                    "last": round(float(arr[:, 1].mean()), 4) if pos else None}
    return out


def bucket_of(item: Mapping) -> str:
    """Figure 5 bucket of a thinking-on baseline item: both_correct, both_wrong or inconsistent."""
    if item.get("em_t") is None:
        raise ValueError("consistency buckets need a thinking-on baseline (EM_t is undefined with thinking off)")
    if item["em_t"] and item["em_a"]:
        return "both_correct"
    if not item["em_t"] and not item["em_a"]:
        return "both_wrong"
    return "inconsistent"


def consistency_buckets(base: Mapping[str, Mapping], new: Mapping[str, Mapping]) -> dict:
    """Figure 5: accuracy change of a new run within the baseline's consistency buckets.

    Items are matched by id. The baseline (thinking on) splits them by whether its thinking and
    answer agree: Both Correct (EM_t = EM_a = 1), Both Wrong (EM_t = EM_a = 0), Inconsistent
    (EM_t ⊕ EM_a). Within each bucket: the Acc term (``correct``) and EM_a of both runs, their
    difference new − base in percentage points, and n.

    Args:
        base: id -> scored item of the baseline run (thinking on).
        new: id -> scored item of the run to compare.

    Returns:
        ``{"n_common", "n_only_base", "n_only_new", "buckets": {name: {n, base_acc, new_acc,
        delta_acc, base_answer_acc, new_answer_acc, delta_answer_acc}}}``, rates in percent.
    """
    common = [i for i in base if i in new]
    groups: dict[str, list[str]] = {b: [] for b in BUCKETS}
    for i in common:
        groups[bucket_of(base[i])].append(i)
    buckets = {}
    for name, ids in groups.items():
        if not ids:
            buckets[name] = {"n": 0, "base_acc": None, "new_acc": None, "delta_acc": None,
                             "base_answer_acc": None, "new_answer_acc": None, "delta_answer_acc": None}
            continue
        b_acc = np.mean([bool(base[i]["correct"]) for i in ids])
        n_acc = np.mean([bool(new[i]["correct"]) for i in ids])
        b_ans = np.mean([bool(base[i]["em_a"]) for i in ids])
        n_ans = np.mean([bool(new[i]["em_a"]) for i in ids])
        buckets[name] = {"n": len(ids), "base_acc": _pct(b_acc), "new_acc": _pct(n_acc), "delta_acc": _pct(n_acc - b_acc),
                         "base_answer_acc": _pct(b_ans), "new_answer_acc": _pct(n_ans),
                         "delta_answer_acc": _pct(n_ans - b_ans)}
    return {"n_common": len(common), "n_only_base": len(base) - len(common), "n_only_new": len(new) - len(common),
            "buckets": buckets}

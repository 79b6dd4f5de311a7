"""EM_t / EM_a / EM_both, Acc, Mis, answer-only accuracy, CIs, hit-gap positions and buckets on hand-made predictions."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mralign_plugin.core.answers import normalize_answer
from mralign_plugin.eval.metrics import (
    bootstrap_ci,
    consistency_buckets,
    gold_offsets,
    hit_gap,
    hit_positions,
    normalized_words,
    paired_difference,
    score_response,
    summarize,
)


def on(thinking: str, answer: str) -> str:
    return f"<think>\n{thinking}\n</think>\n<answer>{answer}</answer>"


@pytest.mark.parametrize(
    ("response", "em_t", "em_a"),
    [
        (on("The capital is Canberra.", "Canberra"), True, True),
        (on("The capital is Canberra.", "Sydney"), True, False),
        (on("Maybe Sydney.", "Canberra"), False, True),
        (on("Maybe Sydney.", "Sydney"), False, False),
    ],
)
def test_each_combination_of_em_t_and_em_a(response, em_t, em_a):
    s = score_response(response, ["Canberra"], thinking=True)
    assert (s["em_t"], s["em_a"]) == (em_t, em_a)
    assert s["em_both"] == (em_t and em_a) == s["correct"]  # Acc counts EM_both with thinking
    assert s["mis"] == (em_t != em_a)  # XOR


def test_aliases_normalisation_and_whole_words():
    gold = ["Leonardo da Vinci", "da Vinci"]
    assert score_response(on("Painted by DA VINCI!", "Leonardo"), gold, True)["em_t"]  # any alias, case, punctuation
    assert score_response(on("x", "The Pacific Ocean."), ["the Pacific"], True)["em_a"]  # articles dropped
    assert not score_response(on("Canadian?", "Canada"), ["can"], True)["em_a"]  # whole words only
    assert not score_response(on("x", "The"), ["the"], True)["em_a"]  # an alias that normalises to "" never hits


def test_answer_extraction_fallbacks():
    # no <answer> tag: the text after </think>
    assert score_response("<think>hmm</think>\nIt is Paris.", ["Paris"], True)["em_a"]
    # truncated thinking (no </think>): empty answer even though the gold is in the thinking
    s = score_response("<think>\nIt is Paris, I think, but", ["Paris"], True)
    assert (s["em_t"], s["em_a"], s["unterminated"], s["mis"]) == (True, False, True, True)
    # no thinking at all in a thinking-on row: EM_t = 0
    s = score_response("Paris.", ["Paris"], True)
    assert (s["em_t"], s["em_a"], s["has_thinking"], s["correct"]) == (False, True, False, False)


def test_thinking_off_rows_are_answer_only():
    s = score_response("<think>\n\n</think>\n\n<answer>Paris</answer>", ["paris"], thinking=False)
    assert s["correct"] is True and s["em_a"] is True
    assert s["em_t"] is None and s["em_both"] is None and s["mis"] is None and s["first_pos"] is None


def test_summarize_by_hand():
    """Five thinking-on items with (EM_t, EM_a) = (1,1), (1,1), (1,0), (0,1), (0,0):
    Acc = 2/5 = 40 %, Mis = 2/5 = 40 %, answer-only Acc = 3/5 = 60 %, EM_t = 60 %."""
    responses = [on("Paris", "Paris"), on("Paris", "Paris"), on("Paris", "Lyon"), on("Lyon", "Paris"), on("Lyon", "Lyon")]
    items = [score_response(r, ["Paris"], True) for r in responses]
    s = summarize(items, thinking=True, n_resamples=500)
    assert (s["n"], s["acc"], s["mis"], s["answer_acc"], s["em_t"], s["em_a"], s["em_both"]) == (5, 40.0, 40.0, 60.0, 60.0, 60.0, 40.0)
    for key in ("acc", "mis", "answer_acc"):
        lo, hi = s[f"{key}_ci"]
        assert 0.0 <= lo <= s[key] <= hi <= 100.0
    off = summarize([score_response(r, ["Paris"], False) for r in responses], thinking=False)
    assert off["acc"] == off["answer_acc"] == 60.0 and off["mis"] is None and off["mis_ci"] is None
    assert summarize([], thinking=True)["acc"] is None


def test_bootstrap_ci_properties():
    const = np.ones(50)
    lo, hi = bootstrap_ci(const, n_resamples=100)
    assert lo == hi == 1.0
    x = np.r_[np.ones(30), np.zeros(70)]
    a = bootstrap_ci(x, n_resamples=400, seed=3)
    assert a == bootstrap_ci(x, n_resamples=400, seed=3)  # reproducible
    assert 0.15 < a[0] < 0.3 < a[1] < 0.45  # around the mean 0.3, roughly ±1.96·sqrt(.21/100)
    lo2, hi2 = bootstrap_ci(np.stack([x, 1 - x], 1), n_resamples=400, seed=3)  # columns share resamples
    assert np.allclose(lo2 + hi2[::-1], 1.0)
    assert np.isnan(bootstrap_ci(np.zeros(0))[0])


@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("abcthe ANTHE.,!'-\n\téü01")), max_size=40))
def test_normalized_words_match_squad_normalisation(text):
    words = normalized_words(text)
    assert " ".join(w for w, _ in words) == normalize_answer(text)
    for w, offset in words:  # each word starts at a character of the original text that it came from
        assert text[offset].lower() == w[0]


def test_hit_positions_by_hand():
    thinking = "Maybe Lyon. No: it is Paris. Yes, paris."  # 40 characters; "Paris" at 22, "paris" at 34
    assert len(thinking) == 40
    assert gold_offsets(thinking, ["Paris"]) == [22, 34]
    assert hit_positions(thinking, ["Paris", "Lyon"]) == (100 * 6 / 40, 100 * 34 / 40)
    assert hit_positions("  The Nile river.  ", ["the Nile"]) == (100 * 4 / 15, 100 * 4 / 15)  # stripped; article skipped
    assert hit_positions("nothing here", ["Paris"]) is None
    s = score_response(on(thinking, "Paris"), ["Paris"], True)
    assert (s["first_pos"], s["last_pos"]) == (55.0, 85.0)


def test_hit_gap_right_vs_wrong():
    items = [
        score_response(on("Paris first. Then more text here.", "Paris"), ["Paris"], True),  # right, first = last = 0
        score_response(on("Some text, then Paris", "Paris"), ["Paris"], True),  # right, 16/21
        score_response(on("Paris. Or Lyon.", "Lyon"), ["Paris"], True),  # wrong, 0
        score_response(on("Lyon.", "Paris"), ["Paris"], True),  # EM_t = 0: no position
    ]
    gap = hit_gap(items)
    assert gap["right"]["n"] == 2 and gap["right"]["first"] == pytest.approx((0 + 100 * 16 / 21) / 2, abs=1e-3)
    assert gap["wrong"] == {"n": 1, "first": 0.0, "last": 0.0}
    assert hit_gap([])["right"] == {"n": 0, "first": None, "last": None}


def test_consistency_buckets_by_hand():
    """Baseline (EM_t, EM_a): a=(1,1), b=(1,1), c=(0,0), d=(1,0), e=(0,1), f=(1,0); g only in baseline.
    New correct: a yes, b no, c yes, d yes, e yes, f no.
    Both Correct {a, b}: base 100 -> new 50 (Δ -50). Both Wrong {c}: 0 -> 100 (+100).
    Inconsistent {d, e, f}: base Acc 0 -> new 2/3; base EM_a 1/3 (e) -> new EM_a 2/3."""
    t = {(1, 1): on("Paris", "Paris"), (0, 0): on("Lyon", "Lyon"), (1, 0): on("Paris", "Lyon"), (0, 1): on("Lyon", "Paris")}
    base_pairs = {"a": (1, 1), "b": (1, 1), "c": (0, 0), "d": (1, 0), "e": (0, 1), "f": (1, 0), "g": (1, 1)}
    new_pairs = {"a": (1, 1), "b": (1, 0), "c": (1, 1), "d": (1, 1), "e": (1, 1), "f": (0, 0), "h": (1, 1)}
    base = {k: score_response(t[v], ["Paris"], True) for k, v in base_pairs.items()}
    new = {k: score_response(t[v], ["Paris"], True) for k, v in new_pairs.items()}
    out = consistency_buckets(base, new)
    assert (out["n_common"], out["n_only_base"], out["n_only_new"]) == (6, 1, 1)
    b = out["buckets"]
    assert (b["both_correct"]["n"], b["both_correct"]["base_acc"], b["both_correct"]["new_acc"], b["both_correct"]["delta_acc"]) == (2, 100.0, 50.0, -50.0)
    assert (b["both_wrong"]["n"], b["both_wrong"]["delta_acc"]) == (1, 100.0)
    inc = b["inconsistent"]
    assert inc["n"] == 3 and inc["base_acc"] == 0.0 and inc["new_acc"] == pytest.approx(100 * 2 / 3, abs=1e-3)
    assert inc["base_answer_acc"] == pytest.approx(100 / 3, abs=1e-3) and inc["delta_answer_acc"] == pytest.approx(100 / 3, abs=1e-3)
    with pytest.raises(ValueError, match="thinking-on baseline"):
        consistency_buckets({"a": score_response("Paris", ["Paris"], False)}, new)


def test_paired_difference_known_cases():
    same = np.array([1, 0, 1, 1, 0])
    assert paired_difference(same, same) == (0.0, 0.0, 0.0)
    assert paired_difference(np.ones(8), np.zeros(8)) == (1.0, 1.0, 1.0)
    # b wins on exactly one item of 40: the difference is -1/40, and no resample can make it positive.
    a = np.array([1.0] * 20 + [0.0] * 20)
    b = a.copy()
    b[20] = 1.0
    diff, lo, hi = paired_difference(a, b, n_resamples=2000)
    assert diff == -1 / 40 and lo <= diff <= hi <= 0.0
    with pytest.raises(ValueError, match="same 1-D shape"):
        paired_difference(np.ones(3), np.ones(4))


def test_paired_interval_is_narrower_than_unpaired_when_methods_agree():
    rng = np.random.default_rng(0)
    base = (rng.random(200) < 0.5).astype(float)  # (200,)
    better = base.copy()
    better[np.flatnonzero(base == 0)[:10]] = 1.0  # 10 more right answers, every other item the same
    diff, lo, hi = paired_difference(better, base, n_resamples=2000, seed=1)
    assert diff == 10 / 200 and lo > 0  # significant when paired
    lo_a, hi_a = bootstrap_ci(better, n_resamples=2000, seed=1)
    lo_b, hi_b = bootstrap_ci(base, n_resamples=2000, seed=1)
    assert lo_a < hi_b  # ...while the two separate intervals overlap
    assert hi - lo < min(hi_a - lo_a, hi_b - lo_b)

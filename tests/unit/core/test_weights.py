"""Eq. 10 segment weights and the per-token weight vector ω, on hand-worked numbers and real GPT-2 BPE."""

import math

import numpy as np
import pytest

from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.weights import char_weights, step_weights, token_weights, token_weights_from_offsets

E = math.e

# K = 4 toy chain: 0 = <start>, 1 = a, 2 = b, 3 = <stop>.
P_ALL = np.array(
    [
        [0.0, 0.5, 0.25, 0.25],
        [0.0, 0.5, 0.25, 0.25],
        [0.0, 0.25, 0.5, 0.25],
        [0.0, 0.0, 0.0, 1.0],
    ]
)
P_POS = np.array(
    [
        [0.0, 0.75, 0.125, 0.125],
        [0.0, 0.125, 0.5, 0.375],
        [0.0, 0.5, 0.125, 0.375],
        [0.0, 0.0, 0.0, 1.0],
    ]
)


def random_transitions(rng, k=17):
    trans = rng.dirichlet(np.ones(k), size=k)  # (k, k)
    trans[:, 0] = 0.0  # nothing moves into <start>
    return trans / trans.sum(1, keepdims=True)


# --- step_weights (Eq. 10) -------------------------------------------------------------------


def test_step_weights_hand_worked():
    """Steps {a}, {b}, {}, {a, b}; Eq. 7 averages the candidate cells.

    w1 = P+[start,a] / P[start,a] = 0.75 / 0.5 = 1.5            (y_0 = {<start>})
    w2 = P+[a,b] / P[a,b] = 0.5 / 0.25 = 2.0
    w3 = 1.0                                                     (no states; skipped in the chain)
    w4 = mean(P+[b,a], P+[b,b]) / mean(P[b,a], P[b,b]) = 0.3125 / 0.375 = 5/6   (linked to {b})
    Had the empty step reset the chain to <start>, w4 would be 0.4375 / 0.375 = 7/6.
    """
    weights = step_weights([{1}, frozenset({2}), set(), (1, 2)], P_POS, P_ALL)
    assert weights == pytest.approx([1.5, 2.0, 1.0, 5 / 6], abs=1e-12)
    assert all(isinstance(w, float) for w in weights)


def test_step_weights_are_one_when_class_matrix_equals_pooled():
    rng = np.random.default_rng(0)
    trans = random_transitions(rng)
    steps = [set(rng.choice(np.arange(1, 16), size=rng.integers(0, 3), replace=False).tolist()) for _ in range(50)]
    assert step_weights(steps, trans, trans.copy()) == pytest.approx([1.0] * 50, abs=1e-12)


def test_step_weights_clip_both_sides():
    trans_all = np.array([[0.0, 0.1, 0.5, 0.4], [0.0, 0.4, 0.5, 0.1], [0.0, 0.5, 0.4, 0.1], [0, 0, 0, 1.0]])
    trans_class = np.array([[0.0, 0.99, 0.005, 0.005], [0.0, 0.5, 0.01, 0.49], [0.0, 0.5, 0.4, 0.1], [0, 0, 0, 1.0]])
    # start->a: 0.99 / 0.1 = 9.9 -> e;  a->b: 0.01 / 0.5 = 0.02 -> 1/e;  b->a: 0.5 / 0.5 = 1
    assert step_weights([{1}, {2}, {1}], trans_class, trans_all) == [E, 1 / E, 1.0]
    assert step_weights([{1}, {2}], trans_class, trans_all, clip_min=0.5, clip_max=2.0) == [2.0, 0.5]
    rng = np.random.default_rng(1)
    weights = step_weights(
        [{int(s)} for s in rng.integers(1, 16, 200)], random_transitions(rng), random_transitions(rng)
    )
    assert all(1 / E <= w <= E for w in weights)


def test_step_weights_first_step_uses_start_row():
    trans_class = P_ALL.copy()
    trans_class[0] = [0.0, 0.25, 0.5, 0.25]  # only the <start> row differs
    assert step_weights([{1}, {2}, {1}], trans_class, P_ALL) == pytest.approx([0.5, 1.0, 1.0])
    # a different start index reads that row instead
    assert step_weights([{1}], trans_class, P_ALL, start=2) == pytest.approx([1.0])


def test_step_weights_leading_empty_steps_keep_start():
    assert step_weights([set(), [], {1}], P_POS, P_ALL) == pytest.approx([1.0, 1.0, 1.5])
    assert step_weights([], P_POS, P_ALL) == []


def test_step_weights_zero_denominator():
    """Pr(.|P) = 0: 0/0 -> 1 (no evidence), x/0 with x > 0 -> clip_max."""
    trans_all = np.array([[0.0, 0.0, 1.0], [0.0, 0.0, 1.0], [0.0, 0.0, 1.0]])
    trans_class = np.array([[0.0, 0.0, 1.0], [0.0, 0.3, 0.7], [0.0, 0.0, 1.0]])
    # start->1: 0/0 -> 1;  1->1: 0.3/0 -> e
    assert step_weights([{1}, {1}], trans_class, trans_all) == [1.0, E]


# --- char_weights / token_weights_from_offsets -----------------------------------------------


def test_char_weights_paragraphs_and_separators():
    r = "<think>\nA.\n\nB.\r\n\r\nC.\n</think>\nans"
    spans = parse_response(r).paragraphs  # A. (8, 10), B. (12, 14), C. (18, 20)
    w = char_weights(r, spans, [[0], [], [2]], [2.0, 3.0, 0.5])
    expected = np.ones(len(r))
    expected[8:12] = 2.0  # "A.\n\n": the separator takes the paragraph's weight
    expected[18:21] = 0.5  # "C.\n" up to </think>
    np.testing.assert_array_equal(w, expected)
    assert w.shape == (len(r),) and w.dtype == np.float64


def test_char_weights_separator_stops_at_closing_tag_and_end():
    r = "<think>A.  \n\n</think><think>B.\n\n"
    spans = parse_response(r).paragraphs
    w = char_weights(r, spans, [[0, 1]], [2.0])
    assert "".join(c for c, x in zip(r, w, strict=True) if x == 2.0) == "A.  \n\nB.\n\n"


def test_char_weights_bad_indices():
    spans = [(0, 1), (3, 4)]
    with pytest.raises(ValueError, match="step 1: paragraph index 2 out of range"):
        char_weights("a\n\nb", spans, [[0], [2]], [1.0, 1.0])
    with pytest.raises(ValueError, match="paragraph index -1"):
        char_weights("a\n\nb", spans, [[-1]], [1.0])
    with pytest.raises(ValueError, match="2 steps but 1 step weights"):
        char_weights("a\n\nb", spans, [[0], [1]], [1.0])


def test_token_weights_from_offsets_rules():
    char_w = np.array([1.0, 2.0, 2.0, 3.0, 1.0])
    offsets = np.array([[0, 1], [1, 2], [2, 4], [4, 5], [5, 5], [0, 0], [7, 9]])  # (7, 2)
    # [2, 4] straddles weights 2 and 3: its first character decides; zero-length / outside -> 1
    np.testing.assert_array_equal(token_weights_from_offsets(char_w, offsets), [1.0, 2.0, 2.0, 1.0, 1.0, 1.0, 1.0])
    assert token_weights_from_offsets(char_w, []).shape == (0,)


# --- token_weights with the real GPT-2 byte-level BPE ----------------------------------------


def token_table(response, tokenizer, steps, seg_weights):
    ids, weights = token_weights(response, steps, seg_weights, tokenizer)
    offsets = tokenizer(response, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert len(ids) == len(offsets) == len(weights)
    return [(response[a:b], w) for (a, b), w in zip(offsets, weights.tolist(), strict=True)]


def test_gpt2_offsets_are_characters_not_bytes(gpt2_tokenizer):
    r = "<think>東京は首都。Naïve café.</think>"
    offsets = gpt2_tokenizer(r, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert offsets[-1][1] == len(r) < len(r.encode("utf-8"))
    assert sorted({i for a, b in offsets for i in range(a, b)}) == list(range(len(r)))  # every char, once
    assert [r[a:b] for a, b in offsets[3:6]] == ["東", "東", "京"]  # two byte tokens per CJK char


def test_gpt2_token_weights_accents_and_cjk(gpt2_tokenizer):
    r = "<think>\nCafé crème?\n\n東京の首都。\n\nNaïve.\n\nOK\n</think>\n<answer>Tōkyō</answer>"
    steps = [{"paragraphs": [0], "states": ["framing"]}, {"paragraphs": [1, 2], "states": ["retrieval"]}]
    # paragraph 3 ("OK") belongs to no step
    # CJK characters are two byte-level tokens each, both with the character's offsets;
    # "の首" is one token starting on "の".
    assert token_table(r, gpt2_tokenizer, steps, [2.0, 0.5]) == [
        ("<", 1.0), ("think", 1.0), (">", 1.0), ("\n", 1.0),
        ("C", 2.0), ("af", 2.0), ("é", 2.0), (" cr", 2.0), ("è", 2.0), ("me", 2.0), ("?", 2.0),
        ("\n", 2.0), ("\n", 2.0),
        ("東", 0.5), ("東", 0.5), ("京", 0.5), ("京", 0.5), ("の首", 0.5), ("首", 0.5), ("首", 0.5),
        ("都", 0.5), ("都", 0.5), ("。", 0.5),
        ("\n", 0.5), ("\n", 0.5),
        ("Na", 0.5), ("ïve", 0.5), (".", 0.5),
        ("\n", 0.5), ("\n", 0.5),
        ("OK", 1.0), ("\n", 1.0),
        ("</", 1.0), ("think", 1.0), (">", 1.0), ("\n", 1.0),
        ("<", 1.0), ("answer", 1.0), (">", 1.0),
        ("T", 1.0), ("ō", 1.0), ("ky", 1.0), ("ō", 1.0),
        ("</", 1.0), ("answer", 1.0), (">", 1.0),
    ]  # fmt: skip


def test_gpt2_straddling_tokens_take_their_first_character(gpt2_tokenizer):
    r = "<think>Café.\n\n über\n\nParis.</think>Paris"
    steps = [{"paragraphs": [0]}, {"paragraphs": [1]}, {"paragraphs": [2]}]
    # " ü" is two byte tokens: the first starts on the separator's space (paragraph 0's weight),
    # the second on "ü" (paragraph 1). ".</" starts in paragraph 2 and runs into the tag.
    assert token_table(r, gpt2_tokenizer, steps, [2.0, 0.5, 0.25]) == [
        ("<", 1.0), ("think", 1.0), (">", 1.0),
        ("C", 2.0), ("af", 2.0), ("é", 2.0), (".", 2.0), ("\n\n", 2.0), (" ü", 2.0),
        ("ü", 0.5), ("ber", 0.5), ("\n", 0.5), ("\n", 0.5),
        ("Paris", 0.25), (".</", 0.25), ("think", 1.0), (">", 1.0),
        ("Paris", 1.0),
    ]  # fmt: skip


def test_gpt2_unterminated_thinking_and_eos(gpt2_tokenizer):
    r = "<think>Café.\n\nNaïve\n"
    ids, weights = token_weights(r, [{"paragraphs": [1]}], [E], gpt2_tokenizer)
    offsets = gpt2_tokenizer(r, return_offsets_mapping=True, add_special_tokens=False)["offset_mapping"]
    assert [r[a:b] for (a, b), w in zip(offsets, weights, strict=True) if w == E] == ["Na", "ïve", "\n"]
    # EOS appended by the trainer has a zero-length offset: weight 1
    char_w = char_weights(r, parse_response(r).paragraphs, [[1]], [E])
    assert token_weights_from_offsets(char_w, [*offsets, (0, 0)])[-1] == 1.0


def test_gpt2_unit_weights_give_all_ones(gpt2_tokenizer):
    r = "<think>\nA café.\n\n東京。\n</think>\n<answer>Tōkyō</answer>"
    ids, weights = token_weights(r, [{"paragraphs": [0]}, {"paragraphs": [1]}], [1.0, 1.0], gpt2_tokenizer)
    assert ids == gpt2_tokenizer(r, add_special_tokens=False)["input_ids"]
    np.testing.assert_array_equal(weights, np.ones(len(ids)))


def test_token_weights_bad_paragraph_index(gpt2_tokenizer):
    with pytest.raises(ValueError, match="paragraph index 5"):
        token_weights("<think>A.\n\nB.</think>x", [{"paragraphs": [0, 5]}], [2.0], gpt2_tokenizer)

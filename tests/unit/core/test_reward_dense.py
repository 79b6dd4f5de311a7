"""The dense reward (core/reward.py ``step_values``, ``dense_terms``): per-step terms that add up to s_trans,
placed on each segment's last character, summing to the scalar reward."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mralign_plugin.core.formats import TransitionModel
from mralign_plugin.core.reward import RewardConfig, TransitionScores, dense_terms, reward_parts
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import Taxonomy

LOG15, LOG2 = math.log(1.5), math.log(2.0)
TOY = Taxonomy(names=("a", "b"), groups=("", ""), definitions=("", ""))
P_POS = np.array([[0.0, 0.75, 0.125, 0.125], [0.0, 0.125, 0.5, 0.375], [0.0, 0.5, 0.125, 0.375], [0.0, 0.0, 0.0, 1.0]])
P_NEG = np.array([[0.0, 0.5, 0.25, 0.25], [0.0, 0.5, 0.25, 0.25], [0.0, 0.25, 0.5, 0.25], [0.0, 0.0, 0.0, 1.0]])
SCORES = TransitionScores(TransitionModel(TOY, trans_all=(P_POS + P_NEG) / 2, trans_pos=P_POS, trans_neg=P_NEG,
                                          clip=(1 / math.e, math.e), raw={}), clip=1.0)
CONFIG = RewardConfig(transitions="unused.json", gamma=0.3)
RESPONSE = "<think>\nFirst.\n\nSecond one.\n\nThird.\n</think>\n<answer>Paris</answer>"


def test_step_values_hand_worked():
    """<start> -> {a}: log 1.5; {a} -> {b}: log 2; the empty step: 0 (skipped); {b} -> <stop>: log 1.5."""
    values, stop = SCORES.step_values([("a",), (), ("b",)])
    assert values == pytest.approx([LOG15, 0.0, LOG2], abs=1e-12) and stop == pytest.approx(LOG15, abs=1e-12)
    assert SCORES.step_values([("a",), ("b",)], terminated=False)[1] == 0.0
    assert SCORES.step_values([(), ()]) == ([0.0, 0.0], 0.0)  # no chain, no <stop>


def test_dense_terms_sit_on_segment_ends_and_sum_to_the_reward():
    parsed = parse_response(RESPONSE)
    states = [("a",), ("b",), ("a",)]
    s_trans, n = SCORES.score(states)
    values, stop = SCORES.step_values(states)
    parts = reward_parts(parsed, ["paris"], s_trans, 3, CONFIG)
    pairs = dense_terms(parsed, len(RESPONSE), [[0], [1], [2]], values, parts, CONFIG, n)
    ends = [RESPONSE.index(text) + len(text) - 1 for text in ("First.", "Second one.", "Third.")]
    assert [c for c, _ in pairs] == [*ends, len(RESPONSE) - 1]
    assert [v for _, v in pairs[:3]] == pytest.approx([0.3 * v / n for v in values], abs=1e-12)
    # the last token: alpha * outcome + gamma * stop / n (no hit gap, no format penalty)
    assert pairs[-1][1] == pytest.approx(1.0 + 0.3 * stop / n, abs=1e-12)
    assert sum(v for _, v in pairs) == pytest.approx(parts.reward, abs=1e-12)


def test_a_merged_step_lands_on_its_last_paragraph_and_no_chain_puts_all_on_the_end():
    parsed = parse_response(RESPONSE)
    values, stop = SCORES.step_values([("a",), ("b",)])
    s_trans, n = SCORES.score([("a",), ("b",)])
    parts = reward_parts(parsed, None, s_trans, 2, CONFIG)
    pairs = dense_terms(parsed, len(RESPONSE), [[0, 1], [2]], values, parts, CONFIG, n)
    assert pairs[0][0] == RESPONSE.index("Second one.") + len("Second one.") - 1
    no_chain = reward_parts(parse_response("no thinking"), ["x"], 0.0, 0, CONFIG)
    assert dense_terms(parse_response("no thinking"), 11, [], [], no_chain, CONFIG, 0) == [(10, no_chain.reward)]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.sampled_from(["a", "b"]), max_size=2, unique=True), min_size=1, max_size=6),
       st.booleans(), st.booleans())
def test_the_dense_sum_is_the_scalar_reward(steps, closed, right):
    thinking = "\n\n".join(f"Paragraph {i} about it." for i in range(len(steps)))
    response = f"<think>\n{thinking}\n" + ("</think>\n<answer>Rome</answer>" if closed else "")
    parsed = parse_response(response)
    states = [tuple(s) for s in steps]
    s_trans, n = SCORES.score(states, closed)
    values, stop = SCORES.step_values(states, closed)
    if n:
        assert (sum(values) + stop) / n == pytest.approx(s_trans, abs=1e-12)
    parts = reward_parts(parsed, ["rome" if right else "paris"], s_trans, len(states), CONFIG)
    pairs = dense_terms(parsed, len(response), [[i] for i in range(len(states))], values, parts, CONFIG, n)
    assert sum(v for _, v in pairs) == pytest.approx(parts.reward, abs=1e-12)
    assert all(0 <= c < len(response) for c, _ in pairs) and pairs[-1][0] == len(response) - 1

"""The transition-aware reward (core/reward.py): hand-worked transition scores, the combination on
hand-made trajectories, label / query parsing and the config schema."""

import doctest
import json
import math
import re

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mralign_plugin.core import reward
from mralign_plugin.core.formats import TransitionModel, read_transitions
from mralign_plugin.core.reward import (
    RewardConfig,
    TransitionScores,
    parse_label,
    reward_parts,
    split_query,
    strip_special_tokens,
)
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
from mralign_plugin.core.transitions import fit_transition_model, set_transition_prob
from mralign_plugin.data import demo_corpus_path

LOG15, LOG2 = math.log(1.5), math.log(2.0)

# K = 4 toy model: 0 = <start>, 1 = a, 2 = b, 3 = <stop>. P+ likes moving on (a -> b -> a), P- likes self-loops.
TOY = Taxonomy(names=("a", "b"), groups=("", ""), definitions=("", ""))
P_POS = np.array([[0.0, 0.75, 0.125, 0.125], [0.0, 0.125, 0.5, 0.375], [0.0, 0.5, 0.125, 0.375], [0.0, 0.0, 0.0, 1.0]])
P_NEG = np.array([[0.0, 0.5, 0.25, 0.25], [0.0, 0.5, 0.25, 0.25], [0.0, 0.25, 0.5, 0.25], [0.0, 0.0, 0.0, 1.0]])


def toy_scores(clip: float = 1.0, pos=P_POS, neg=P_NEG) -> TransitionScores:
    model = TransitionModel(TOY, trans_all=(pos + neg) / 2, trans_pos=pos, trans_neg=neg, clip=(1 / math.e, math.e), raw={})
    return TransitionScores(model, clip)


def test_doctests():
    assert doctest.testmod(reward).failed == 0


# --- s_trans -------------------------------------------------------------------------------------


def test_transition_score_hand_worked():
    """Chain <start>, {a}, {b}, <stop>:
    log(0.75/0.5) = log 1.5, log(0.5/0.25) = log 2, log(0.375/0.25) = log 1.5; mean = (2 log 1.5 + log 2) / 3.
    With c = 0.5 the middle term clips to 0.5.
    """
    assert toy_scores().score([("a",), ("b",)]) == pytest.approx(((2 * LOG15 + LOG2) / 3, 3), abs=1e-12)
    assert toy_scores(clip=0.5).score([("a",), ("b",)])[0] == pytest.approx((2 * LOG15 + 0.5) / 3, abs=1e-12)


def test_negative_typical_chain_scores_below_positive_typical():
    """Self-loops {a}, {a}, {b}, {b}: log 1.5, log(0.125/0.5) = -log 4 -> clipped to -1, log 2, -1, log 1.5."""
    scores = toy_scores()
    looping, _ = scores.score([["a"], ["a"], ["b"], ["b"]])
    assert looping == pytest.approx((2 * LOG15 + LOG2 - 2.0) / 5, abs=1e-12)
    moving, _ = scores.score([["a"], ["b"], ["a"], ["b"]])
    assert moving > 0 > looping


def test_composite_step_averages_candidate_cells_eq7():
    """{a, b} after <start>: mean(0.75, 0.125) / mean(0.5, 0.25) = 0.4375 / 0.375; to <stop>: 0.375 / 0.25."""
    s, n = toy_scores().score([("a", "b")])
    assert (s, n) == (pytest.approx((math.log(0.4375 / 0.375) + LOG15) / 2, abs=1e-12), 2)
    assert toy_scores().score([("b", "a")])[0] == pytest.approx(s, abs=1e-12)


def test_unterminated_chain_has_no_stop_and_empty_steps_are_skipped():
    scores = toy_scores()
    assert scores.score([("a",), ("b",)], terminated=False) == pytest.approx(((LOG15 + LOG2) / 2, 2), abs=1e-12)
    assert scores.score([("a",), (), ("b",)]) == scores.score([("a",), ("b",)])
    assert scores.score([]) == (0.0, 0) and scores.score([(), ()]) == (0.0, 0)


def test_zero_probabilities_take_the_limit():
    pos, neg = P_POS.copy(), P_NEG.copy()
    pos[1, 2], pos[1, 1] = 0.0, 0.625  # P+ never goes a -> b
    neg[2, 1], neg[2, 2] = 0.0, 0.75  # P- never goes b -> a
    scores = toy_scores(clip=2.0, pos=pos, neg=neg)
    assert scores.step(("a",), ("b",)) == -2.0
    assert scores.step(("b",), ("a",)) == 2.0
    assert scores.step(scores.stop, ("a",)) == 0.0  # masked in both


def test_unknown_or_too_many_states_raise():
    scores = toy_scores()
    with pytest.raises(ValueError, match="unknown state"):
        scores.score([("a",), ("c",)])
    with pytest.raises(ValueError, match="at most 2"):
        scores.score([("a", "b", "a")])
    with pytest.raises(ValueError, match="unknown state"):
        scores.score([("<start>",)])


def test_memoised_steps_equal_eq7_on_the_paper_taxonomy():
    rng = np.random.default_rng(0)
    K = PAPER_TAXONOMY.num_states
    pos, neg = (rng.dirichlet(np.ones(K), size=K) for _ in range(2))
    model = TransitionModel(PAPER_TAXONOMY, (pos + neg) / 2, pos, neg, (1 / math.e, math.e), {})
    scores = TransitionScores(model, clip=3.0)
    names = PAPER_TAXONOMY.names
    for _ in range(300):
        prev = tuple(rng.choice(names, size=rng.integers(1, 3), replace=False))
        cur = tuple(rng.choice(names, size=rng.integers(1, 3), replace=False))
        from_set = {PAPER_TAXONOMY.index(x) for x in prev}
        to_set = {PAPER_TAXONOMY.index(x) for x in cur}
        expected = math.log(set_transition_prob(pos, from_set, to_set)) - math.log(set_transition_prob(neg, from_set, to_set))
        for _ in range(2):  # computed, then memoised
            assert scores.step(prev, cur) == pytest.approx(min(max(expected, -3.0), 3.0), abs=1e-12)


def test_demo_positive_trajectories_score_above_negative_ones(tmp_path):
    records = [json.loads(x) for x in demo_corpus_path().read_text(encoding="utf-8").splitlines()]
    path = tmp_path / "transitions.json"
    path.write_text(json.dumps(fit_transition_model(records, PAPER_TAXONOMY)))
    scores = TransitionScores(read_transitions(path), clip=1.0)
    by_label = {True: [], False: []}
    for r in records:
        by_label[r["label"]].append(scores.score([s["states"] for s in r["steps"]])[0])
    assert np.mean(by_label[True]) > 0 > np.mean(by_label[False])


# --- the combination -----------------------------------------------------------------------------

CFG = RewardConfig(transitions="t.json")  # alpha 1, gamma 0.2, delta 0.5, epsilon 0.5


def parts(response, gold, s=0.5, config=CFG):
    return reward_parts(parse_response(response), gold, s, 2, config)


def test_right_answer():
    p = parts("<think>Recall: Paris.\n\nSo Paris.</think>\n<answer>Paris</answer>", ["paris", "Paris, France"])
    assert (p.reward, p.score, p.outcome, p.hit_gap, p.transition, p.n_segments) == (pytest.approx(1.1), 1.0, 1.0, 0.0, 0.5, 2)


def test_hit_gap_gold_in_thinking_only():
    """r = 0.2 * 0.5 - 0.5 = -0.4; the score (dynamic filtering) is the outcome."""
    p = parts("<think>Maybe Paris.\n\nNo, it is Lyon.</think>\n<answer>Lyon</answer>", ["Paris"])
    assert (p.reward, p.score, p.outcome, p.hit_gap) == (pytest.approx(-0.4), 0.0, 0.0, 1.0)


def test_wrong_answer_without_gold_in_thinking():
    p = parts("<think>It is Lyon.</think>\n<answer>Lyon</answer>", ["Paris"], s=-0.25)
    assert (p.reward, p.hit_gap) == (pytest.approx(-0.05), 0.0)


def test_unterminated_thinking():
    """Truncated: no answer -> format penalty; the gold is in the thinking only -> hit gap too."""
    p = parts("<think>The capital is Paris, but let me think more", ["Paris"], s=0.0)
    assert (p.reward, p.outcome, p.hit_gap) == (pytest.approx(-1.0), 0.0, 1.0)
    assert parts("<think>Still thinking", None, s=0.0).reward == pytest.approx(-0.5)


def test_empty_answer_and_no_gold():
    p = parts("<think>Paris.</think>\n<answer> </answer>", None, s=1.0)
    assert (p.reward, p.score, p.outcome) == (pytest.approx(0.2 - 0.5), pytest.approx(-0.3), 0.0)


def test_coefficients_are_applied():
    config = RewardConfig(transitions="t", alpha=2.0, gamma=1.0, delta=3.0, epsilon=4.0)
    assert parts("<think>Maybe Paris.</think><answer>Lyon</answer>", ["Paris"], 0.5, config).reward == pytest.approx(0.5 - 3.0)
    assert parts("<think>Paris", ["Paris"], 0.5, config).reward == pytest.approx(0.5 - 3.0 - 4.0)
    assert parts("<think>x</think>Paris", ["Paris"], 0.5, config).reward == pytest.approx(2.0 + 0.5)


@given(right=st.floats(-1, 1), wrong=st.floats(-1, 1), gap=st.booleans())
def test_default_shaping_never_ranks_a_wrong_answer_above_a_right_one(right, wrong, gap):
    good = parts("<think>a</think><answer>Paris</answer>", ["Paris"], s=right)
    thinking = "Paris?" if gap else "Lyon?"
    bad = parts(f"<think>{thinking}</think><answer>Lyon</answer>", ["Paris"], s=wrong)
    assert good.reward > bad.reward


# --- inputs --------------------------------------------------------------------------------------


def test_split_query():
    prompt = "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert split_query(prompt + "<think>x</think>Paris", prompt) == (prompt, "<think>x</think>Paris")
    truncated = prompt[20:] + "<think>x</think>Paris"  # OpenRLHF cut the prompt from the left
    assert split_query(truncated, prompt) == (prompt[20:], "<think>x</think>Paris")
    assert split_query("unrelated", prompt) == ("", "unrelated")
    assert split_query("all of it", "") == ("", "all of it")


@given(st.lists(st.sampled_from(["<|im_end|>", "<|", "|>", "<", ">", "</s>", "<eos>", "<end_of_turn>", "<think>", "a",
                                  "\n", "<\uff5cend\u2581of\u2581sentence\uff5c>", "|"]), max_size=25).map("".join))
def test_strip_special_tokens_equals_the_regex_on_the_whole_text(text):
    assert strip_special_tokens(text) == re.sub(reward._SPECIAL_TOKEN, "", text)


def test_strip_special_tokens():
    assert strip_special_tokens("<think>a</think>Paris<|im_end|><|endoftext|>") == "<think>a</think>Paris"
    assert strip_special_tokens("Paris<｜end▁of▁sentence｜>") == "Paris"
    assert strip_special_tokens("Paris</s>") == "Paris"
    assert strip_special_tokens("x < y and <answer>z</answer>") == "x < y and <answer>z</answer>"


@pytest.mark.parametrize(
    ("label", "gold", "steps"),
    [
        (None, None, None),
        ("", None, None),
        ("Paris", ["Paris"], None),
        (1927, ["1927"], None),
        (["Paris", "Paname"], ["Paris", "Paname"], None),
        ([], None, None),
        ({"gold": ["Paris"], "id": 3}, ["Paris"], None),
        ({"gold": "Paris", "steps": None}, ["Paris"], None),
        ({"steps": [{"paragraphs": [0], "states": ["framing"]}]}, None, [{"paragraphs": [0], "states": ["framing"]}]),
    ],
)
def test_parse_label(label, gold, steps):
    assert parse_label(label) == (gold, steps)


@pytest.mark.parametrize(
    "label",
    [True, {"gold": [1, 2]}, [None], {"steps": "framing"}, {"steps": [{"states": "x"}]},
     {"steps": [{"states": [1]}]}, float("nan"), ("Paris",), {"gold": {"a": 1}}],
)
def test_parse_label_rejects_garbled_labels(label):
    with pytest.raises(ValueError):
        parse_label(label)


# --- config --------------------------------------------------------------------------------------


def test_config_loads_yaml_and_json_with_paths_relative_to_the_file(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "r.yaml").write_text("transitions: ../t.json\ngamma: 0.3\ntaxonomy: tax.yaml\n")
    config = RewardConfig.load(tmp_path / "sub" / "r.yaml")
    assert config.transitions == str(tmp_path / "sub" / ".." / "t.json") and config.gamma == 0.3
    assert config.taxonomy == str(tmp_path / "sub" / "tax.yaml") and config.alpha == 1.0
    (tmp_path / "r.json").write_text(json.dumps({"transitions": "/abs/t.json", "implicit": {"policy": "p", "ref": "r"},
                                                 "mode": "implicit"}))
    config = RewardConfig.load(tmp_path / "r.json")
    assert config.transitions == "/abs/t.json" and config.implicit.beta == 0.1 and config.implicit.policy == "p"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("transitions: t.json\ngama: 0.1\n", "did you mean gamma"),
        ("gamma: 0.1\n", "missing key(s): transitions"),
        ("transitions: t.json\nmode: prm\n", "mode"),
        ("transitions: t.json\nalpha: .nan\n", "alpha"),
        ("transitions: t.json\ndelta: true\n", "delta"),
        ("transitions: t.json\nclip: 0\n", "clip"),
        ("transitions: t.json\nmode: implicit\n", "implicit section"),
        ("transitions: t.json\nimplicit: {policy: p, ref: r, beta2: 1}\n", "implicit.beta2 (did you mean implicit.beta?)"),
        ("- transitions\n", "mapping"),
        ("transitions: t.json\nimplicit: ckpt/\n", "implicit: expected a section"),
        ("transitions: t.json\nimplicit: {policy: p, ref: r, batch_size: 0}\n", "implicit.batch_size"),
        ("transitions: t.json\nimplicit: {policy: p, ref: r, dtype: int8}\n", "implicit.dtype"),
        ("transitions: t.json\nimplicit: {policy: p}\n", "missing key(s): implicit.ref"),
    ],
)
def test_config_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "r.yaml"
    path.write_text(text)
    with pytest.raises(ValueError, match=None) as e:
        RewardConfig.load(path)
    assert message in str(e.value) and str(path) in str(e.value)

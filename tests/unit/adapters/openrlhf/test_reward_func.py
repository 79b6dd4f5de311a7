"""The reward function file for OpenRLHF's --reward.remote_url: contract shapes, values, the cached
config, labels with states, errors counted (never raised), and a property-based fuzz."""

import logging
import math

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mralign_plugin.adapters.openrlhf import reward_func as rf
from mralign_plugin.annotate.rules import tag_paragraphs
from mralign_plugin.core.reward import TransitionScores
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.reward.scorer import LOG_KEYS

PROMPT = "<|im_start|>user\nWhat is the capital of Australia?<|im_end|>\n<|im_start|>assistant\n"
RIGHT = ("<think>\nThe question asks for the capital of Australia.\n\nI recall that Canberra was built as a "
         "compromise between Sydney and Melbourne.\n\nSo the answer is Canberra.\n</think>\n\n"
         "<answer>Canberra</answer><|im_end|>")
GAP = ("<think>\nThe question asks for the capital of Australia.\n\nCanberra comes to mind, but Sydney is the "
       "largest city.\n\nWait, I think it is Sydney.\n</think>\n\n<answer>Sydney</answer><|im_end|>")


@pytest.fixture
def env(monkeypatch, reward_config):
    monkeypatch.setenv(rf.CONFIG_ENV, str(reward_config))
    monkeypatch.setattr(rf, "_loaded", {})
    return reward_config


def expected_s_trans(reward_config, response: str) -> float:
    scorer = rf._scorer(str(reward_config))
    parsed = parse_response(response)
    states = tag_paragraphs([response[a:b] for a, b in parsed.paragraphs])
    return TransitionScores(scorer.model, 1.0).score(states, not parsed.unterminated)[0]


def test_openrlhf_contract_shapes(env):
    out = rf.reward_func([PROMPT + RIGHT], [PROMPT], [["Canberra"]])
    assert set(out) == {"rewards", "scores", "extra_logs"}
    assert out["rewards"].shape == (1,) and out["rewards"].dtype == torch.float32
    assert out["scores"].shape == (1,)
    assert set(out["extra_logs"]) == set(LOG_KEYS)
    assert all(type(v) is float for v in out["extra_logs"].values())
    # OpenRLHF stores torch.tensor([reward]) per sample: a (1,) tensor for a (1,) reward.
    assert torch.tensor([out["rewards"]]).shape == (1,)


def test_values_right_answer_and_hit_gap(env):
    s_right, s_gap = expected_s_trans(env, RIGHT.removesuffix("<|im_end|>")), expected_s_trans(env, GAP[:-10])
    out = rf.reward_func([PROMPT + RIGHT], [PROMPT], [{"gold": ["Canberra", "Canberra, ACT"]}])
    assert out["rewards"].item() == pytest.approx(1.0 + 0.2 * s_right, abs=1e-6)
    assert out["scores"].item() == 1.0
    logs = out["extra_logs"]
    assert (logs["mralign/outcome"], logs["mralign/hit_gap"], logs["mralign/n_segments"], logs["mralign/errors"]) == (
        1.0, 0.0, 3.0, 0.0)
    assert logs["mralign/transition"] == pytest.approx(s_right, abs=1e-12)
    out = rf.reward_func([PROMPT + GAP], [PROMPT], ["Canberra"])
    assert out["rewards"].item() == pytest.approx(0.2 * s_gap - 0.5, abs=1e-6)
    assert out["extra_logs"]["mralign/hit_gap"] == 1.0 and out["scores"].item() == 0.0


def test_no_label_scores_the_process_only(env):
    out = rf.reward_func([PROMPT + RIGHT], [PROMPT], [""])  # OpenRLHF's label without --data.label_key
    s = expected_s_trans(env, RIGHT[:-10])
    assert out["rewards"].item() == pytest.approx(0.2 * s, abs=1e-6)
    assert out["scores"].item() == pytest.approx(0.2 * s, abs=1e-6)


def test_states_from_the_label_replace_the_tagger(env):
    steps = [{"paragraphs": [0], "states": ["framing"]}, {"paragraphs": [1], "states": ["retrieval", "chaining"]},
             {"paragraphs": [2], "states": ["summarization"]}]
    out = rf.reward_func([PROMPT + RIGHT], [PROMPT], [{"gold": "Canberra", "steps": steps}])
    scorer = rf._scorer(str(env))
    expected = TransitionScores(scorer.model, 1.0).score([s["states"] for s in steps])[0]
    assert out["extra_logs"]["mralign/transition"] == pytest.approx(expected, abs=1e-12)
    bad = rf.reward_func([PROMPT + RIGHT], [PROMPT], [{"steps": [{"paragraphs": [0], "states": ["guessing"]}]}])
    assert bad["rewards"].item() == 0.0 and bad["extra_logs"]["mralign/errors"] == 1.0


def test_a_failing_sample_scores_zero_and_is_counted(env, caplog):
    with caplog.at_level(logging.WARNING, logger="mralign.reward"):
        out = rf.reward_func([PROMPT + RIGHT, 42, PROMPT + GAP], [PROMPT, PROMPT, PROMPT], ["Canberra", "x", True])
    assert out["rewards"].shape == (3,)
    assert out["rewards"][1].item() == 0.0 and out["rewards"][2].item() == 0.0 and out["rewards"][0].item() > 0.9
    assert out["extra_logs"]["mralign/errors"] == 2.0
    assert "query: expected a string" in caplog.text and "label" in caplog.text


def test_config_is_loaded_once_per_process(env, monkeypatch):
    calls = []
    real = rf.load_scorer
    monkeypatch.setattr(rf, "load_scorer", lambda path: calls.append(path) or real(path))
    for _ in range(3):
        rf.reward_func([PROMPT + RIGHT], [PROMPT], ["Canberra"])
    assert calls == [str(env)]


@pytest.mark.parametrize("setting", [None, "missing.yaml", "broken"])
def test_a_missing_or_broken_config_gives_zero_rewards_logged_once(monkeypatch, tmp_path, caplog, setting):
    monkeypatch.setattr(rf, "_loaded", {})
    if setting is None:
        monkeypatch.delenv(rf.CONFIG_ENV, raising=False)
    elif setting == "broken":
        (tmp_path / "r.yaml").write_text("transitions: nowhere.json\n")
        monkeypatch.setenv(rf.CONFIG_ENV, str(tmp_path / "r.yaml"))
    else:
        monkeypatch.setenv(rf.CONFIG_ENV, str(tmp_path / setting))
    with caplog.at_level(logging.ERROR, logger="mralign.reward"):
        for _ in range(3):
            out = rf.reward_func([PROMPT + RIGHT, PROMPT], [PROMPT, PROMPT], ["Canberra", None])
            assert out["rewards"].tolist() == [0.0, 0.0] and out["extra_logs"]["mralign/errors"] == 2.0
    assert len([r for r in caplog.records if r.levelno == logging.ERROR]) == 1
    assert rf.CONFIG_ENV in caplog.text


# --- fuzz: never raises, always finite -----------------------------------------------------------

PIECES = ["<think>", "</think>", "<answer>", "</answer>", "\n\n", "\r\n\r\n", "<|im_end|>", "<｜end▁of▁sentence｜>",
          "Canberra", "the", "Wait, ", "? ", "I recall ", "So the answer is ", "\x00", "\ud800", " ", "<", "|>"]
ANY_CHAR = st.characters(exclude_categories=())  # surrogates included
text = st.lists(st.sampled_from(PIECES) | st.text(ANY_CHAR, max_size=8), max_size=24).map("".join)
json_value = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(ANY_CHAR, max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["gold", "steps", "states", "x"]), inner,
                                                                max_size=3),
    max_leaves=4,
)
state = st.sampled_from([*PAPER_TAXONOMY.names, "guessing", "<start>", ""])
label = (
    json_value
    | st.lists(st.sampled_from(["Canberra", "the", "", "Sydney, NSW"]), max_size=3)
    | st.fixed_dictionaries({"gold": json_value | st.sampled_from(["Canberra", ["Canberra", "ACT"]]),
                             "steps": st.none() | st.lists(st.fixed_dictionaries(
                                 {"paragraphs": st.sampled_from([[0], [1, 2], [], None, [-1]]),
                                  "states": st.lists(state, max_size=3)}), max_size=4)})
)
prompt = st.sampled_from([PROMPT, PROMPT[30:], "", "<think>", None, 3])


def assert_finite(out, n):
    assert out["rewards"].shape == (n,) and out["scores"].shape == (n,)
    assert torch.isfinite(out["rewards"]).all() and torch.isfinite(out["scores"]).all()
    assert set(out["extra_logs"]) == set(LOG_KEYS)
    assert all(isinstance(v, float) and math.isfinite(v) for v in out["extra_logs"].values())


@settings(max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                     HealthCheck.too_slow])
@given(prompt=prompt, response=text, label=label, prefix=st.booleans(), garbage=st.none() | st.integers() | st.binary())
def test_fuzz_never_raises_and_is_finite(env, prompt, response, label, prefix, garbage):
    """Arbitrary text (tags, special tokens, surrogates), prompts, labels and non-string queries."""
    query = (PROMPT if prefix else "") + response
    assert_finite(rf.reward_func([query], [prompt], [label]), 1)
    assert_finite(rf.reward_func([query, garbage], [prompt, prompt], [label, garbage]), 2)


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(unit=st.lists(st.sampled_from(PIECES), min_size=1, max_size=8).map("".join), size=st.integers(20_000, 200_000),
       label=label)
def test_fuzz_huge_inputs(env, unit, size, label):
    thinking = (unit * (size // len(unit) + 1))[:size]
    response = f"<think>\nI recall Canberra.\n\n{thinking}\n</think>\n<answer>Canberra</answer>"
    assert_finite(rf.reward_func([PROMPT + response], [PROMPT], [label]), 1)


def test_a_megabyte_rollout(env):
    thinking = "\n\n".join([RIGHT.split("</think>")[0].removeprefix("<think>").strip()] * 4000)[:1_000_000]
    out = rf.reward_func([PROMPT + f"<think>\n{thinking}\n</think>\n<answer>Canberra</answer>"], [PROMPT], ["Canberra"])
    assert_finite(out, 1)
    assert out["extra_logs"]["mralign/errors"] == 0.0 and out["extra_logs"]["mralign/n_segments"] > 10_000


def test_concurrent_first_calls_load_the_config_once(env, monkeypatch):
    """OpenRLHF runs reward_func in worker threads (asyncio.to_thread): the first calls race to load."""
    from concurrent.futures import ThreadPoolExecutor

    calls = []
    real = rf.load_scorer
    monkeypatch.setattr(rf, "load_scorer", lambda path: calls.append(path) or real(path))
    with ThreadPoolExecutor(8) as pool:
        outs = list(pool.map(lambda _: rf.reward_func([PROMPT + RIGHT], [PROMPT], ["Canberra"]), range(32)))
    assert calls == [str(env)] and all(o["rewards"].item() == outs[0]["rewards"].item() for o in outs)

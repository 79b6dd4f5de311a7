"""Implicit mode (Eq. 9 of a trained policy against its reference, w_t from W⁺) on tiny random Llamas on CPU:
zero when policy == reference, the token alignment against a direct computation, batch invariance, and
the whole reward through the reward file's scorer."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from mralign_plugin.adapters.openrlhf.reward_contract import score_reply
from mralign_plugin.annotate.rules import annotate_rules
from mralign_plugin.core.formats import read_transitions, write_transitions
from mralign_plugin.core.reward import ImplicitConfig, RewardConfig
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.core.transitions import fit_transition_model
from mralign_plugin.core.weights import step_weights, token_weights
from mralign_plugin.data import demo_corpus_path
from mralign_plugin.reward.implicit import ImplicitScorer
from mralign_plugin.reward.scorer import RewardScorer

pytestmark = pytest.mark.integration

PROMPT = "<|im_start|>user\nWhat is the capital of France?<|im_end|>\n<|im_start|>assistant\n"
RESPONSES = [
    "<think>\nThe question asks for a capital.\n\nI recall Paris.\n\nSo the answer is Paris.\n</think>\n<answer>Paris</answer>",
    "<think>\nLet me think.\n\nWait, maybe Lyon? No.\n</think>\n<answer>Paris</answer>",
    "<think>\nIt is Berlin.\n</think>\n<answer>Berlin</answer>",
    "Paris",
    "<think>\nStill thinking about the capital",
]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny reference and a policy = reference + noise (same tokenizer), and the demo transition model."""
    from transformers import AutoModelForCausalLM

    from mralign_plugin.tiny_model import build_tiny_llama

    tmp = tmp_path_factory.mktemp("implicit")
    ref = build_tiny_llama(tmp / "ref", seed=0)
    policy = AutoModelForCausalLM.from_pretrained(ref)
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(1)
        for p in policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    policy.save_pretrained(tmp / "policy")
    for name in ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "chat_template.jinja"):
        if (ref / name).exists():
            (tmp / "policy" / name).write_bytes((ref / name).read_bytes())
    records = [json.loads(x) for x in demo_corpus_path().read_text(encoding="utf-8").splitlines()]
    write_transitions(tmp / "transitions.json", fit_transition_model(records, PAPER_TAXONOMY))
    return tmp / "policy", ref, tmp / "transitions.json"


def steps_of(response):
    return annotate_rules(response)


def direct_logratios(policy_dir, ref_dir, prompt, response):
    """Per-response-token log π − log π_ref, computed independently (unbatched, no padding)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(policy_dir)
    p_ids = tok(prompt, add_special_tokens=False)["input_ids"]
    r_ids = tok(response, add_special_tokens=False)["input_ids"]
    ids = torch.tensor([p_ids + r_ids])
    out = []
    for path in (policy_dir, ref_dir):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
        with torch.no_grad():
            logps = torch.log_softmax(model(ids).logits[0, :-1].float(), -1)  # (T-1, V)
        out.append(logps[torch.arange(len(p_ids) - 1, ids.shape[1] - 1), ids[0, len(p_ids):]])  # (n_r,)
    return (out[0] - out[1]).numpy()


def test_policy_equal_to_reference_gives_zero(models):
    _, ref, transitions = models
    scorer = ImplicitScorer(ImplicitConfig(policy=str(ref), ref=str(ref), device="cpu"), read_transitions(transitions))
    values = scorer.process_rewards([PROMPT] * len(RESPONSES), RESPONSES, [steps_of(r) for r in RESPONSES])
    assert values == pytest.approx([0.0] * len(RESPONSES), abs=1e-6)


def test_matches_a_direct_computation_with_transition_weights(models):
    policy, ref, transitions = models
    model = read_transitions(transitions)
    scorer = ImplicitScorer(ImplicitConfig(policy=str(policy), ref=str(ref), beta=0.5, batch_size=3, device="cpu"),
                            model)
    steps = [steps_of(r) for r in RESPONSES]
    values = scorer.process_rewards([PROMPT] * len(RESPONSES), RESPONSES, steps)
    for response, response_steps, value in zip(RESPONSES, steps, values, strict=True):
        states = [[PAPER_TAXONOMY.index(s) for s in step["states"]] for step in response_steps]
        w = step_weights(states, model.trans_pos, model.trans_all, *model.clip)  # W⁺ (Eq. 10, positive class)
        _, omega = token_weights(response, response_steps, w, scorer.tokenizer)
        expected = 0.5 * float(np.sum(omega * direct_logratios(policy, ref, PROMPT, response)))
        assert value == pytest.approx(expected, rel=1e-4, abs=1e-5)
    assert any(abs(v) > 1e-3 for v in values)
    uniform = dataclasses.replace(model, trans_pos=model.trans_all)  # W ≡ 1: plain implicit reward
    plain = ImplicitScorer(scorer.config, uniform).process_rewards([PROMPT], RESPONSES[:1], steps[:1])[0]
    assert plain == pytest.approx(0.5 * direct_logratios(policy, ref, PROMPT, RESPONSES[0]).sum(), rel=1e-4, abs=1e-5)


def test_batches_give_the_same_values_as_single_rollouts(models):
    policy, ref, transitions = models
    model = read_transitions(transitions)
    steps = [steps_of(r) for r in RESPONSES]
    prompts = [PROMPT, PROMPT[10:], "", PROMPT, PROMPT]
    batched = ImplicitScorer(ImplicitConfig(policy=str(policy), ref=str(ref), batch_size=8, device="cpu"), model)
    single = ImplicitScorer(ImplicitConfig(policy=str(policy), ref=str(ref), batch_size=1, device="cpu"), model)
    assert batched.process_rewards(prompts, RESPONSES, steps) == pytest.approx(
        single.process_rewards(prompts, RESPONSES, steps), abs=1e-5)


def test_reward_in_implicit_mode(models):
    policy, ref, transitions = models
    config = RewardConfig(transitions=str(transitions), mode="implicit",
                          implicit={"policy": str(policy), "ref": str(ref), "batch_size": 2, "device": "cpu"})
    scorer = RewardScorer(config)
    queries = [PROMPT + r + "<|im_end|>" for r in RESPONSES] + [PROMPT + RESPONSES[0]]
    labels = [["Paris"]] * len(RESPONSES) + [{"gold": "Paris", "steps": [{"paragraphs": [0, 1], "states": ["framing"]},
                                                                            {"paragraphs": [2], "states": ["summarization"]}]}]
    parts = scorer.score_parts(queries, [PROMPT] * len(queries), labels)
    assert all(p.error is None for p in parts)
    direct = scorer.implicit.process_rewards([PROMPT] * len(RESPONSES), RESPONSES, [steps_of(r) for r in RESPONSES])
    assert [p.transition for p in parts[:-1]] == pytest.approx(direct, abs=1e-6)
    assert parts[0].reward == pytest.approx(1.0 + 0.2 * direct[0], abs=1e-6)
    assert parts[-1].transition != pytest.approx(direct[0], abs=1e-9)  # the label's steps set the weights
    bad = {"gold": "Paris", "steps": [{"paragraphs": [7], "states": ["framing"]}]}  # no paragraph 7
    parts = scorer.score_parts([PROMPT + RESPONSES[0]] * 2, [PROMPT] * 2, [bad, "Paris"])
    assert "paragraphs" in parts[0].error and parts[1].error is None and parts[1].transition == pytest.approx(direct[0])
    reply = score_reply(scorer, [PROMPT + RESPONSES[0]], [PROMPT], [42.5])
    assert reply["extra_logs"]["mralign/errors"] == 0.0 and np.isfinite(reply["rewards"]).all()

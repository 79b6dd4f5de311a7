"""MR-ALIGN's reward inside TRL's GRPOTrainer (adapters/trl/grpo.py): the reward-function contract TRL 1.16
calls it with, bad input, and real online RL runs on the CPU (a tiny random Llama here; SmolLM2-135M, slow)."""

import logging
import math

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("trl")

from mralign_plugin.adapters.trl.grpo import MRAlignReward, completion_text  # noqa: E402

RIGHT = "<think>\nThe question asks for a capital.\n\nI recall Paris is the capital of France.\n</think>\n<answer>Paris</answer>"
WRONG = "<think>\nThe question asks for a capital.\n\nI recall Paris, but I will say Lyon.\n</think>\n<answer>Lyon</answer>"


def call_as_trl(reward, prompts, completions, **columns):
    """The keyword arguments ``GRPOTrainer._calculate_rewards`` passes (TRL 1.16)."""
    metrics = {}
    rewards = reward(prompts=prompts, completions=completions, completion_ids=[[1, 2]] * len(completions),
                     trainer_state=None, log_extra=lambda column, values: None,
                     log_metric=lambda name, value: metrics.setdefault(name, value), **columns)
    return rewards, metrics


def test_contract_plain_and_conversational(reward_config):
    reward = MRAlignReward(reward_config)
    rewards, metrics = call_as_trl(reward, ["Q?", "Q?"], [RIGHT, WRONG], gold=["Paris", "Paris"])
    assert len(rewards) == 2 and all(isinstance(r, float) for r in rewards) and rewards[0] > rewards[1]
    assert metrics["mralign/outcome"] == 0.5 and metrics["mralign/hit_gap"] == 0.5 and metrics["mralign/errors"] == 0
    chat, _ = call_as_trl(reward, [[{"role": "user", "content": "Q?"}]] * 2,
                          [[{"role": "assistant", "content": RIGHT}], [{"role": "assistant", "content": WRONG}]],
                          gold=[{"gold": ["Paris"]}, ["Paris", "paris"]])
    assert chat == pytest.approx(rewards, abs=1e-12)
    assert reward.__name__ == "mralign"  # TRL logs rewards/mralign/mean
    assert completion_text([{"role": "assistant", "content": "a"}, {"role": "tool", "content": "x"}]) == "a"


def test_bad_rollouts_get_zero_are_counted_and_logged_and_never_raise(reward_config, caplog):
    reward = MRAlignReward(reward_config)
    with caplog.at_level(logging.WARNING, logger="mralign.reward"):
        rewards, metrics = call_as_trl(reward, ["Q?"] * 3, [RIGHT, 42, WRONG], gold=["Paris", "Paris", {"gold": 3j}])
    assert rewards[0] > 0 and rewards[1] == 0.0 and rewards[2] == 0.0
    assert metrics["mralign/errors"] == 2 and reward.scorer.n_errors == 2
    assert "a sample failed" in caplog.text
    assert reward(prompts=None, completions=None) == []  # not even a list: nothing to score, no exception


def test_unloadable_config_stops_at_construction_naming_the_file(tmp_path):
    with pytest.raises(ValueError, match="missing.yaml"):
        MRAlignReward(tmp_path / "missing.yaml")
    (tmp_path / "transitions.json").write_text("{not json")
    (tmp_path / "reward.yaml").write_text("transitions: transitions.json\n")
    with pytest.raises(ValueError, match="transitions.json"):
        MRAlignReward(tmp_path / "reward.yaml")


QUESTIONS = [{"question": "What is the capital of France?", "gold": ["Paris"]},
             {"question": "What is the capital of Italy?", "gold": ["Rome"]},
             {"question": "What is the chemical symbol of gold?", "gold": ["Au"]},
             {"question": "What is the capital of Japan?", "gold": ["Tokyo"]}]


def grpo_run(model_path, reward_config, out, steps, max_completion_length):
    """A few real GRPOTrainer steps with MR-ALIGN's reward (generation with transformers on the CPU)."""
    import torch
    from transformers import AutoModelForCausalLM

    from mralign_plugin.adapters.trl.grpo import train_grpo

    before = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32).state_dict()
    trainer, logs = train_grpo(str(model_path), reward_config, QUESTIONS, out, max_steps=steps,
                               max_completion_length=max_completion_length, learning_rate=1e-4)
    changed = sum(not torch.equal(before[k], v) for k, v in trainer.model.state_dict().items())
    return logs, changed


def test_grpo_online_run_on_the_tiny_model(reward_config, tmp_path):
    from mralign_plugin.tiny_model import build_tiny_llama

    logs, changed = grpo_run(build_tiny_llama(tmp_path / "tiny", seed=0), reward_config, tmp_path / "run", 2, 24)
    assert len(logs) == 2 and all(math.isfinite(e["loss"]) for e in logs)
    assert all("rewards/mralign/mean" in e and "mralign/errors" in e for e in logs)
    assert all(e["mralign/errors"] == 0 for e in logs)  # random text is scored (low), not failed
    assert changed > 0


@pytest.mark.slow
def test_grpo_online_run_on_smollm2(reward_config, tmp_path):
    pytest.importorskip("gguf")
    from mralign_plugin.smollm2 import smollm2_path

    logs, changed = grpo_run(smollm2_path(), reward_config, tmp_path / "run", 2, 32)
    assert len(logs) == 2 and all(math.isfinite(e["loss"]) for e in logs) and changed > 0
    assert all(e["mralign/errors"] == 0 for e in logs)

"""MR-ALIGN's reward through verl's own reward path (verl 0.9.1, CPU): ``compute_score`` loaded as verl loads a
``reward.custom_reward_function``, and the ``mralign_dense`` manager built by verl's ``load_reward_manager``,
both run by verl's ``RewardLoopWorker.compute_score_batch`` on a real ``DataProto``; the ``rm_scores`` tensor
built as ``RewardLoopManager.compute_rm_score`` builds it (the manager class's ``assemble_rm_scores``). Only Ray's
remote call is left out (the worker class is used directly: ``ray.remote`` only wraps it); nothing is stubbed.
"""

import logging

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("verl")
torch = pytest.importorskip("torch")

from omegaconf import OmegaConf  # noqa: E402
from verl.experimental.reward_loop import RewardLoopWorker  # noqa: E402
from verl.trainer.ppo.reward import get_custom_reward_fn, load_reward_manager, resolve_reward_manager_cls  # noqa: E402
from verl_batch import rollout_batch  # noqa: E402

from mralign_plugin.adapters.verl import CONFIG_ENV, compute_score_path, dense_manager_path  # noqa: E402

RIGHT = ("<think>\nThe question asks for the capital of France.\n\nI recall that Paris is the capital.\n\n"
         "Double-check: Paris is right.\n</think>\n<answer>Paris</answer>")
WRONG = "<think>\nThe question asks for a capital.\n\nI recall Paris, but I say Lyon.\n</think>\n<answer>Lyon</answer>"
NO_THINK = "Rome"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


@pytest.fixture
def env(reward_config, monkeypatch):
    monkeypatch.setenv(CONFIG_ENV, str(reward_config))


def verl_config(tiny, manager: str):
    """The keys verl's reward loop reads (names as in verl 0.9.1's ppo_trainer.yaml)."""
    reward_manager = {"source": "register", "name": "naive", "module": {"path": None, "name": "custom_reward_manager"}}
    custom = {"path": None, "name": "compute_score"}
    if manager == "scalar":
        custom["path"] = compute_score_path()
    elif manager == "dense-importlib":
        reward_manager = {"source": "importlib", "name": "MRAlignDenseRewardManager",
                          "module": {"path": dense_manager_path(), "name": "custom_reward_manager"}}
    else:  # registered by name through the verl.plugins entry point
        reward_manager["name"] = "mralign_dense"
    return OmegaConf.create({
        "actor_rollout_ref": {"model": {"path": str(tiny), "tokenizer_path": None}},
        "reward": {"custom_reward_function": custom, "reward_manager": reward_manager, "sandbox_fusion": None,
                   "reward_model": {"enable": False, "model_path": None}},
    })


def rollouts(tokenizer, responses, labels):
    return rollout_batch(tokenizer, ["Question?"] * len(responses), responses, labels, prompt_len=8, response_len=96)


def run_worker(config, data):
    """What RewardLoopManager.compute_rm_score does, without the Ray hop: the worker's batch, then assembly."""
    worker = RewardLoopWorker(config)
    outputs = worker.loop.run_until_complete(worker.compute_score_batch(data))  # the loop its manager runs on
    scores = [out["reward_score"] for out in outputs]
    return worker, outputs, resolve_reward_manager_cls(config).assemble_rm_scores(data, scores)


def test_compute_score_through_verls_reward_loop(tiny, env):
    from transformers import AutoTokenizer

    data = rollouts(AutoTokenizer.from_pretrained(tiny), [RIGHT, WRONG, NO_THINK], ["Paris", ["Paris"], "Rome"])
    _, outputs, rm_scores = run_worker(verl_config(tiny, "scalar"), data)
    scores = [out["reward_score"] for out in outputs]
    assert scores[0] > scores[1] and scores[2] > 0  # right > wrong (hit gap); a right bare answer still counts
    assert outputs[1]["reward_extra_info"]["hit_gap"] == 1.0 and outputs[0]["reward_extra_info"]["error"] == 0.0
    last = data.batch["attention_mask"][:, 8:].sum(1) - 1
    assert torch.allclose(rm_scores[torch.arange(3), last], torch.tensor(scores))  # scalar on the last token
    assert torch.count_nonzero(rm_scores) == 3


@pytest.mark.parametrize("manager", ["dense-register", "dense-importlib"])
def test_dense_manager_sums_to_the_scalar_reward(tiny, env, manager):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    data = rollouts(tokenizer, [RIGHT, WRONG, NO_THINK], ["Paris", {"gold": "Paris"}, "Rome"])
    _, scalar_out, _ = run_worker(verl_config(tiny, "scalar"), data)
    worker, dense_out, rm_scores = run_worker(verl_config(tiny, manager), data)
    assert type(worker.reward_manager).__name__ == "MRAlignDenseRewardManager"
    scalar = torch.tensor([out["reward_score"] for out in scalar_out])
    assert torch.allclose(rm_scores.sum(-1), scalar, atol=1e-6)  # dense sum == scalar, per rollout
    assert worker.reward_manager.n_approximate == 0  # characters mapped onto the exact tokens
    # RIGHT: three segments, each credited on its own last token, plus the final token
    positions = torch.nonzero(rm_scores[0]).flatten().tolist()
    assert len(positions) == 4
    ids = data.batch["responses"][0].tolist()
    for pos, text in zip(positions[:3], ("capital of France.", "the capital.", "is right."), strict=True):
        assert tokenizer.decode(ids[: pos + 1], skip_special_tokens=True).endswith(text)
    last = int(data.batch["attention_mask"][0, 8:].sum()) - 1
    assert positions[-1] == last
    assert torch.count_nonzero(rm_scores[2]) == 1  # no thinking: everything on the final token


def test_bad_rollouts_score_zero_counted_and_logged(tiny, env, caplog):
    from transformers import AutoTokenizer

    data = rollouts(AutoTokenizer.from_pretrained(tiny), [RIGHT, RIGHT], ["Paris", {"gold": 3j}])
    with caplog.at_level(logging.WARNING, logger="mralign.reward"):
        worker, outputs, rm_scores = run_worker(verl_config(tiny, "dense-register"), data)
    assert outputs[1]["reward_extra_info"]["mralign/error"] == 1.0 and rm_scores[1].abs().sum() == 0
    assert rm_scores[0].sum() > 0 and worker.reward_manager.scorer.n_errors == 1
    assert "a sample failed" in caplog.text
    _, outputs, _ = run_worker(verl_config(tiny, "scalar"), data)
    assert outputs[1]["reward_score"] == 0.0 and outputs[1]["reward_extra_info"]["error"] == 1.0


@pytest.mark.parametrize("manager", ["scalar", "dense-register"])
def test_unloadable_config_stops_at_start_naming_the_file(tiny, tmp_path, monkeypatch, manager):
    from transformers import AutoTokenizer

    """verl builds the manager (or loads the compute_score file) when its reward workers start: that is where a
    bad config stops the run. verl wraps a file's load error in its own RuntimeError; ours is its cause."""
    config = verl_config(tiny, manager)
    tokenizer = AutoTokenizer.from_pretrained(tiny)
    (tmp_path / "transitions.json").write_text("{not json")
    (tmp_path / "reward.yaml").write_text("transitions: transitions.json\n")
    for env_value, named in ((tmp_path / "missing.yaml", "missing.yaml"), (tmp_path / "reward.yaml", "transitions.json")):
        monkeypatch.setenv(CONFIG_ENV, str(env_value))
        with pytest.raises(RuntimeError) as failure:
            load_reward_manager(config, tokenizer) if manager != "scalar" else get_custom_reward_fn(config)
        assert named in f"{failure.value} {failure.value.__cause__}"


def test_characters_map_onto_their_tokens_across_multibyte_characters(tiny, env, gpt2_tokenizer):
    """GPT-2's byte-level BPE splits é, — and 東 into byte tokens whose lone decodes are U+FFFD: the manager
    decodes each run as one (its characters on its last token), so the characters where segments end
    (punctuation) still land on the token that holds them, and the positions never go back."""
    gpt2_tokenizer.pad_token = gpt2_tokenizer.eos_token
    manager = load_reward_manager(verl_config(tiny, "dense-register"), gpt2_tokenizer)
    text = "<think>\nCafé — 東京 is far.\n\nNaïve résumé: 東京.\n</think>\n<answer>東京</answer>"
    ids = torch.tensor(gpt2_tokenizer(text, add_special_tokens=False)["input_ids"]).numpy()
    assert manager.fragments[ids].any()  # the case this test is about
    positions = manager.token_positions(ids, text, list(range(len(text))))
    assert manager.n_approximate == 0 and positions == sorted(positions)
    for c in [i for i, ch in enumerate(text) if ch in ".:>"]:  # where segments end
        upto = gpt2_tokenizer.decode(ids[: positions[c] + 1], clean_up_tokenization_spaces=False)
        before = gpt2_tokenizer.decode(ids[: positions[c]], clean_up_tokenization_spaces=False)
        assert len(upto) > c >= len(before) and upto[c] == text[c], (c, positions[c])


def test_dense_reward_crosses_ray_and_verls_streaming_path_as_its_total():
    """verl's agent loop pickles ``reward_score`` back from the reward worker and builds ``torch.tensor(scores)``
    to put it on the last token: a DenseReward survives both as the scalar total, its placement kept."""
    import pickle

    from mralign_plugin.adapters.verl.dense import DenseReward

    score = pickle.loads(pickle.dumps(DenseReward(0.75, ((3, 0.25), (9, 0.5)))))
    assert score.token_rewards == ((3, 0.25), (9, 0.5))
    assert torch.tensor([score, 1.0], dtype=torch.float32).tolist() == [0.75, 1.0]

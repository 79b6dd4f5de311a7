"""Contract with the real OpenRLHF 0.11.2: its own SingleTurnAgentExecutor loads the reward file that
`mralign reward-path` prints (and, separately, calls `mralign serve-reward` through its remote-reward
HTTP client), scores a generated sample with a dict label, and its SamplesGenerator turns the result
into an Experience, then a batch. vLLM has no CPU build: the child process that runs OpenRLHF stubs the
`vllm` modules its imports name (this test only) and answers generation with a fixed response."""

import json
import os
import socket
import subprocess
import sys
import time

import pytest

from mralign_plugin.adapters.openrlhf.reward_contract import score_reply
from mralign_plugin.reward.scorer import LOG_KEYS, load_scorer

pytestmark = pytest.mark.integration
pytest.importorskip("openrlhf")
pytest.importorskip("aiohttp")

RESPONSE = ("<think>\nThe question asks for the capital of Australia.\n\nCanberra comes to mind, but Sydney is "
            "the largest city.\n\nWait, Sydney is better known, so I will say Sydney.\n</think>\n\n"
            "<answer>Sydney</answer>")

# Runs in a child process: OpenRLHF's code path for one rollout, per reward endpoint given in argv.
ROLLOUT = r'''
import asyncio, importlib.machinery, json, sys, types

def stub(name, **attrs):  # vLLM cannot be installed without CUDA; OpenRLHF's rollout modules import it
    module = types.ModuleType(name)
    module.__spec__ = importlib.machinery.ModuleSpec(name, None)
    module.__dict__.update(attrs)
    sys.modules[name] = module

stub("vllm", SamplingParams=type("SamplingParams", (), {}), __version__="0.29.0")
stub("vllm.inputs", TokensPrompt=dict)
stub("vllm.utils", random_uuid=lambda: "0")

from mralign_plugin.adapters.openrlhf import cpu
cpu.apply()  # flash_attn helpers for openrlhf.models, imported by the trainer package
from openrlhf.trainer.ppo_utils.experience import make_experience_batch
from openrlhf.trainer.ppo_utils.samples_generator import SamplesGenerator
from openrlhf.utils.agent import SingleTurnAgentExecutor
from mralign_plugin.tiny_model import build_tokenizer

args = json.loads(sys.argv[1])
tokenizer = build_tokenizer(seed=0)
prompt = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of Australia?"}],
                                       tokenize=False, add_generation_prompt=True)
response_ids = tokenizer(args["response"] + tokenizer.eos_token, add_special_tokens=False)["input_ids"]

class Engine:  # answers every request with the fixed response, as vLLM's AsyncLLMEngine would
    async def generate(self, prompt_token_ids, sampling_params, multi_modal_data=None):
        out = types.SimpleNamespace(token_ids=response_ids, text=tokenizer.decode(response_ids),
                                    finish_reason="stop", logprobs=None)
        return types.SimpleNamespace(outputs=[out])

results = []
for url in args["urls"]:
    executor = SingleTurnAgentExecutor(url)
    params = types.SimpleNamespace(max_tokens=512, logprobs=None)
    out = asyncio.run(executor.execute(prompt, args["label"], params, 1024, tokenizer, Engine()))
    experiences = [SamplesGenerator._process_response_into_experience(None, out, max_len=1024) for _ in range(2)]
    batch = make_experience_batch(experiences)
    results.append({
        "query": tokenizer.decode(out["observation_tokens"], skip_special_tokens=False),
        "prompt": prompt,
        "custom_func": executor.reward_func is not None,
        "reward": float(experiences[0].rewards.flatten()[0]),
        "score": float(experiences[0].scores.flatten()[0]),
        "reward_shape": list(experiences[0].rewards.shape),
        "batch_rewards_shape": list(batch.rewards.shape),
        "info": {k: float(v.flatten()[0]) for k, v in experiences[0].info.items() if k.startswith("mralign/")},
    })
print("RESULTS " + json.dumps(results))
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def server(reward_config):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "mralign_plugin.cli", "serve-reward", "--config", str(reward_config),
                             "--port", str(port)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            assert proc.poll() is None and time.time() < deadline, proc.stdout.read() if proc.poll() is not None else ""
            time.sleep(0.1)
    yield f"http://127.0.0.1:{port}/get_reward"
    proc.terminate()
    assert proc.wait(timeout=60) in (0, -15)  # uvicorn re-raises SIGTERM after its graceful shutdown


def test_openrlhf_scores_a_rollout_through_the_reward_file_and_the_server(reward_config, server):
    reward_path = subprocess.run([sys.executable, "-m", "mralign_plugin.cli", "reward-path"], capture_output=True,
                                 text=True, check=True).stdout.strip()
    label = {"gold": ["Canberra"], "source": "demo"}
    env = {**os.environ, "MRALIGN_REWARD_CONFIG": str(reward_config), "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run([sys.executable, "-c", ROLLOUT, json.dumps({"urls": [reward_path, server], "label": label,
                                                                      "response": RESPONSE})],
                          capture_output=True, text=True, env=env, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    line = next(x for x in done.stdout.splitlines() if x.startswith("RESULTS "))
    by_file, by_http = json.loads(line[len("RESULTS "):])

    # What our scorer gives for the query OpenRLHF decoded (special tokens kept): a hit-gap rollout.
    expected = score_reply(load_scorer(reward_config), [by_file["query"]], [by_file["prompt"]], [label])
    assert by_file["query"].startswith(by_file["prompt"]) and by_file["query"].endswith("<|im_end|>")
    assert expected["extra_logs"]["mralign/hit_gap"] == 1.0 and expected["extra_logs"]["mralign/errors"] == 0.0
    assert by_file["custom_func"] and not by_http["custom_func"]
    for result in (by_file, by_http):
        assert result["reward"] == pytest.approx(expected["rewards"][0], abs=1e-6)
        assert result["score"] == pytest.approx(expected["scores"][0], abs=1e-6)
        assert set(result["info"]) == set(LOG_KEYS)
        assert result["info"] == pytest.approx(expected["extra_logs"], abs=1e-6)
    # The file returns a (1,) tensor per call, as OpenRLHF's own example; the server a JSON list.
    assert by_file["reward_shape"] == [1] and by_file["batch_rewards_shape"][0] == 2
    assert by_http["reward_shape"] == [1, 1] and by_http["batch_rewards_shape"][0] == 2

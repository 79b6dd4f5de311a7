"""The reward server's HTTP contract in-process (Starlette TestClient, no sockets): replies, 4xx on
bad requests, the body limit, health, and that it keeps serving after errors."""

import json
import warnings

import pytest

from mralign_plugin.adapters.openrlhf.reward_contract import score_reply
from mralign_plugin.adapters.openrlhf.reward_server import REWARD_PATH, create_app
from mralign_plugin.core.formats import write_transitions
from mralign_plugin.core.reward import RewardConfig
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.core.transitions import fit_transition_model
from mralign_plugin.data import demo_corpus_path
from mralign_plugin.reward.scorer import LOG_KEYS, RewardScorer

with warnings.catch_warnings():  # starlette 1.x prefers httpx2 for its TestClient; httpx works the same here
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

PROMPT = "<|im_start|>user\nCapital of Australia?<|im_end|>\n<|im_start|>assistant\n"
RESPONSE = "<think>\nI recall Canberra.\n\nSo the answer is Canberra.\n</think>\n<answer>Canberra</answer><|im_end|>"


@pytest.fixture(scope="module")
def scorer(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("server")
    records = [json.loads(x) for x in demo_corpus_path().read_text(encoding="utf-8").splitlines()]
    write_transitions(tmp / "transitions.json", fit_transition_model(records, PAPER_TAXONOMY))
    return RewardScorer(RewardConfig(transitions=str(tmp / "transitions.json")))


@pytest.fixture
def client(scorer):
    with TestClient(create_app(scorer, max_body_bytes=4096)) as c:  # runs the lifespan (the batch worker)
        yield c


def test_reply_matches_the_reward_function(client, scorer):
    payload = {"query": [PROMPT + RESPONSE, PROMPT + "<think>x"], "prompts": [PROMPT, PROMPT],
               "labels": [["Canberra"], {"gold": "Canberra"}]}
    reply = client.post(REWARD_PATH, json=payload)
    assert reply.status_code == 200
    body = reply.json()
    assert body == score_reply(scorer, payload["query"], payload["prompts"], payload["labels"])
    assert len(body["rewards"]) == 2 and set(body["extra_logs"]) == set(LOG_KEYS)


def test_prompts_and_labels_are_optional(client, scorer):
    body = client.post(REWARD_PATH, json={"query": [PROMPT + RESPONSE]}).json()
    assert body == score_reply(scorer, [PROMPT + RESPONSE], [""], [None])
    assert client.post(REWARD_PATH, json={"query": []}).json()["rewards"] == []


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"\xff\xfe", 400, "not valid JSON"),
        (b"[1, 2]", 422, "JSON object"),
        (b'{"prompts": ["a"]}', 422, "'query' must be a list of strings"),
        (b'{"query": "one string"}', 422, "'query'"),
        (b'{"query": [1, 2]}', 422, "'query'"),
        (b'{"query": ["a"], "prompts": ["a", "b"]}', 422, "'prompts'"),
        (b'{"query": ["a"], "prompts": [3]}', 422, "'prompts'"),
        (b'{"query": ["a"], "labels": {"gold": "x"}}', 422, "'labels'"),
    ],
)
def test_bad_requests_get_4xx_json_and_the_server_keeps_serving(client, content, status, message):
    reply = client.post(REWARD_PATH, content=content, headers={"content-type": "application/json"})
    assert reply.status_code == status and message in reply.json()["error"]
    assert client.post(REWARD_PATH, json={"query": [PROMPT + RESPONSE]}).status_code == 200


def test_oversized_bodies_get_413(client):
    big = {"query": ["x" * 5000]}
    reply = client.post(REWARD_PATH, json=big)  # declared Content-Length over the limit
    assert reply.status_code == 413 and "exceeds" in reply.json()["error"]

    def chunks():  # no Content-Length: counted while streaming
        for _ in range(10):
            yield b" " * 1000

    assert client.post(REWARD_PATH, content=chunks()).status_code == 413
    assert client.post(REWARD_PATH, json={"query": [PROMPT + RESPONSE]}).status_code == 200


def test_methods_paths_and_health(client):
    assert client.get(REWARD_PATH).status_code == 405
    assert client.post("/reward").status_code == 404
    client.post(REWARD_PATH, json={"query": [PROMPT + RESPONSE, 7 * "x"]})
    health = client.get("/health").json()
    assert health["status"] == "ok" and health["mode"] == "transition"
    assert health["requests"] == 1 and health["rollouts"] == 2 and health["queued"] == 0

"""`mralign serve-reward` as a real process on 127.0.0.1: concurrent clients batched and answered each with
its own reward, bad requests over real sockets, and a graceful shutdown with requests in flight."""

import asyncio
import json
import signal
import socket
import subprocess
import sys
import time

import pytest

from mralign_plugin.adapters.openrlhf.reward_contract import score_reply
from mralign_plugin.data import demo_corpus_path
from mralign_plugin.reward.scorer import load_scorer

pytestmark = pytest.mark.integration
aiohttp = pytest.importorskip("aiohttp")

PROMPT = "<|im_start|>user\nCapital of Australia?<|im_end|>\n<|im_start|>assistant\n"


def rollout(i: int, paragraphs: int = 12) -> tuple[str, str, dict]:
    """Rollout i: distinct text and reward (right, hit gap or wrong, and a varying chain)."""
    records = [json.loads(x) for x in demo_corpus_path().read_text(encoding="utf-8").splitlines()]
    record = records[i % len(records)]
    thinking = "\n\n".join([record["response"].split("</think>")[0].removeprefix("<think>").strip()] * (paragraphs // 6 + 1))
    answer = record["gold"][0] if i % 3 == 0 else "Nowhere"
    response = f"<think>\n{thinking}\n\nRollout {i}.\n</think>\n<answer>{answer}</answer><|im_end|>"
    return PROMPT + response, PROMPT, {"gold": record["gold"]}


def start(reward_config, *flags) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([sys.executable, "-m", "mralign_plugin.cli", "serve-reward", "--config", str(reward_config),
                             "--port", str(port), *flags], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.time() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc, f"http://127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                proc.kill()
                pytest.fail(f"server did not start: {proc.stdout.read()}")
            time.sleep(0.1)


@pytest.fixture(scope="module")
def server(reward_config):
    proc, url = start(reward_config, "--max-body-mb", "0.25")
    yield url
    proc.terminate()
    proc.wait(timeout=60)


async def post_all(url: str, payloads: list) -> list[tuple[int, dict]]:
    async with aiohttp.ClientSession() as session:
        async def post(payload):
            async with session.post(url, json=payload) as r:
                return r.status, await r.json()
        return await asyncio.gather(*(post(p) for p in payloads))


def test_concurrent_clients_are_batched_and_each_gets_its_own_reward(server, reward_config):
    rollouts = [rollout(i) for i in range(96)]
    payloads = [{"query": [q], "prompts": [p], "labels": [x]} for q, p, x in rollouts]
    replies = asyncio.run(post_all(server + "/get_reward", payloads))
    scorer = load_scorer(reward_config)
    for (status, body), (q, p, x) in zip(replies, rollouts, strict=True):
        assert status == 200 and body == score_reply(scorer, [q], [p], [x])
    assert len({body["rewards"][0] for _, body in replies}) > 10  # distinct rewards went to the right clients
    health = asyncio.run(get_json(server + "/health"))
    assert health["requests"] >= 96 and health["batches"] < health["requests"] and health["sample_errors"] == 0


async def get_json(url):
    async with aiohttp.ClientSession() as session, session.get(url) as r:
        return await r.json()


def raw_http(url: str, head: str, body: bytes = b"") -> tuple[int, str]:
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=10) as s:
        s.sendall(head.encode() + b"\r\n\r\n" + body)
        data = b""
        while b"\r\n\r\n" not in data or len(data.split(b"\r\n\r\n", 1)[1]) < _length(data):
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    status = int(data.split(b" ", 2)[1])
    return status, data.split(b"\r\n\r\n", 1)[1].decode()


def _length(data: bytes) -> int:
    for line in data.split(b"\r\n\r\n", 1)[0].split(b"\r\n"):
        if line.lower().startswith(b"content-length:"):
            return int(line.split(b":")[1])
    return 0


def test_bad_requests_over_sockets_get_4xx_and_the_server_keeps_serving(server):
    path = "/get_reward"
    body = b'{"query": [oops'
    status, text = raw_http(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                                    f"Content-Length: {len(body)}", body)
    assert status == 400 and "not valid JSON" in json.loads(text)["error"]
    body = b'{"query": [{"text": "a"}]}'
    status, _ = raw_http(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}", body)
    assert status == 422
    # Declared 10 MB: refused from the headers, the body is never read.
    status, text = raw_http(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000", b"{")
    assert status == 413 and "exceeds" in text
    # Chunked, no length: refused once 0.25 MB have streamed in.
    chunk = b"x" * 65536
    chunks = b"".join(b"%x\r\n%s\r\n" % (len(chunk), chunk) for _ in range(6)) + b"0\r\n\r\n"
    status, _ = raw_http(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", chunks)
    assert status == 413
    status, _ = raw_http(server, f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Length: abc", b"")
    assert status == 400
    q, p, x = rollout(0)
    replies = asyncio.run(post_all(server + path, [{"query": [q], "prompts": [p], "labels": [x]}] * 4))
    assert [status for status, _ in replies] == [200] * 4


def test_graceful_shutdown_finishes_requests_in_flight(reward_config):
    """SIGTERM while six heavy requests are in flight: each still gets its reward, then the server exits.

    The requests are held open by the client, not by the clock: each body streams in two parts, and the
    second is sent only after SIGTERM, once /health reports all six accepted (``in_flight``). So the
    server surely has them in flight at the signal, on a machine of any speed.
    """
    proc, url = start(reward_config)
    heavy = [rollout(i, paragraphs=20_000) for i in range(6)]  # ~3 MB each: a few hundred ms of tagging each
    bodies = [json.dumps({"query": [q], "prompts": [p], "labels": [x]}).encode() for q, p, x in heavy]
    done_at = []

    async def scenario():
        signalled = asyncio.Event()

        async def body(data: bytes):
            yield data[: len(data) // 2]
            await signalled.wait()
            yield data[len(data) // 2 :]

        async with aiohttp.ClientSession() as session:
            async def post(data: bytes):
                async with session.post(url + "/get_reward", data=body(data),
                                        headers={"Content-Type": "application/json"}) as r:
                    reply = r.status, await r.json()
                done_at.append(time.time())
                return reply

            task = asyncio.gather(*(post(b) for b in bodies))
            while (await get_json_in(session, url + "/health"))["in_flight"] < len(bodies):
                await asyncio.sleep(0.01)  # a poll for the signal, not a guess at the server's speed
            proc.send_signal(signal.SIGTERM)
            at = time.time()
            signalled.set()
            return at, await task

    signalled_at, replies = asyncio.run(scenario())
    assert [status for status, _ in replies] == [200] * 6
    assert all(body["extra_logs"]["mralign/errors"] == 0.0 for _, body in replies)
    assert max(done_at) > signalled_at  # requests really were in flight at SIGTERM
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert "reward server stopped after 6 requests" in proc.stdout.read()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()


async def get_json_in(session, url: str) -> dict:
    async with session.get(url) as r:
        return await r.json()


def test_workers_share_the_port_and_stop_on_sigterm(reward_config):
    """--workers 2: two processes serve the same port, each answer is the reward of its own request,
    and SIGTERM to the supervisor stops them all."""
    proc, url = start(reward_config, "--workers", "2")
    rollouts = [rollout(i) for i in range(48)]
    replies = asyncio.run(post_all(url + "/get_reward", [{"query": [q], "prompts": [p], "labels": [x]}
                                                         for q, p, x in rollouts]))
    scorer = load_scorer(reward_config)
    for (status, body), (q, p, x) in zip(replies, rollouts, strict=True):
        assert status == 200 and body == score_reply(scorer, [q], [p], [x])
    pids = {asyncio.run(get_json(url + "/health"))["pid"] for _ in range(40)}
    assert proc.pid not in pids and len(pids) >= 1  # workers answer, not the supervisor
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) in (0, -signal.SIGTERM)
    assert proc.stdout.read().count("reward server stopped after") == 2  # each worker shut down cleanly
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1])), timeout=1).close()


def test_workers_refused_in_implicit_mode(tmp_path, reward_config):
    config = tmp_path / "implicit.yaml"
    config.write_text(f"transitions: {reward_config.parent / 'transitions.json'}\nmode: implicit\n"
                      "implicit: {policy: nowhere, ref: nowhere}\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "mralign_plugin.cli", "serve-reward", "--config", str(config),
                             "--workers", "2"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "--workers > 1 is for mode: transition" in result.stderr

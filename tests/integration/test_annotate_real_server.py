"""`mralign annotate --annotator llm` against a real OpenAI-compatible server: `transformers serve` on 127.0.0.1.

The default tier serves the tiny random Llama (mralign_plugin/tiny_model.py): its replies are never
valid annotations, so every record is rejected, which is what a real but weak endpoint does and what
the driver must survive without loss. The slow tier serves SmolLM2-135M-Instruct. Checked here, through
the real HTTP API: in = annotated + rejected; the structured-outputs probe (transformers serve 5.15
ignores response_format, so the driver sends the plain prompt); a SIGKILL mid-run and a resume with
nothing lost and nothing twice; the usage counts. The fake server (tests/support/fake_chat_server.py)
stays for what a real one cannot do on demand (429, 500, timeouts, broken JSON).
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from transformers_server import serve_local_model

from mralign_plugin.core.formats import read_jsonl
from mralign_plugin.data import demo_corpus_path

pytestmark = pytest.mark.integration

MAX_TOKENS = 16  # the tiny model's replies are noise: a few tokens show the path, and keep the test short


def write_trajectories(path: Path, n: int) -> list[str]:
    """The first ``n`` demo trajectories without their steps; returns their ids."""
    ids = []
    with open(demo_corpus_path(), encoding="utf-8") as src, open(path, "w", encoding="utf-8") as out:
        for line in list(src)[:n]:
            record = json.loads(line)
            record.pop("steps")
            ids.append(record["id"])
            out.write(json.dumps(record) + "\n")
    return ids


def annotate_command(src: Path, out: Path, server, model: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mralign_plugin.cli", "annotate", str(src), "-o", str(out), "--annotator", "llm",
            "--model", str(model), "--base-url", server.base_url, "--concurrency", "2", "--no-progress",
            "--max-tokens", str(MAX_TOKENS), "--timeout", "300", *extra]


def summary_of(done: subprocess.CompletedProcess) -> dict:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def lines(path: Path) -> list[dict]:
    return read_jsonl(path) if path.exists() else []


@pytest.fixture(scope="module")
def tiny_server(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    tmp = tmp_path_factory.mktemp("serve")
    model = build_tiny_llama(tmp / "tiny")
    with serve_local_model(model, tmp / "serve.log") as server:
        yield server, Path(model)


def test_annotate_through_transformers_serve(tmp_path, tiny_server):
    server, model = tiny_server
    src = tmp_path / "in.jsonl"
    n = 4
    write_trajectories(src, n)
    out = tmp_path / "out.jsonl"
    done = subprocess.run(annotate_command(src, out, server, model), capture_output=True, text=True, timeout=600)
    s = summary_of(done)
    assert s["in"] == n == s["annotated"] + s["rejected"] and s["skipped_done"] == 0
    rejected = lines(out.with_name("out.rejected.jsonl"))
    assert len(lines(out)) == s["annotated"] and len(rejected) == s["rejected"]
    assert all(r["stage"] == "invalid_annotation" and "invalid after one repair" in r["reason"] for r in rejected)
    # structured outputs: the probe finds that this server ignores response_format (it logs that it does)
    usage = s["usage"]
    assert list(usage["structured"].values()) == ["ignored"] and usage["structured_probes"] == 1
    assert "ignored response_format" in done.stderr
    assert "response_format" in server.log()
    # usage: the probe, then a first turn and a repair turn per rejected record, all answered at once
    assert usage["requests"] == 1 + 2 * s["rejected"] + s["annotated"] + sum(
        r.get("annotation", {}).get("repaired", False) for r in lines(out))
    assert usage["retries"] == 0 and usage["failures"] == 0
    assert 0 < usage["completion_tokens"] <= MAX_TOKENS * usage["requests"]
    assert usage["prompt_tokens"] > 1000 * 2 * n  # the App. F prompt with 15 definitions, twice per record


def test_structured_on_is_sent_to_the_real_server(tmp_path, tiny_server):
    """--structured on sends response_format without a probe; transformers serve answers (and ignores it)."""
    server, model = tiny_server
    src = tmp_path / "in.jsonl"
    write_trajectories(src, 1)
    s = summary_of(subprocess.run(annotate_command(src, tmp_path / "o.jsonl", server, model, "--structured", "on"),
                                  capture_output=True, text=True, timeout=600))
    assert s["in"] == 1 == s["annotated"] + s["rejected"]
    assert s["usage"]["structured_probes"] == 0 and list(s["usage"]["structured"].values()) == ["on"]
    assert s["rejected_by_stage"] in ({"invalid_annotation": 1}, {})  # a reply, not a refused request


def test_sigkill_mid_run_and_resume_lose_nothing(tmp_path, tiny_server):
    server, model = tiny_server
    src = tmp_path / "in.jsonl"
    ids = write_trajectories(src, 6)
    out = tmp_path / "out.jsonl"
    rejected = out.with_name("out.rejected.jsonl")
    proc = subprocess.Popen(annotate_command(src, out, server, model), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 300
        while len(lines(out)) + len(lines(rejected)) < 2:  # two records finished: kill in the middle of the run
            assert proc.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
            time.sleep(0.05)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait(30)
    first = len(lines(out)) + len(lines(rejected))
    assert 2 <= first < len(ids)
    s = summary_of(subprocess.run(annotate_command(src, out, server, model), capture_output=True, text=True,
                                  timeout=600))
    assert s["in"] == len(ids) == s["annotated"] + s["rejected"] + s["skipped_done"]
    assert s["skipped_done"] == first
    done_ids = [r["id"] for r in lines(out)] + [r["id"] for r in lines(rejected)]
    assert sorted(done_ids) == sorted(ids)  # every record once: none lost, none twice


@pytest.mark.slow
def test_smollm2_through_transformers_serve(tmp_path_factory, tmp_path):
    """SmolLM2-135M-Instruct, a real (weak) chat model: the same invariants with real replies."""
    from mralign_plugin.smollm2 import smollm2_path

    model = smollm2_path()
    src = tmp_path / "in.jsonl"
    write_trajectories(src, 2)
    out = tmp_path / "out.jsonl"
    with serve_local_model(model, tmp_path / "serve.log", extra_args=("--dtype", "bfloat16")) as server:
        cmd = annotate_command(src, out, server, Path(model))
        cmd[cmd.index("--max-tokens") + 1] = "200"
        s = summary_of(subprocess.run(cmd, capture_output=True, text=True, timeout=1800))
    assert s["in"] == 2 == s["annotated"] + s["rejected"]
    assert list(s["usage"]["structured"].values()) == ["ignored"]
    assert len(lines(out)) == s["annotated"] and len(lines(out.with_name("out.rejected.jsonl"))) == s["rejected"]
    for record in lines(out):  # whatever passed is a valid annotated record
        assert record["steps"] and record["annotation"]["model"] == str(model)

"""Kill-and-resume of `mralign annotate` in a subprocess against a real HTTP server on 127.0.0.1.

SIGKILL mid-run, rerun: the final output equals an uninterrupted run's (ignoring order), with no
duplicates. SIGINT: the run drains what is in flight, so the resumed run asks no prompt twice.
"""

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from fake_chat_server import FakeChatServer

pytestmark = pytest.mark.integration

N_RECORDS = 120


def write_input(path: Path) -> Path:
    lines = []
    for i in range(N_RECORDS):
        paragraphs = [f"Paragraph {k} of record {i}: I recall fact {i * k}." for k in range(2 + i % 4)]
        record = {"id": f"r{i}", "prompt": f"question {i}?", "label": i % 3 != 0, "gold": [f"answer {i}"],
                  "response": "<think>\n" + "\n\n".join(paragraphs) + f"\n</think>\n<answer>answer {i}</answer>"}
        if i % 40 == 5:
            record["prompt"] += " [mock:bad_labels]"  # ends in the rejected file
        lines.append(json.dumps(record))
    lines.insert(17, "{broken json")
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def command(src, out, base_url):
    return [sys.executable, "-m", "mralign_plugin.cli", "annotate", str(src), "-o", str(out), "--annotator", "llm",
            "--model", "m", "--base-url", base_url, "--concurrency", "4", "--no-progress", "--backoff", "0.01"]


def canonical(path: Path) -> list[str]:
    return sorted(json.dumps(json.loads(line), sort_keys=True) for line in path.read_text(encoding="utf-8").splitlines())


def wait_for_lines(path: Path, n: int, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and path.read_text(encoding="utf-8").count("\n") >= n:
            return
        time.sleep(0.02)
    raise TimeoutError(f"{path} did not reach {n} lines")


@pytest.fixture(scope="module")
def server():
    with FakeChatServer(mode="slow:0.03") as srv:
        yield srv


@pytest.fixture(scope="module")
def reference(tmp_path_factory, server):
    tmp = tmp_path_factory.mktemp("ref")
    src = write_input(tmp / "in.jsonl")
    out = tmp / "out.jsonl"
    done = subprocess.run(command(src, out, server.base_url), capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return src, canonical(out), canonical(out.with_name("out.rejected.jsonl"))


def test_sigkill_and_resume_gives_the_uninterrupted_result(tmp_path, server, reference):
    src, ref_out, ref_rej = reference
    out = tmp_path / "out.jsonl"
    for kill_at in (10, 45, 90):  # three kills at different points, each resumed by the next run
        proc = subprocess.Popen(command(src, out, server.base_url), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_for_lines(out, kill_at)
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait(30)
    final = subprocess.run(command(src, out, server.base_url), capture_output=True, text=True, timeout=300)
    assert final.returncode == 0, final.stderr
    summary = json.loads(final.stdout.strip().splitlines()[-1])
    assert summary["in"] == N_RECORDS + 1
    assert summary["in"] == summary["annotated"] + summary["rejected"] + summary["skipped_done"] + summary["skipped_duplicate"]
    got_out, got_rej = canonical(out), canonical(out.with_name("out.rejected.jsonl"))
    assert len(got_out) == len(set(got_out)), "duplicate annotated records"
    assert got_out == ref_out
    assert got_rej == ref_rej
    assert len(ref_out) == N_RECORDS - 3 and len(ref_rej) == 4


def test_sigint_drains_in_flight_so_no_prompt_is_asked_twice(tmp_path, server, reference):
    src, ref_out, _ = reference
    out = tmp_path / "out.jsonl"
    server.reset()
    proc = subprocess.Popen(command(src, out, server.base_url), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    wait_for_lines(out, 30)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 130, stderr
    first = json.loads(stdout.strip().splitlines()[-1])
    assert first["interrupted"] and first["annotated"] + first["rejected"] < N_RECORDS + 1
    resumed = subprocess.run(command(src, out, server.base_url), capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0
    assert canonical(out) == ref_out
    stats = server.stats()
    # only the structured-outputs probe, sent once by each of the two runs, is asked twice
    assert stats["prompts_asked_more_than_once"] == 1, stats
    # bad_labels records are asked twice by design (first turn + repair turn), which are different requests
    assert stats["requests"] == N_RECORDS + 3 + 2

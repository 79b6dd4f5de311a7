"""`mralign annotate`: the resumable, loss-free annotation driver (method/MRALIGN.md §4.3-4.5).

Reads trajectories (``{id, prompt|question, response, label, gold}`` per line), segments each
thinking into paragraphs and adds ``steps`` with one of three annotators (annotate/annotators.py):

* ``rules``: the offline cue tagger (annotate/rules.py), one step per paragraph;
* ``llm``: one OpenAI-compatible endpoint with the App. F closed-vocabulary prompt, strict JSON
  validation and one repair turn;
* ``ensemble``: annotators A and B, and an adjudicator asked only when a step escalates (§4.5).

Loss-free and resumable (pipeline/resumable.py, as every stage): each finished record is appended to OUTPUT at once (line-buffered), and
each failure to ``OUTPUT.rejected.jsonl`` with its reason. A record's key is its id plus a hash of
its response; a rerun skips keys already in either file, so a killed run (SIGKILL included)
resumes to the same final set with no duplicates. A partial last line left by a kill is cut off.
SIGINT/SIGTERM stop reading new records and let the ones in flight finish, so nothing already
sent is asked again. The summary always satisfies ``in = annotated + rejected + skipped``.

    mralign annotate trajectories.jsonl -o annotated.jsonl
    mralign annotate trajectories.jsonl -o annotated.jsonl --annotator llm \\
        --base-url http://127.0.0.1:8000/v1 --model Qwen/Qwen3-32B --concurrency 64
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mralign_plugin.annotate.annotators import Endpoint, ensemble_steps, llm_steps, make_clients, rules_steps
from mralign_plugin.annotate.client import ChatClient, ChatRequestError
from mralign_plugin.annotate.prompts import AnnotationError, build_messages
from mralign_plugin.annotate.rules import annotate_rules
from mralign_plugin.core.formats import FormatError, iter_jsonl, parse_jsonl_line, record_problems
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
from mralign_plugin.pipeline.ray_jobs import map_on_actor_pool
from mralign_plugin.pipeline.resumable import ResumableOutput, record_key

ANNOTATORS = ("rules", "llm", "ensemble")


@dataclass
class AnnotateOptions:
    """Everything `mralign annotate` can be told; the CLI flags map one to one onto these fields."""

    annotator: str = "rules"
    endpoints: list[Endpoint] = field(default_factory=list)  # llm: [model]; ensemble: [A, B, adjudicator]
    concurrency: int = 16
    timeout: float = 120.0
    max_retries: int = 5
    backoff: float = 1.0
    max_backoff: float = 60.0
    temperature: float = 0.0
    max_tokens: int | None = None
    structured: str = "auto"  # response_format with the answer's JSON Schema: auto | on | off
    escalate_when: str = "lt2"
    limit: int | None = None
    retry_rejected: bool = False
    progress: bool = True
    taxonomy: Taxonomy = PAPER_TAXONOMY
    ray: bool = False
    ray_address: str | None = None
    ray_workers: int = 2
    ray_batch_size: int = 64


def question_of(record: dict) -> str:
    """The question text: ``question`` if present, else the prompt (its last user message)."""
    if isinstance(record.get("question"), str):
        return record["question"]
    prompt = record.get("prompt")
    if isinstance(prompt, list):
        users = [m.get("content", "") for m in prompt if isinstance(m, dict) and m.get("role") == "user"]
        return users[-1] if users else ""
    return prompt if isinstance(prompt, str) else ""


@dataclass
class Job:
    """One valid input record, ready to annotate (``line``: its JSON text as read)."""

    key: str
    lineno: int
    record: dict
    paragraphs: list[str]
    line: str = ""


def _rejection(key: str, lineno: int, record_id: object, stage: str, reason: str) -> dict:
    return {"key": key, "line": lineno, "id": record_id, "stage": stage, "reason": reason}


def prepare(lineno: int, record: dict | FormatError, taxonomy: Taxonomy, line: str = "") -> Job | dict:
    """A :class:`Job`, or a rejection dict (malformed line, missing field, no thinking)."""
    if isinstance(record, FormatError):
        return _rejection(f"#line{lineno}", lineno, None, "invalid_json", str(record))
    record_id, response = record.get("id"), record.get("response")
    if not isinstance(response, str) or not isinstance(record_id, str | int) or isinstance(record_id, bool):
        key = record_key(record_id, response) if isinstance(response, str) else f"#line{lineno}"
        missing = "id" if not isinstance(record_id, str | int) or isinstance(record_id, bool) else "response"
        return _rejection(key, lineno, record_id, "invalid_record", f"{missing}: missing or not a string")
    key = record_key(record_id, response)
    problems = record_problems({**record, "steps": []}, taxonomy, check_paragraphs=False)
    if problems:
        return _rejection(key, lineno, record_id, "invalid_record", "; ".join(problems))
    parsed = parse_response(response)
    if not parsed.has_thinking:
        return _rejection(key, lineno, record_id, "no_thinking", "response: no thinking paragraphs (no or empty <think> block)")
    return Job(key, lineno, record, [response[a:b] for a, b in parsed.paragraphs], line)


def _annotated_key(record: dict) -> str | None:
    """An annotated record's resume key (as :func:`prepare` gives its input)."""
    response = record.get("response")
    return record_key(record.get("id"), response) if isinstance(response, str) else None


def count_lines(path: Path) -> int:
    n = 0
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            n += chunk.count(b"\n")
    return n


def read_lines(path: Path) -> Iterator[tuple[int, str, dict | FormatError]]:
    """``(line_number, text, record)`` per non-blank line, as core.formats.iter_jsonl but keeping the
    text, so an annotated record is written as that text plus two members (no re-encoding)."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, line, parse_jsonl_line(path, lineno, line)


def annotated_line(job: Job, steps: list[dict], info: dict) -> str:
    """The output line: the input record plus ``steps`` and ``annotation`` (replacing any old ones)."""
    text = job.line.rstrip()
    if text.endswith("}") and job.record and "steps" not in job.record and "annotation" not in job.record:
        # Append the two members to the original text: same JSON object, unknown fields untouched.
        extra = json.dumps({"steps": steps, "annotation": info}, ensure_ascii=False)
        return f"{text[:-1]}, {extra[1:]}"
    return json.dumps({**job.record, "steps": steps, "annotation": info}, ensure_ascii=False)


# ---------------------------------------------------------------------------------------------
# Annotating one job. Each returns (steps, annotation_info) or raises AnnotationError /
# ChatRequestError; annotate_job_* turn that into ("annotated", line, info) or
# ("rejected", rejection, None), never raising.


def _make_clients(opts: AnnotateOptions) -> list[ChatClient]:
    want = {"llm": 1, "ensemble": 3}[opts.annotator]
    if len(opts.endpoints) != want:
        raise ValueError(f"--annotator {opts.annotator} needs {want} endpoint(s), got {len(opts.endpoints)}")
    return make_clients(opts.endpoints, concurrency=opts.concurrency, timeout=opts.timeout,
                        max_retries=opts.max_retries, backoff=opts.backoff, max_backoff=opts.max_backoff,
                        temperature=opts.temperature, max_tokens=opts.max_tokens, structured=opts.structured)


async def annotate_job_async(job: Job, clients: list[ChatClient], opts: AnnotateOptions) -> tuple[str, str | dict, dict | None]:
    """``("annotated", line, info)`` or ``("rejected", rejection, None)``; never raises (except cancellation)."""
    record_id = job.record["id"]
    try:
        question, gold = question_of(job.record), job.record.get("gold")
        if opts.annotator == "llm":
            steps, info = await llm_steps(clients[0], question, gold, job.paragraphs, opts.taxonomy)
        else:
            steps, info = await ensemble_steps(clients, question, gold, job.paragraphs, opts.taxonomy, opts.escalate_when)
    except AnnotationError as e:
        return "rejected", _rejection(job.key, job.lineno, record_id, "invalid_annotation", str(e)), None
    except ChatRequestError as e:
        return "rejected", _rejection(job.key, job.lineno, record_id, "request_failed", str(e)), None
    except Exception as e:  # a bug or an unexpected server answer must not lose the record
        return "rejected", _rejection(job.key, job.lineno, record_id, "annotator_error", f"{type(e).__name__}: {e}"), None
    return "annotated", annotated_line(job, steps, info), info


def annotate_job_rules(job: Job, opts: AnnotateOptions) -> tuple[str, str | dict, dict | None]:
    try:
        steps, info = rules_steps(job.paragraphs, opts.taxonomy)
    except Exception as e:
        return "rejected", _rejection(job.key, job.lineno, job.record["id"], "annotator_error", f"{type(e).__name__}: {e}"), None
    return "annotated", annotated_line(job, steps, info), info


# ---------------------------------------------------------------------------------------------
# The driver.


class _Sink:
    """Appends results to the output and its rejected file as they arrive, and keeps the counts."""

    def __init__(self, out: ResumableOutput, progress) -> None:
        self.out = out
        self.progress = progress
        self.counts = Counter()
        self.stages = Counter()
        self.rules = Counter()
        self.tokens = Counter()

    def __call__(self, kind: str, payload: str | dict, info: dict | None = None) -> None:
        if kind == "annotated":
            self.out.write(payload)
            self.rules.update(info.get("rules", {}))
            for sub in info.get("annotators", [info]):
                self.tokens["prompt_tokens"] += sub.get("prompt_tokens", 0)
                self.tokens["completion_tokens"] += sub.get("completion_tokens", 0)
        else:
            self.out.reject(payload)
            self.stages[payload["stage"]] += 1
        self.counts[kind] += 1
        if self.progress is not None:
            self.progress.update(1)

    def skip(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.progress is not None:
            self.progress.update(1)


def _jobs(input_path: Path, opts: AnnotateOptions, sink: _Sink) -> Iterator[Job]:
    """Valid, not-yet-done jobs; rejections and skips go straight to the sink."""
    seen: set[str] = set()
    for n, (lineno, line, record) in enumerate(read_lines(input_path)):
        if opts.limit is not None and n >= opts.limit:
            return
        sink.counts["in"] += 1
        job = prepare(lineno, record, opts.taxonomy, line)
        key = job.key if isinstance(job, Job) else job["key"]
        if key in sink.out.done or key in sink.out.failed:
            sink.skip("skipped_done")
            continue
        if key in seen:
            sink.skip("skipped_duplicate")
            continue
        seen.add(key)
        if isinstance(job, Job):
            yield job
        else:
            sink("rejected", job)


async def _drive_async(jobs: Iterator[Job], opts: AnnotateOptions, sink: _Sink, stop: dict) -> dict:
    clients = _make_clients(opts)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, _request_stop, stop, sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread, or Windows
            pass

    async def worker() -> None:
        # Workers share one synchronous iterator: next() never awaits, so no two workers interleave in
        # it, and a job once pulled (and counted as "in") is always finished and written.
        while not stop.get("signal"):
            job = next(jobs, None)
            if job is None:
                return
            sink(*await annotate_job_async(job, clients, opts))

    try:
        for c in clients:
            await c.__aenter__()
        await asyncio.gather(*(worker() for _ in range(opts.concurrency)))
    finally:
        for c in clients:
            await c.__aexit__()
        for sig in (signal.SIGINT, signal.SIGTERM):
            try:
                loop.remove_signal_handler(sig)
            except (NotImplementedError, RuntimeError, ValueError):
                pass
    usage = Counter()
    for c in clients:
        for k, v in c.usage.as_dict().items():
            if k != "by_status":
                usage[k] += v
    return {**usage, "structured": {f"{c.model} @ {c.url}": c.structured_state for c in clients}}


def _request_stop(stop: dict, sig: int) -> None:
    if stop.get("signal"):  # a second Ctrl-C: stop now; the resume will redo what was in flight
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    stop["signal"] = sig
    print(f"\nmralign annotate: {signal.Signals(sig).name}: finishing the records in flight "
          "(again to abort; a rerun resumes)", file=sys.stderr)


def annotate_file(input_path: str | Path, output_path: str | Path, opts: AnnotateOptions | None = None) -> dict:
    """Annotate every record of ``input_path`` not yet in ``output_path``; return the summary.

    Args:
        input_path: trajectories jsonl.
        output_path: annotated jsonl, appended to; rejections go to ``OUTPUT.rejected.jsonl``
            (pipeline/resumable.py).
        opts: annotator and run options.

    Returns:
        The summary: ``in``, ``annotated``, ``rejected``, ``skipped_done``, ``skipped_duplicate``
        (``in`` is their sum), rejection counts by stage, token usage, seconds, rate, interrupted.
    """
    opts = opts or AnnotateOptions()
    if opts.annotator not in ANNOTATORS:
        raise ValueError(f"unknown annotator {opts.annotator!r}; choose from {ANNOTATORS}")
    input_path, output = Path(input_path), Path(output_path)
    if not input_path.exists():
        raise FileNotFoundError(f"input not found: {input_path}")
    out = ResumableOutput(output, _annotated_key, "mralign annotate", rejected=True, retry_rejected=opts.retry_rejected)
    progress = None
    if opts.progress:
        from tqdm import tqdm

        total = count_lines(input_path)
        progress = tqdm(total=min(total, opts.limit) if opts.limit is not None else total, unit="rec",
                        desc=f"annotate ({opts.annotator})", dynamic_ncols=True)
    sink = _Sink(out, progress)
    stop: dict = {}
    usage: dict = {}
    start = time.perf_counter()
    try:
        jobs = _jobs(input_path, opts, sink)
        if opts.ray:
            usage = _drive_ray(jobs, opts, sink)
        elif opts.annotator == "rules":
            for job in jobs:
                sink(*annotate_job_rules(job, opts))
        else:
            usage = asyncio.run(_drive_async(jobs, opts, sink, stop))
    finally:
        out.close()
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    c = sink.counts
    summary = {
        "in": c["in"], "annotated": c["annotated"], "rejected": c["rejected"],
        "skipped_done": c["skipped_done"], "skipped_duplicate": c["skipped_duplicate"],
        "rejected_by_stage": dict(sink.stages), "seconds": round(seconds, 3),
        "records_per_s": round((c["annotated"] + c["rejected"]) / seconds, 1) if seconds > 0 else None,
        "interrupted": bool(stop.get("signal")), "output": str(output), "rejected_file": str(out.rejected_path),
    }
    if opts.annotator != "rules":
        summary["usage"] = {**usage, **sink.tokens}
    if sink.rules:
        summary["ensemble_rules"] = dict(sink.rules)
    assert summary["in"] == summary["annotated"] + summary["rejected"] + summary["skipped_done"] + summary["skipped_duplicate"]
    return summary


def dry_run(input_path: str | Path, opts: AnnotateOptions, file=None) -> int:
    """Print the exact prompt for the first valid record (rules: its paragraphs and tags)."""
    file = file or sys.stdout
    for lineno, record in iter_jsonl(input_path):
        job = prepare(lineno, record, opts.taxonomy)
        if not isinstance(job, Job):
            print(f"line {lineno}: would be rejected ({job['stage']}): {job['reason']}", file=file)
            continue
        print(f"# record id={job.record['id']} (line {lineno}), {len(job.paragraphs)} paragraphs", file=file)
        if opts.annotator == "rules":
            print("# the rules annotator sends no prompt; its steps for this record:", file=file)
            for step in annotate_rules(job.record["response"], opts.taxonomy):
                p = step["paragraphs"][0]
                print(f"[{p}] {step['states']}  {job.paragraphs[p][:100]!r}", file=file)
        else:
            messages = build_messages(question_of(job.record), job.record.get("gold"), job.paragraphs, opts.taxonomy)
            for m in messages:
                print(f"----- {m['role']} -----\n{m['content']}", file=file)
        return 0
    print("no valid record in the input", file=file)
    return 1


# ---------------------------------------------------------------------------------------------
# Ray Data: the same jobs, annotated in parallel by workers; results stream back to this process,
# which alone writes the files, so resume and the summary work unchanged.


class _RayAnnotator:
    """A Ray Data batch UDF: annotates a batch of jobs (JSON strings) and returns result strings."""

    def __init__(self, opts_json: str) -> None:
        self.opts = _options_from_json(opts_json)

    def __call__(self, batch: dict) -> dict:
        jobs = [_job_from_json(s) for s in batch["item"]]
        if self.opts.annotator == "rules":
            results = [annotate_job_rules(job, self.opts) for job in jobs]
        else:
            results = asyncio.run(self._annotate_async(jobs))
        return {"result": [json.dumps(result, ensure_ascii=False) for result in results]}

    async def _annotate_async(self, jobs: list[Job]) -> list[tuple]:
        clients = _make_clients(self.opts)
        for c in clients:
            await c.__aenter__()
        try:
            slots = asyncio.Semaphore(self.opts.concurrency)

            async def one(job: Job) -> tuple:
                async with slots:
                    return await annotate_job_async(job, clients, self.opts)

            return await asyncio.gather(*(one(job) for job in jobs))
        finally:
            for c in clients:
                await c.__aexit__()


def _options_to_json(opts: AnnotateOptions) -> str:
    data = {k: v for k, v in opts.__dict__.items() if k not in ("taxonomy", "endpoints")}
    data["endpoints"] = [e.__dict__ for e in opts.endpoints]
    data["taxonomy"] = opts.taxonomy.to_dict()
    return json.dumps(data)


def _options_from_json(text: str) -> AnnotateOptions:
    data = json.loads(text)
    data["endpoints"] = [Endpoint(**e) for e in data["endpoints"]]
    data["taxonomy"] = Taxonomy.from_entries(data["taxonomy"])
    data.update(ray=False, progress=False)
    return AnnotateOptions(**data)


def _job_from_json(text: str) -> Job:
    d = json.loads(text)
    return Job(d["key"], d["lineno"], d["record"], d["paragraphs"], d["line"])


def _drive_ray(jobs: Iterator[Job], opts: AnnotateOptions, sink: _Sink) -> dict:
    items = [json.dumps(job.__dict__, ensure_ascii=False) for job in jobs]
    for result in map_on_actor_pool(items, _RayAnnotator, {"opts_json": _options_to_json(opts)},
                                    address=opts.ray_address, workers=opts.ray_workers,
                                    batch_size=opts.ray_batch_size, progress=opts.progress):
        sink(*json.loads(result))
    return {}

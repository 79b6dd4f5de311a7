"""`mralign annotate`: the resumable, loss-free annotation driver (method/MRALIGN.md §4.3-4.5).

Reads trajectories (``{id, prompt|question, response, label, gold}`` per line), segments each
thinking into paragraphs and adds ``steps`` with one of three annotators:

* ``rules``: the offline cue tagger (annotate/rules.py), one step per paragraph;
* ``llm``: one OpenAI-compatible endpoint with the App. F closed-vocabulary prompt, strict JSON
  validation and one repair turn;
* ``ensemble``: annotators A and B, and an adjudicator asked only when a step escalates (§4.5).

Loss-free and resumable: each finished record is appended to OUTPUT at once (line-buffered), and
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
import hashlib
import json
import os
import signal
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from mralign_plugin.annotate.aggregate import aggregate
from mralign_plugin.annotate.client import ChatClient, ChatRequestError, api_key_from_env
from mralign_plugin.annotate.prompts import AnnotationError, build_messages, parse_annotation, repair_messages
from mralign_plugin.annotate.rules import annotate_rules, check_taxonomy, tag_paragraphs
from mralign_plugin.core.formats import FormatError, iter_jsonl, parse_jsonl_line, record_problems
from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

ANNOTATORS = ("rules", "llm", "ensemble")


@dataclass
class Endpoint:
    """One OpenAI-compatible model: where it is, its name, and the env variable holding its key."""

    base_url: str
    model: str
    api_key_env: str | None = None


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
    escalate_when: str = "lt2"
    limit: int | None = None
    retry_rejected: bool = False
    progress: bool = True
    taxonomy: Taxonomy = PAPER_TAXONOMY
    ray: bool = False
    ray_address: str | None = None
    ray_workers: int = 2
    ray_batch_size: int = 64


def rejected_path(output: str | Path) -> Path:
    """``OUTPUT.rejected.jsonl`` beside the output (``out.jsonl`` -> ``out.rejected.jsonl``)."""
    output = Path(output)
    stem = output.name[: -len(".jsonl")] if output.name.endswith(".jsonl") else output.name
    return output.with_name(stem + ".rejected.jsonl")


def record_key(record_id: object, response: str) -> str:
    """The resume key: id + the first 16 hex digits of the response's SHA-256."""
    return f"{record_id}|{hashlib.sha256(response.encode('utf-8')).hexdigest()[:16]}"


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


def load_done(output: Path, rejected: Path, retry_rejected: bool) -> tuple[set[str], set[str]]:
    """Keys already annotated and already rejected; cuts a partial last line left by a kill.

    With ``retry_rejected`` the rejected file is rewritten empty of its records so they are retried.
    """
    annotated: set[str] = set()
    for path in (output, rejected):
        truncate_partial_line(path)
    if output.exists():
        for _, record in iter_jsonl(output):
            if isinstance(record, dict) and isinstance(record.get("response"), str):
                annotated.add(record_key(record.get("id"), record["response"]))
    failed: set[str] = set()
    if rejected.exists():
        if retry_rejected:
            rejected.write_text("", encoding="utf-8")
        else:
            failed = {r["key"] for _, r in iter_jsonl(rejected) if isinstance(r, dict) and "key" in r}
    return annotated, failed


def truncate_partial_line(path: Path, chunk: int = 1 << 16) -> None:
    """Cut whatever follows the last newline (a record half-written when the run was killed)."""
    if not path.exists():
        return
    with open(path, "rb+") as f:
        end = f.seek(0, os.SEEK_END)
        pos = end
        while pos > 0:
            start = max(0, pos - chunk)
            f.seek(start)
            newline = f.read(pos - start).rfind(b"\n")
            if newline >= 0:
                pos = start + newline + 1
                break
            pos = start
        if pos < end:
            f.truncate(pos)


def _lock(output: Path):
    """An exclusive advisory lock on ``output`` for this run (released on exit, even after SIGKILL)."""
    handle = open(output, "a", encoding="utf-8")
    try:
        import fcntl

        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except ImportError:  # no fcntl (Windows): run unlocked
        pass
    except OSError:
        handle.close()
        raise ValueError(f"{output} is being written by another `mralign annotate` run; wait for it or stop it") from None
    return handle


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


def annotate_with_rules(job: Job, opts: AnnotateOptions) -> tuple[list[dict], dict]:
    check_taxonomy(opts.taxonomy)
    steps = [{"paragraphs": [i], "states": list(states)} for i, states in enumerate(tag_paragraphs(job.paragraphs))]
    return steps, {"annotator": "rules"}


async def _ask(client: ChatClient, job: Job, taxonomy: Taxonomy) -> tuple[list[dict], dict]:
    """One annotator: prompt, strict parse, and one repair turn with the validation error."""
    messages = build_messages(question_of(job.record), job.record.get("gold"), job.paragraphs, taxonomy)
    result = await client.chat(messages)
    info = {"model": client.model, "repaired": False, "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens}
    try:
        steps, final = parse_annotation(result.text, len(job.paragraphs), taxonomy)
    except AnnotationError as first:
        repair = await client.chat(repair_messages(messages, result.text, str(first)))
        info["repaired"] = True
        info["prompt_tokens"] += repair.prompt_tokens
        info["completion_tokens"] += repair.completion_tokens
        try:
            steps, final = parse_annotation(repair.text, len(job.paragraphs), taxonomy)
        except AnnotationError as second:
            raise AnnotationError(f"{client.model}: invalid after one repair: {second} (first: {first})") from None
    info["final_confidence"] = final
    return steps, info


async def annotate_with_llm(job: Job, clients: list[ChatClient], opts: AnnotateOptions) -> tuple[list[dict], dict]:
    steps, info = await _ask(clients[0], job, opts.taxonomy)
    return steps, {"annotator": "llm", **info}


async def annotate_with_ensemble(job: Job, clients: list[ChatClient], opts: AnnotateOptions) -> tuple[list[dict], dict]:
    (steps_a, info_a), (steps_b, info_b) = await asyncio.gather(
        _ask(clients[0], job, opts.taxonomy), _ask(clients[1], job, opts.taxonomy)
    )
    n = len(job.paragraphs)
    steps, needs = aggregate(steps_a, steps_b, n, escalate_when=opts.escalate_when)
    infos = [info_a, info_b]
    if needs:
        adjudicator_steps, info_c = await _ask(clients[2], job, opts.taxonomy)
        infos.append(info_c)
        steps, _ = aggregate(steps_a, steps_b, n, adjudicator_steps, escalate_when=opts.escalate_when)
    return steps, {"annotator": "ensemble", "annotators": infos, "rules": dict(Counter(s["rule"] for s in steps))}


def _make_clients(opts: AnnotateOptions) -> list[ChatClient]:
    want = {"llm": 1, "ensemble": 3}[opts.annotator]
    if len(opts.endpoints) != want:
        raise ValueError(f"--annotator {opts.annotator} needs {want} endpoint(s), got {len(opts.endpoints)}")
    return [
        ChatClient(e.base_url, e.model, api_key_from_env(e.api_key_env), concurrency=opts.concurrency,
                   timeout=opts.timeout, max_retries=opts.max_retries, backoff=opts.backoff,
                   max_backoff=opts.max_backoff, temperature=opts.temperature, max_tokens=opts.max_tokens)
        for e in opts.endpoints
    ]


async def annotate_job_async(job: Job, clients: list[ChatClient], opts: AnnotateOptions) -> tuple[str, str | dict, dict | None]:
    """``("annotated", line, info)`` or ``("rejected", rejection, None)``; never raises (except cancellation)."""
    record_id = job.record["id"]
    try:
        if opts.annotator == "llm":
            steps, info = await annotate_with_llm(job, clients, opts)
        else:
            steps, info = await annotate_with_ensemble(job, clients, opts)
    except AnnotationError as e:
        return "rejected", _rejection(job.key, job.lineno, record_id, "invalid_annotation", str(e)), None
    except ChatRequestError as e:
        return "rejected", _rejection(job.key, job.lineno, record_id, "request_failed", str(e)), None
    except Exception as e:  # a bug or an unexpected server answer must not lose the record
        return "rejected", _rejection(job.key, job.lineno, record_id, "annotator_error", f"{type(e).__name__}: {e}"), None
    return "annotated", annotated_line(job, steps, info), info


def annotate_job_rules(job: Job, opts: AnnotateOptions) -> tuple[str, str | dict, dict | None]:
    try:
        steps, info = annotate_with_rules(job, opts)
    except Exception as e:
        return "rejected", _rejection(job.key, job.lineno, job.record["id"], "annotator_error", f"{type(e).__name__}: {e}"), None
    return "annotated", annotated_line(job, steps, info), info


# ---------------------------------------------------------------------------------------------
# The driver.


class _Sink:
    """Appends results to the two files as they arrive and keeps the counts."""

    def __init__(self, output: Path, rejected: Path, progress) -> None:
        self.out = open(output, "a", encoding="utf-8", buffering=1)  # line-buffered: one flush per record
        self.rej = open(rejected, "a", encoding="utf-8", buffering=1)
        self.progress = progress
        self.counts = Counter()
        self.stages = Counter()
        self.rules = Counter()
        self.tokens = Counter()

    def __call__(self, kind: str, payload: str | dict, info: dict | None = None) -> None:
        if kind == "annotated":
            self.out.write(payload + "\n")  # one write per record; the line buffer flushes it
            self.rules.update(info.get("rules", {}))
            for sub in info.get("annotators", [info]):
                self.tokens["prompt_tokens"] += sub.get("prompt_tokens", 0)
                self.tokens["completion_tokens"] += sub.get("completion_tokens", 0)
        else:
            self.rej.write(json.dumps(payload, ensure_ascii=False) + "\n")
            self.stages[payload["stage"]] += 1
        self.counts[kind] += 1
        if self.progress is not None:
            self.progress.update(1)

    def skip(self, kind: str) -> None:
        self.counts[kind] += 1
        if self.progress is not None:
            self.progress.update(1)

    def close(self) -> None:
        self.out.close()
        self.rej.close()


def _jobs(input_path: Path, opts: AnnotateOptions, done: set[str], failed: set[str], sink: _Sink) -> Iterator[Job]:
    """Valid, not-yet-done jobs; rejections and skips go straight to the sink."""
    seen: set[str] = set()
    for n, (lineno, line, record) in enumerate(read_lines(input_path)):
        if opts.limit is not None and n >= opts.limit:
            return
        sink.counts["in"] += 1
        job = prepare(lineno, record, opts.taxonomy, line)
        key = job.key if isinstance(job, Job) else job["key"]
        if key in done or key in failed:
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
    return dict(usage)


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
        output_path: annotated jsonl, appended to; rejections go to :func:`rejected_path`.
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
    output.parent.mkdir(parents=True, exist_ok=True)
    rejected = rejected_path(output)
    lock = _lock(output)  # two runs appending to one output would duplicate records
    done, failed = load_done(output, rejected, opts.retry_rejected)

    progress = None
    if opts.progress:
        from tqdm import tqdm

        total = count_lines(input_path)
        progress = tqdm(total=min(total, opts.limit) if opts.limit is not None else total, unit="rec",
                        desc=f"annotate ({opts.annotator})", dynamic_ncols=True)
    sink = _Sink(output, rejected, progress)
    stop: dict = {}
    usage: dict = {}
    start = time.perf_counter()
    try:
        jobs = _jobs(input_path, opts, done, failed, sink)
        if opts.ray:
            usage = _drive_ray(jobs, opts, sink)
        elif opts.annotator == "rules":
            for job in jobs:
                sink(*annotate_job_rules(job, opts))
        else:
            usage = asyncio.run(_drive_async(jobs, opts, sink, stop))
    finally:
        sink.close()
        lock.close()
        if progress is not None:
            progress.close()
    seconds = time.perf_counter() - start
    c = sink.counts
    summary = {
        "in": c["in"], "annotated": c["annotated"], "rejected": c["rejected"],
        "skipped_done": c["skipped_done"], "skipped_duplicate": c["skipped_duplicate"],
        "rejected_by_stage": dict(sink.stages), "seconds": round(seconds, 3),
        "records_per_s": round((c["annotated"] + c["rejected"]) / seconds, 1) if seconds > 0 else None,
        "interrupted": bool(stop.get("signal")), "output": str(output), "rejected_file": str(rejected),
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
        jobs = [_job_from_json(s) for s in batch["job"]]
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


def init_ray(address: str | None, num_cpus: int):
    """Import Ray and connect: ``address`` None/"auto" = the running cluster, "local" = start one here."""
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        raise ImportError("--ray needs Ray Data: pip install 'mralign_plugin[ray]'") from None
    if not ray.is_initialized():
        if address == "local":
            ray.init(num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
        else:
            try:
                ray.init(address=address or "auto")
            except ConnectionError as e:
                raise ValueError(f"--ray: cannot reach a Ray cluster ({e}); start one with `ray start --head` "
                                 "or pass --ray-address local") from None
    return ray


def _drive_ray(jobs: Iterator[Job], opts: AnnotateOptions, sink: _Sink) -> dict:
    ray = init_ray(opts.ray_address, max(2, opts.ray_workers))
    items = [{"job": json.dumps(job.__dict__, ensure_ascii=False)} for job in jobs]
    if not items:
        return {}
    ray.data.DataContext.get_current().enable_progress_bars = opts.progress
    n_blocks = -(-len(items) // opts.ray_batch_size)
    ds = ray.data.from_items(items, override_num_blocks=n_blocks).map_batches(
        _RayAnnotator,
        fn_constructor_kwargs={"opts_json": _options_to_json(opts)},
        batch_size=opts.ray_batch_size,
        compute=ray.data.ActorPoolStrategy(size=opts.ray_workers),
        batch_format="numpy",
    )
    for row in ds.iter_rows():
        sink(*json.loads(row["result"]))
    return {}

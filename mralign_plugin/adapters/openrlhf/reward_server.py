"""HTTP reward server with OpenRLHF's remote-reward contract (``--reward.remote_url http://HOST:PORT/get_reward``).

    mralign serve-reward --config recipes/reward.yaml --port 5000
    python -m openrlhf.cli.train_ppo_ray ... --reward.remote_url http://127.0.0.1:5000/get_reward

POST /get_reward ``{"query": [str], "prompts": [str], "labels": [any]}`` → ``{"rewards": [float],
"scores": [float], "extra_logs": {name: float}}`` (``prompts`` and ``labels`` optional, else the same
length as ``query``). GET /health → status and counters (``in_flight``: reward requests accepted and
not yet answered). Malformed JSON is a 400, a body over the
size limit a 413, a well-formed body of the wrong shape a 422; each with ``{"error": ...}``.

Requests that arrive while a batch is being scored are scored together as the next batch (up to
``max_batch_size`` rollouts), so implicit mode runs its models on full batches. A transition-mode
batch of ordinary size (a few ms of CPU) is scored right on the event loop: a hop to a worker thread
would cost more than it saves, since the GIL serialises the scoring anyway. Implicit mode and
very large batches go to one worker thread, so the event loop keeps accepting connections.
SIGINT / SIGTERM stop accepting connections, let in-flight requests finish (uvicorn's graceful
shutdown), then stop the worker.
Built on Starlette + uvicorn (the ``serve`` extra), as OpenRLHF's own ``serve_rm`` (FastAPI).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from mralign_plugin.adapters.openrlhf.reward_contract import reply
from mralign_plugin.reward.scorer import RewardScorer

REWARD_PATH = "/get_reward"  # the path of OpenRLHF's reference server (cli/serve_rm.py)
# Transition-mode batches up to this many query characters (~60 rollouts of 1,000 tokens, ~20 ms)
# are scored on the event loop; larger ones in the worker thread.
INLINE_MAX_CHARS = 1 << 18


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


@dataclass
class _Job:
    queries: list
    prompts: list | None
    labels: list | None
    future: asyncio.Future = field(repr=False)


class _Batcher:
    """Scores queued requests in batches on one worker thread (see the module docstring)."""

    def __init__(self, scorer: RewardScorer, max_batch_size: int) -> None:
        self.scorer = scorer
        self.max_batch_size = max_batch_size
        self.queue: asyncio.Queue[_Job | None] = asyncio.Queue()
        self.worker = ThreadPoolExecutor(max_workers=1, thread_name_prefix="mralign-reward")
        self.task: asyncio.Task | None = None
        self.n_requests = self.n_batches = self.n_rollouts = 0

    def start(self) -> None:
        self.task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        await self.queue.put(None)
        if self.task is not None:
            await self.task
        self.worker.shutdown(wait=True)

    async def score(self, queries: list, prompts: list | None, labels: list | None) -> dict:
        job = _Job(queries, prompts, labels, asyncio.get_running_loop().create_future())
        self.queue.put_nowait(job)  # unbounded: never waits
        return await job.future

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        stopping = False
        while not stopping:
            job = await self.queue.get()
            if job is None:
                break
            batch, size = [job], len(job.queries)
            while size < self.max_batch_size and not self.queue.empty():
                nxt = self.queue.get_nowait()
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
                size += len(nxt.queries)
            queries = [q for j in batch for q in j.queries]
            prompts = [p for j in batch for p in (j.prompts if j.prompts is not None else [""] * len(j.queries))]
            labels = [x for j in batch for x in (j.labels if j.labels is not None else [None] * len(j.queries))]
            try:
                if self.scorer.implicit is None and sum(map(len, queries)) <= INLINE_MAX_CHARS:
                    parts = self.scorer.score_parts(queries, prompts, labels)
                else:
                    parts = await loop.run_in_executor(self.worker, self.scorer.score_parts, queries, prompts, labels)
            except Exception as e:  # score_parts catches per-sample errors; this is a bug or an OOM
                for j in batch:
                    if not j.future.done():
                        j.future.set_exception(e)
                continue
            self.n_requests += len(batch)
            self.n_batches += 1
            self.n_rollouts += len(queries)
            start = 0
            for j in batch:
                if not j.future.done():  # the client may have gone away
                    j.future.set_result(reply(parts[start : start + len(j.queries)]))
                start += len(j.queries)


async def read_body(request: Request, max_bytes: int) -> bytes:
    """The request body, refusing (413) more than ``max_bytes`` before reading it when the length is declared."""
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.isdigit():
            raise BadRequest(400, f"invalid Content-Length {declared!r}")
        if int(declared) > max_bytes:
            raise BadRequest(413, f"body of {declared} bytes exceeds the limit of {max_bytes}")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_bytes:
            raise BadRequest(413, f"body exceeds the limit of {max_bytes} bytes")
        chunks.append(chunk)
    return b"".join(chunks)


def parse_payload(body: bytes) -> tuple[list, list | None, list | None]:
    """``(query, prompts, labels)`` of a request body; raises :class:`BadRequest` (400 / 422)."""
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise BadRequest(400, f"body is not valid JSON: {e}") from None
    if not isinstance(payload, dict):
        raise BadRequest(422, f"body must be a JSON object, got {type(payload).__name__}")
    queries = payload.get("query")
    if not isinstance(queries, list) or not all(isinstance(q, str) for q in queries):
        raise BadRequest(422, "'query' must be a list of strings (prompt + response)")
    prompts, labels = payload.get("prompts"), payload.get("labels")
    if prompts is not None and (
        not isinstance(prompts, list) or len(prompts) != len(queries) or not all(isinstance(p, str) for p in prompts)
    ):
        raise BadRequest(422, "'prompts' must be a list of strings, one per query")
    if labels is not None and (not isinstance(labels, list) or len(labels) != len(queries)):
        raise BadRequest(422, "'labels' must be a list with one label per query")
    return queries, prompts, labels


def create_app(scorer: RewardScorer, max_batch_size: int = 64, max_body_bytes: int = 16 << 20) -> Starlette:
    """The Starlette app: POST ``/get_reward``, GET ``/health``."""
    batcher = _Batcher(scorer, max_batch_size)
    started = time.time()
    in_flight = [0]  # reward requests accepted and not yet answered (their body may still be arriving)

    async def get_reward(request: Request) -> JSONResponse:
        in_flight[0] += 1
        try:
            try:
                queries, prompts, labels = parse_payload(await read_body(request, max_body_bytes))
            except BadRequest as e:
                return JSONResponse({"error": str(e)}, status_code=e.status)
            try:
                return JSONResponse(await batcher.score(queries, prompts, labels))
            except Exception as e:
                return JSONResponse({"error": f"scoring failed: {type(e).__name__}: {e}"}, status_code=500)
        finally:
            in_flight[0] -= 1

    async def health(request: Request) -> JSONResponse:
        return JSONResponse({
            "status": "ok",
            "pid": os.getpid(),  # with --workers, the counters below are this worker's
            "mode": scorer.config.mode,
            "transitions": scorer.config.transitions,
            "uptime_s": round(time.time() - started, 1),
            "requests": batcher.n_requests,
            "batches": batcher.n_batches,
            "rollouts": batcher.n_rollouts,
            "sample_errors": scorer.n_errors,
            "queued": batcher.queue.qsize(),
            "in_flight": in_flight[0],
        })

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):
        batcher.start()
        yield
        await batcher.stop()  # after uvicorn has let in-flight requests finish
        print(f"[mralign] reward server stopped after {batcher.n_requests} requests "
              f"({batcher.n_rollouts} rollouts, {scorer.n_errors} failed samples)", flush=True)

    return Starlette(
        routes=[Route(REWARD_PATH, get_reward, methods=["POST"]), Route("/health", health, methods=["GET"])],
        lifespan=lifespan,
    )


_WORKER_ENV = "MRALIGN_SERVE_WORKER"  # JSON settings the worker processes build their app from


def serve(
    scorer: RewardScorer,
    host: str = "127.0.0.1",
    port: int = 5000,
    max_batch_size: int = 64,
    max_body_bytes: int = 16 << 20,
    graceful_timeout: float = 30.0,
    workers: int = 1,
    config_path: str | None = None,
) -> None:
    """Run the server until SIGINT / SIGTERM (uvicorn then re-raises the signal: exit status 128 + signal).

    With ``workers`` > 1, uvicorn's supervisor runs that many processes sharing the port (the kernel
    spreads connections); each loads ``config_path`` (the config ``scorer`` came from) and batches its
    own requests. On a machine with cores to spare, throughput grows with the workers, since one
    process scores on one core (the GIL).
    """
    import uvicorn

    if workers > 1:
        if config_path is None:
            raise ValueError("serve: workers > 1 needs the config_path each worker loads")
        os.environ[_WORKER_ENV] = json.dumps({"config": config_path, "max_batch_size": max_batch_size,
                                              "max_body_bytes": max_body_bytes})
        target, options = f"{__name__}:worker_app", {"factory": True, "workers": workers}
    else:
        target, options = create_app(scorer, max_batch_size, max_body_bytes), {}
    print(f"[mralign] reward server ({scorer.config.mode}, {workers} worker{'s' * (workers > 1)}) on "
          f"http://{host}:{port}{REWARD_PATH}", flush=True)
    uvicorn.run(target, host=host, port=port, log_level="warning", access_log=False,
                timeout_graceful_shutdown=graceful_timeout, **options)


def worker_app() -> Starlette:
    """The app of one worker process of :func:`serve` with workers > 1 (settings from the environment)."""
    from mralign_plugin.reward.scorer import load_scorer

    settings = json.loads(os.environ[_WORKER_ENV])
    return create_app(load_scorer(settings["config"]), settings["max_batch_size"], settings["max_body_bytes"])

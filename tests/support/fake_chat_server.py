"""A test double: a local chat-completions server that answers annotation prompts (tests and benchmarks).

It lives in the test tree, not in the package: ``pip install mralign_plugin`` does not ship it.
Tests import it as ``fake_chat_server`` (pyproject's pytest ``pythonpath``); benchmarks run it as a script.

It speaks the OpenAI chat-completions protocol (``POST /v1/chat/completions``) and answers the
closed-vocabulary prompt of annotate/prompts.py with a valid annotation that is a deterministic
function of the model name and the paragraphs, so two runs give the same output. It can also be
told to misbehave. The behaviour is the server's default ``mode``, or per request a ``[mock:MODE]``
tag anywhere in the user message (e.g. inside a record's question):

* ``ok``: answer at once; ``slow:SECONDS``: answer after a delay;
* ``500``: always HTTP 500; ``400``: always HTTP 400 (not retryable); ``flaky:K``: HTTP 503 for the first K requests of a prompt, then ok;
* ``429``: HTTP 429 with ``Retry-After`` for the first request of a prompt, then ok;
* ``hang_once:SECONDS``: the first request of a prompt sleeps SECONDS (for client timeouts);
* ``invalid_json``: content that is not JSON; ``bad_labels``: labels outside the taxonomy;
* ``repairable``: invalid content first, a valid answer to the repair turn;
* ``refuse_schema``: a request carrying ``response_format`` gets HTTP 422 "Unsupported fields in the
  request" naming it, as ``transformers serve`` answers (its ``UNUSED_CHAT_COMPLETION_FIELDS``); a plain
  one is answered;
* ``honour_schema``: with ``response_format``, a bare JSON object that follows the schema (as a server
  constraining decoding to it gives: the annotation, or for any other prompt the schema's first
  instance); without, the annotation wrapped in prose ("Here is ...: {...} Hope this helps"), as chat
  models often answer. Every other mode ignores ``response_format``, as ``transformers serve`` 5.25 does.

``GET /stats`` returns request counts, including how many prompts were asked more than once and how
many requests carried ``response_format`` (the last one is kept in ``last_response_format``);
``POST /reset`` zeroes them.

    python tests/support/fake_chat_server.py --port 8123   # then --base-url http://127.0.0.1:8123/v1
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import re
import threading
from collections import Counter

from mralign_plugin.core.taxonomy import PAPER_TAXONOMY

_SEGMENT = re.compile(r"^\[(\d+)\] ", re.MULTILINE)
_MODE = re.compile(r"\[mock:([a-z_0-9]+(?::[0-9.]+)?)\]")
_SOLUTION = "\nSolution ("
LABELS = PAPER_TAXONOMY.names


def fake_annotation(model: str, user_message: str) -> dict:
    """A valid annotation of the prompt's Solution: deterministic in (model, paragraph text).

    Steps: paragraph pairs are merged when their hash says so, 1-2 labels each, confidences 5-10.
    """
    solution = user_message[user_message.rfind(_SOLUTION) :] if _SOLUTION in user_message else user_message
    starts = [m for m in _SEGMENT.finditer(solution)]
    texts = [solution[m.end() : (starts[i + 1].start() if i + 1 < len(starts) else len(solution))] for i, m in enumerate(starts)]
    steps, i = [], 0
    while i < len(texts):
        h = hashlib.blake2b(f"{model}\0{texts[i]}".encode(), digest_size=8).digest()
        span = [i, i + 1] if h[0] % 5 == 0 and i + 1 < len(texts) else [i]
        labels = [LABELS[h[1] % len(LABELS)]]
        if h[2] % 3 == 0 and LABELS[h[3] % len(LABELS)] not in labels:
            labels.append(LABELS[h[3] % len(LABELS)])
        steps.append({
            "step_number": len(steps) + 1, "thinking_step": span, "meta_reasoning_strategies": labels,
            "strategy_confidence_rating": [{"strategy": s, "confidence_rating": 5 + (h[4 + k] % 6)} for k, s in enumerate(labels)],
        })
        i += len(span)
    return {"index_base": 0, "steps": steps, "final_confidence_rating": 8}


def schema_instance(schema: dict) -> object:
    """The simplest value a JSON Schema allows (first enum value, minimum, minItems items, every property)."""
    if "enum" in schema:
        return schema["enum"][0]
    kind = schema.get("type")
    if kind == "object":
        return {k: schema_instance(v) for k, v in schema.get("properties", {}).items()}
    if kind == "array":
        return [schema_instance(schema["items"]) for _ in range(schema.get("minItems", 0))]
    if kind in ("integer", "number"):
        return schema.get("minimum", 0)
    return "" if kind == "string" else None


class FakeChatServer:
    """The server; ``start()`` runs it on 127.0.0.1 in a background thread, ``stop()`` ends it.

    Args:
        mode: default behaviour (see the module docstring).
        port: 0 picks a free port; read ``base_url`` after ``start()``.
        retry_after: seconds sent in ``Retry-After`` by mode ``429``.
    """

    def __init__(self, mode: str = "ok", port: int = 0, retry_after: float = 1.0) -> None:
        self.mode = mode
        self.port = port
        self.retry_after = retry_after
        self.requests = 0
        self.by_prompt: Counter = Counter()  # (turns, first user message) digest -> requests
        self.by_status: Counter = Counter()
        self.with_response_format = 0
        self.last_response_format: dict | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner = None
        self._ready = threading.Event()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def stats(self) -> dict:
        return {
            "requests": self.requests,
            "prompts": len(self.by_prompt),
            "prompts_asked_more_than_once": sum(1 for n in self.by_prompt.values() if n > 1),
            "by_status": dict(self.by_status),
            "with_response_format": self.with_response_format,
        }

    def reset(self) -> None:
        self.requests = 0
        self.by_prompt.clear()
        self.by_status.clear()
        self.with_response_format = 0
        self.last_response_format = None

    async def _reply(self, request):
        from aiohttp import web

        body = await request.json()
        messages = body["messages"]
        model = body.get("model", "fake")
        first_user = next(m["content"] for m in messages if m["role"] == "user")
        # A repair turn is a different request from the first turn, not a duplicate of it.
        digest = hashlib.blake2b(f"{len(messages)}\0{first_user}".encode(), digest_size=12).digest()
        self.requests += 1
        self.by_prompt[digest] += 1
        seen = self.by_prompt[digest]
        found = _MODE.search(first_user)
        mode = found.group(1) if found else self.mode
        name, _, arg = mode.partition(":")
        is_repair = len(messages) > 2
        structured = "response_format" in body
        if structured:
            self.with_response_format += 1
            self.last_response_format = body["response_format"]

        if name == "slow":
            await asyncio.sleep(float(arg or 0.5))
        elif name == "hang_once" and seen == 1:
            await asyncio.sleep(float(arg or 5))
        if name == "500":
            return self._status(web, 500, "internal error")
        if name == "400":
            return self._status(web, 400, "bad request: unknown model")
        if name == "refuse_schema" and structured:
            self.by_status[422] += 1
            return web.json_response({"detail": "Unsupported fields in the request: {'response_format'}"}, status=422)
        if name == "flaky" and seen <= int(arg or 1):
            return self._status(web, 503, "overloaded")
        if name == "429" and seen == 1:
            self.by_status[429] += 1
            return web.Response(status=429, text='{"error": "rate limited"}',
                                headers={"Retry-After": f"{self.retry_after:g}"}, content_type="application/json")
        if name == "honour_schema" and structured and _SOLUTION not in first_user:
            content = json.dumps(schema_instance(body["response_format"]["json_schema"]["schema"]))
        elif name == "invalid_json" or (name == "repairable" and not is_repair):
            content = "Sure! Here are the steps: framing, then retrieval."
        else:
            annotation = fake_annotation(model, first_user)
            if name == "bad_labels":
                for step in annotation["steps"]:
                    step["meta_reasoning_strategies"] = ["hypothesis_generation"]
                    step["strategy_confidence_rating"] = [{"strategy": "hypothesis_generation", "confidence_rating": 7}]
            content = json.dumps(annotation)
            if name == "honour_schema" and not structured:
                content = f"Here is the annotation of the solution:\n{content}\nHope this helps!"
        self.by_status[200] += 1
        reply = {
            "id": "chatcmpl-fake", "object": "chat.completion", "model": model,
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
            "usage": {"prompt_tokens": len(first_user) // 4, "completion_tokens": len(content) // 4,
                      "total_tokens": (len(first_user) + len(content)) // 4},
        }
        return web.json_response(reply)

    def _status(self, web, status: int, text: str):
        self.by_status[status] += 1
        return web.json_response({"error": {"message": text}}, status=status)

    async def _stats(self, request):
        from aiohttp import web

        return web.json_response(self.stats())

    async def _reset(self, request):
        from aiohttp import web

        self.reset()
        return web.json_response(self.stats())

    def _app(self):
        from aiohttp import web

        app = web.Application(client_max_size=64 << 20)
        app.router.add_post("/v1/chat/completions", self._reply)
        app.router.add_get("/stats", self._stats)
        app.router.add_post("/reset", self._reset)
        return app

    async def _serve(self) -> None:
        from aiohttp import web

        self._runner = web.AppRunner(self._app(), access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, backlog=1024)
        await site.start()
        self.port = self._runner.addresses[0][1]

    def start(self) -> FakeChatServer:
        def run() -> None:
            self._loop = asyncio.new_event_loop()
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(self._serve())
            self._ready.set()
            self._loop.run_forever()
            self._loop.run_until_complete(self._runner.cleanup())
            pending = asyncio.all_tasks(self._loop)  # handlers still sleeping (slow modes)
            for task in pending:
                task.cancel()
            if pending:
                self._loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-chat-server", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)

    def __enter__(self) -> FakeChatServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI-compatible annotation server on 127.0.0.1.")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--retry-after", type=float, default=1.0)
    args = parser.parse_args(argv)
    server = FakeChatServer(args.mode, args.port, args.retry_after)

    async def serve_forever() -> None:
        await server._serve()
        print(server.base_url, flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(serve_forever())
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""An async client for any OpenAI-compatible chat-completions endpoint (vLLM, SGLang, OpenAI, DeepSeek).

One ``POST {base_url}/chat/completions`` per call, on a pooled aiohttp session. Failures that may
pass are retried with capped exponential backoff and jitter: timeouts, connection errors, HTTP 408,
429 (waiting what ``Retry-After`` asks, up to ``max_backoff``) and 5xx, and a 200 whose body is not a
chat completion. Other 4xx fail at once. Each call makes at most ``1 + max_retries`` requests, so
the total number of requests of a run is bounded.

Structured outputs: a call may carry a ``response_format`` (a JSON Schema the server constrains
decoding to). Servers differ: OpenAI, vLLM, SGLang and llama.cpp's server honour it; ``transformers
serve`` refused it with HTTP 422 in older releases and ignores it with a warning in 5.15 and 5.25. With
``structured="auto"`` the first such call to an endpoint probes it once (one short request whose
schema contradicts its prompt: only a server that constrains decoding answers ``{"ok": "yes"}``) while
the other calls wait; an endpoint that refuses (a 4xx naming the field) or ignores it gets the plain
prompt from then on, logged once. ``"on"`` always sends it (a refusal fails the call), ``"off"`` never.
"""

from __future__ import annotations

import asyncio
import email.utils
import json
import logging
import os
import random
import re
import time
from dataclasses import dataclass, field

RETRY_STATUS = frozenset({408, 429})
STRUCTURED_MODES = ("auto", "on", "off")
# The probe: a prompt that asks for prose and a schema that allows only one object. A server that
# constrains decoding answers the object; one that ignores response_format answers the prose.
PROBE_MESSAGES = [{"role": "user", "content": "Say hello in one short sentence."}]
PROBE_FORMAT = {"type": "json_schema", "json_schema": {"name": "probe", "strict": True, "schema": {
    "type": "object", "properties": {"ok": {"type": "string", "enum": ["yes"]}},
    "required": ["ok"], "additionalProperties": False}}}
PROBE_MAX_TOKENS = 16
# A 4xx whose body names one of these is a refusal of response_format, not of the request as a whole.
_REFUSAL = re.compile(r"response_format|json_schema|structured output|guided", re.IGNORECASE)

log = logging.getLogger(__name__)


class ChatRequestError(RuntimeError):
    """A call that failed for good (non-retryable status, or retries exhausted).

    Attributes:
        status: the HTTP status of a non-retryable answer, None when retries ran out.
        body: the start of that answer's body.
    """

    def __init__(self, message: str, status: int | None = None, body: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.body = body


def is_structured_refusal(error: ChatRequestError) -> bool:
    """Whether a failed call was the server refusing ``response_format`` (a 4xx that names it)."""
    return error.status is not None and 400 <= error.status < 500 and bool(_REFUSAL.search(error.body))


@dataclass
class ChatResult:
    """The assistant message text and the token usage the server reported (0 when it reported none)."""

    text: str
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class UsageTotals:
    """Running totals over every call of a client."""

    requests: int = 0  # HTTP requests sent, retries included
    retries: int = 0
    failures: int = 0  # calls that raised ChatRequestError
    structured_probes: int = 0  # probe requests (auto mode: one per endpoint, or more while it fails)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    by_status: dict[str, int] = field(default_factory=dict)

    def as_dict(self) -> dict:
        return {
            "requests": self.requests, "retries": self.retries, "failures": self.failures,
            "structured_probes": self.structured_probes, "prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
            "by_status": dict(sorted(self.by_status.items())),
        }


def _retry_after_seconds(value: str | None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or an HTTP date), or None."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


class ChatClient:
    """Bounded-concurrency chat-completions client with retries; use as ``async with``.

    Args:
        base_url: endpoint root, e.g. ``http://127.0.0.1:8000/v1`` or ``https://api.openai.com/v1``.
        model: the ``model`` field of each request.
        api_key: sent as ``Authorization: Bearer``; None sends no header (local servers).
        concurrency: maximum requests in flight (also the connection-pool size).
        timeout: seconds allowed per request (connect + response).
        max_retries: retries per call after the first request.
        backoff: base delay in seconds; retry k waits about ``backoff * 2**k`` with jitter.
        max_backoff: cap on any single wait, ``Retry-After`` included.
        temperature: sampling temperature of each request.
        max_tokens: ``max_tokens`` of each request (None: server default).
        structured: ``auto`` (probe the endpoint once; send ``response_format`` only if it honours it),
            ``on`` (always; a refusal fails the call) or ``off`` (never).
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        api_key: str | None = None,
        concurrency: int = 16,
        timeout: float = 120.0,
        max_retries: int = 5,
        backoff: float = 1.0,
        max_backoff: float = 60.0,
        temperature: float = 0.0,
        max_tokens: int | None = None,
        structured: str = "auto",
    ) -> None:
        if structured not in STRUCTURED_MODES:
            raise ValueError(f"structured: choose from {STRUCTURED_MODES}, got {structured!r}")
        self.url = base_url.rstrip("/") + "/chat/completions"
        self.model = model
        self.api_key = api_key
        self.concurrency = concurrency
        self.timeout = timeout
        self.max_retries = max_retries
        self.backoff = backoff
        self.max_backoff = max_backoff
        self.temperature = temperature
        self.max_tokens = max_tokens
        # What the endpoint does with response_format: "on" / "off" as forced, else None until the probe
        # says used / refused / ignored.
        self.structured_verdict: str | None = {"auto": None, "on": "on", "off": "off"}[structured]
        self.usage = UsageTotals()
        self._session = None
        self._slots: asyncio.Semaphore | None = None
        self._probe: asyncio.Lock | None = None

    async def __aenter__(self) -> ChatClient:
        try:
            import aiohttp
        except ImportError:
            raise ImportError(
                "the LLM annotator needs aiohttp: pip install 'mralign_plugin[annotate]'"
            ) from None
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        self._session = aiohttp.ClientSession(
            headers=headers,
            connector=aiohttp.TCPConnector(limit=self.concurrency, ttl_dns_cache=300),
            timeout=aiohttp.ClientTimeout(total=self.timeout),
        )
        self._slots = asyncio.Semaphore(self.concurrency)
        self._probe = asyncio.Lock()
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    def _delay(self, attempt: int, retry_after: float | None) -> float:
        if retry_after is not None:
            return min(retry_after, self.max_backoff)
        cap = min(self.max_backoff, self.backoff * 2**attempt)
        return cap / 2 + random.uniform(0, cap / 2)  # "equal jitter": spreads a burst of retries

    @property
    def structured_state(self) -> str:
        """``used``, ``refused`` or ``ignored`` (auto, after the probe), ``untried``, ``on`` or ``off``."""
        return self.structured_verdict or "untried"

    async def chat(self, messages: list[dict], response_format: dict | None = None) -> ChatResult:
        """One chat completion; retries transient failures, raises :class:`ChatRequestError` otherwise.

        Args:
            messages: the chat messages.
            response_format: the structured-outputs member to send, subject to ``structured``.
        """
        body: dict = {"model": self.model, "messages": messages, "temperature": self.temperature}
        if self.max_tokens is not None:
            body["max_tokens"] = self.max_tokens
        try:
            return await self._chat(body, response_format)
        except ChatRequestError:
            self.usage.failures += 1
            raise

    async def _chat(self, body: dict, response_format: dict | None) -> ChatResult:
        if response_format is None or self.structured_verdict == "off":
            return await self._post(body)
        if self.structured_verdict is None:
            async with self._probe:  # one call probes the endpoint; the others wait for its verdict
                if self.structured_verdict is None:
                    await self._probe_endpoint()
        if self.structured_verdict not in ("used", "on"):
            return await self._post(body)
        try:
            return await self._post({**body, "response_format": response_format})
        except ChatRequestError as e:
            if not is_structured_refusal(e):
                raise
            if self.structured_verdict == "on":
                raise ChatRequestError(f"{e} (the endpoint refuses response_format; use --structured auto or off)",
                                       e.status, e.body) from None
            # Honoured the probe's schema but not this one (e.g. beyond its grammar converter): plain from now on.
            self._set_verdict("refused", f"HTTP {e.status}: {e.body[:200]}")
            return await self._post(body)

    async def _probe_endpoint(self) -> None:
        """Set :attr:`structured_verdict` from one short request (raises if the endpoint fails otherwise)."""
        body: dict = {"model": self.model, "messages": PROBE_MESSAGES, "temperature": 0.0,
                      "response_format": PROBE_FORMAT, "max_tokens": min(PROBE_MAX_TOKENS, self.max_tokens or PROBE_MAX_TOKENS)}
        self.usage.structured_probes += 1
        try:
            result = await self._post(body)
        except ChatRequestError as e:
            if not is_structured_refusal(e):
                raise  # says nothing about response_format: the next call probes again
            self._set_verdict("refused", f"HTTP {e.status}: {e.body[:200]}")
            return
        try:
            honoured = json.loads(result.text) == {"ok": "yes"}
        except json.JSONDecodeError:
            honoured = False
        if honoured:
            self._set_verdict("used", "")
        else:
            self._set_verdict("ignored", f"the probe's reply does not follow its schema: {result.text[:80]!r}")

    def _set_verdict(self, verdict: str, why: str) -> None:
        self.structured_verdict = verdict
        if verdict == "used":
            log.info("%s honours response_format: structured outputs on", self.url)
        else:
            log.warning("%s %s response_format (%s); sending the plain prompt from now on", self.url, verdict, why)

    async def _post(self, body: dict) -> ChatResult:
        import aiohttp

        usage = self.usage
        last_error = ""
        for attempt in range(self.max_retries + 1):
            retry_after = None
            usage.requests += 1
            try:
                async with self._slots, self._session.post(self.url, json=body) as resp:
                    status = str(resp.status)
                    usage.by_status[status] = usage.by_status.get(status, 0) + 1
                    if resp.status == 200:
                        result = _parse_completion(await resp.json(content_type=None))
                        if result is not None:
                            usage.prompt_tokens += result.prompt_tokens
                            usage.completion_tokens += result.completion_tokens
                            return result
                        last_error = "HTTP 200 without a chat completion in the body"
                    elif resp.status in RETRY_STATUS or resp.status >= 500:
                        retry_after = _retry_after_seconds(resp.headers.get("Retry-After"))
                        last_error = f"HTTP {resp.status}: {(await resp.text())[:200]}"
                    else:
                        text = (await resp.text())[:300]
                        raise ChatRequestError(f"HTTP {resp.status} from {self.url}: {text}", resp.status, text)
            except (asyncio.TimeoutError, aiohttp.ClientError, ValueError) as e:
                # ValueError: a 200 body that is not JSON. ClientError covers connection resets.
                usage.by_status[type(e).__name__] = usage.by_status.get(type(e).__name__, 0) + 1
                last_error = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            if attempt == self.max_retries:
                break
            usage.retries += 1
            await asyncio.sleep(self._delay(attempt, retry_after))
        raise ChatRequestError(f"gave up after {self.max_retries + 1} attempts; last error: {last_error}")


def _parse_completion(data: object) -> ChatResult | None:
    try:
        text = data["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        return None
    if not isinstance(text, str):
        return None
    usage = data.get("usage") or {}
    return ChatResult(text, int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


def api_key_from_env(name: str | None) -> str | None:
    """The API key in environment variable ``name``; None when ``name`` is empty (local servers).

    Raises:
        ValueError: ``name`` is given but unset, so a run never starts without its key.
    """
    if not name:
        return None
    key = os.environ.get(name)
    if not key:
        raise ValueError(f"environment variable {name} (the API key) is not set; export it or pass --api-key-env ''")
    return key

"""The chat-completions client against a real HTTP server on 127.0.0.1 (tests/support/fake_chat_server.py)."""

import asyncio
import json
import time

import pytest
from fake_chat_server import FakeChatServer

from mralign_plugin.annotate.client import ChatClient, ChatRequestError, _retry_after_seconds, api_key_from_env
from mralign_plugin.annotate.prompts import build_messages, parse_annotation


@pytest.fixture(scope="module")
def server():
    with FakeChatServer(retry_after=0.3) as srv:
        yield srv


def chat(server, question, **kwargs):
    kwargs = {"backoff": 0.01, "max_backoff": 5.0, **kwargs}
    messages = build_messages(question, ["x"], ["Para one.", "Para two.", "Para three."])

    async def run():
        async with ChatClient(server.base_url, kwargs.pop("model", "m"), **kwargs) as client:
            try:
                return await client.chat(messages), client.usage
            except ChatRequestError as e:
                return e, client.usage

    return asyncio.run(run())


def test_ok_answer_parses_and_usage_is_counted(server):
    result, usage = chat(server, "ok question")
    steps, final = parse_annotation(result.text, 3)
    assert sum(len(st["paragraphs"]) for st in steps) == 3 and final == 8
    assert usage.requests == 1 and usage.retries == 0 and result.prompt_tokens > 0
    assert usage.prompt_tokens == result.prompt_tokens


def test_answers_are_deterministic_per_model(server):
    a1, _ = chat(server, "same", model="a")
    a2, _ = chat(server, "same", model="a")
    assert a1.text == a2.text


def test_500_is_retried_a_bounded_number_of_times(server):
    before = server.requests
    error, usage = chat(server, "[mock:500] q", max_retries=3)
    assert isinstance(error, ChatRequestError) and "gave up after 4 attempts" in str(error) and "HTTP 500" in str(error)
    assert usage.requests == 4 and usage.retries == 3 and usage.failures == 1
    assert server.requests - before == 4


def test_flaky_5xx_recovers(server):
    result, usage = chat(server, "[mock:flaky:2] q", max_retries=3)
    assert not isinstance(result, Exception)
    assert usage.requests == 3 and usage.by_status == {"503": 2, "200": 1}


def test_429_honours_retry_after(server):
    start = time.perf_counter()
    result, usage = chat(server, "[mock:429] q", backoff=0.0)
    assert not isinstance(result, Exception) and usage.requests == 2
    assert time.perf_counter() - start >= 0.3  # the server asked for 0.3 s; backoff alone would be 0


def test_timeout_is_retried(server):
    result, usage = chat(server, "[mock:hang_once:3] q", timeout=0.3, max_retries=2)
    assert not isinstance(result, Exception)
    assert usage.requests == 2 and usage.retries == 1


def test_timeouts_exhaust_retries(server):
    start = time.perf_counter()
    error, usage = chat(server, "[mock:slow:3] q", timeout=0.2, max_retries=1)
    assert isinstance(error, ChatRequestError) and "Timeout" in str(error)
    assert usage.requests == 2 and time.perf_counter() - start < 2.5


def test_4xx_fails_at_once(server):
    error, usage = chat(server, "[mock:400] q", max_retries=5)
    assert isinstance(error, ChatRequestError) and "HTTP 400" in str(error)
    assert usage.requests == 1 and usage.retries == 0


def test_connection_refused_is_retried_then_fails():
    with FakeChatServer() as srv:
        url = srv.base_url
    client_server = type("S", (), {"base_url": url})()
    error, usage = chat(client_server, "q", max_retries=2)
    assert isinstance(error, ChatRequestError) and usage.requests == 3


def test_concurrency_is_bounded():
    with FakeChatServer(mode="slow:0.2") as srv:
        messages = [build_messages(f"q{i}", None, ["p"]) for i in range(8)]

        async def run():
            async with ChatClient(srv.base_url, "m", concurrency=4) as client:
                start = time.perf_counter()
                await asyncio.gather(*(client.chat(m) for m in messages))
                return time.perf_counter() - start

        elapsed = asyncio.run(run())
    assert 0.38 < elapsed < 1.5  # 8 requests of 0.2 s, 4 at a time: two waves


def test_retry_after_header_forms():
    assert _retry_after_seconds("2") == 2.0
    assert _retry_after_seconds("0.5") == 0.5
    assert _retry_after_seconds(None) is None
    assert _retry_after_seconds("soon") is None
    assert _retry_after_seconds("Wed, 21 Oct 2015 07:28:00 GMT") == 0.0  # a date in the past: no wait


def test_api_key_env(monkeypatch):
    assert api_key_from_env(None) is None and api_key_from_env("") is None
    monkeypatch.setenv("MRALIGN_TEST_KEY", "sk-test")
    assert api_key_from_env("MRALIGN_TEST_KEY") == "sk-test"
    monkeypatch.delenv("MRALIGN_TEST_KEY")
    with pytest.raises(ValueError, match="MRALIGN_TEST_KEY"):
        api_key_from_env("MRALIGN_TEST_KEY")


def test_authorization_header_and_request_body(server):
    seen = {}

    async def run():
        from aiohttp import web

        async def handler(request):
            seen["auth"] = request.headers.get("Authorization")
            seen["body"] = await request.json()
            return web.json_response({"choices": [{"message": {"role": "assistant", "content": "hi"}}]})

        app = web.Application()
        app.router.add_post("/v1/chat/completions", handler)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        try:
            async with ChatClient(f"http://127.0.0.1:{port}/v1/", "my-model", api_key="sk-1", temperature=0.3,
                                  max_tokens=50) as client:
                return await client.chat([{"role": "user", "content": "x"}])
        finally:
            await runner.cleanup()

    result = asyncio.run(run())
    assert result.text == "hi" and result.prompt_tokens == 0
    assert seen["auth"] == "Bearer sk-1"
    assert seen["body"] == {"model": "my-model", "messages": [{"role": "user", "content": "x"}],
                            "temperature": 0.3, "max_tokens": 50}
    json.dumps(seen)


def structured_chats(mode, structured, n=6, concurrency=3, question="q"):
    """n calls carrying the annotation schema at ``concurrency`` to a server in ``mode``; (results, client, stats)."""
    from mralign_plugin.annotate.prompts import response_format

    messages = [build_messages(f"{question} {i}", ["x"], ["Para one.", "Para two."]) for i in range(n)]

    async def run(srv):
        async with ChatClient(srv.base_url, "m", structured=structured, backoff=0.01, concurrency=concurrency) as client:
            results = await asyncio.gather(*(client.chat(m, response_format(2)) for m in messages), return_exceptions=True)
            return results, client

    with FakeChatServer(mode=mode) as srv:
        results, client = asyncio.run(run(srv))
        return results, client, {**srv.stats(), "last_response_format": srv.last_response_format}


@pytest.mark.parametrize(("mode", "verdict", "status"), [("refuse_schema", "refused", {"422": 1, "200": 6}),
                                                         ("ok", "ignored", {"200": 7})])
def test_an_endpoint_that_refuses_or_ignores_response_format_is_probed_once_then_sent_plain(mode, verdict, status, caplog):
    with caplog.at_level("WARNING", logger="mralign_plugin.annotate.client"):
        results, client, stats = structured_chats(mode, "auto")
    assert all(parse_annotation(r.text, 2)[0] for r in results)
    # one probe, then six plain calls; one warning
    assert client.usage.structured_probes == 1 and client.usage.failures == 0
    assert client.usage.requests == 7 and client.usage.by_status == status
    assert stats["with_response_format"] == 1 and client.structured_state == verdict
    assert [r.levelname for r in caplog.records] == ["WARNING"] and f"{verdict} response_format" in caplog.text


def test_an_endpoint_that_honours_response_format_gets_the_schema_every_time():
    from mralign_plugin.annotate.prompts import response_format

    results, client, stats = structured_chats("honour_schema", "auto")
    assert all(json.loads(r.text)["index_base"] == 0 for r in results)  # bare JSON: the server kept to the schema
    assert client.structured_state == "used" and client.usage.requests == 7 and client.usage.structured_probes == 1
    assert stats["with_response_format"] == 7
    assert stats["last_response_format"] == response_format(2)


def test_structured_on_sends_without_probing_and_fails_a_refused_call_and_off_never_sends_it():
    results, client, stats = structured_chats("refuse_schema", "on", n=2)
    assert all(isinstance(r, ChatRequestError) and "use --structured auto or off" in str(r) for r in results)
    assert client.usage.failures == 2 and client.usage.structured_probes == 0 and client.structured_state == "on"
    results, client, stats = structured_chats("honour_schema", "off", n=2)
    assert all(r.text.startswith("Here is the annotation") for r in results)  # plain prompt: prose around the JSON
    assert stats["with_response_format"] == 0 and client.structured_state == "off"


def test_a_failing_probe_fails_the_call_and_the_next_call_probes_again():
    results, client, _ = structured_chats("400", "auto", n=2, concurrency=1)
    assert all(isinstance(r, ChatRequestError) and r.status == 400 for r in results)
    assert client.structured_state == "untried" and client.usage.structured_probes == 2
    with pytest.raises(ValueError, match="structured"):
        ChatClient("http://x/v1", "m", structured="maybe")

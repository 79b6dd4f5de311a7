"""Few-shot chat turns and two-phase generation (pipeline/generate.py) on the tiny random Llama."""

import json

import pytest

from mralign_plugin.core.segment import parse_response
from mralign_plugin.data import few_shot_factual_path
from mralign_plugin.pipeline.generate import (
    SamplingConfig,
    TransformersEngine,
    complete,
    load_few_shot,
    messages_for,
    render_prompt,
)

pytestmark = pytest.mark.integration
GREEDY = SamplingConfig(n=1, temperature=0.0, max_new_tokens=12)


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    return TransformersEngine(str(build_tiny_llama(tmp_path_factory.mktemp("tiny"))), dtype="float32", batch_size=4)


@pytest.fixture(scope="module")
def chats():
    examples = load_few_shot(few_shot_factual_path())
    return [messages_for(q, "Question: {question}", examples) for q in ("What is the capital of Peru?", "Who?", "Why?")]


def test_few_shot_examples_become_earlier_turns(chats):
    examples = load_few_shot(few_shot_factual_path())
    assert len(examples) == 3 and [m["role"] for m in chats[0]] == ["user", "assistant"] * 3 + ["user"]
    assert chats[0][0]["content"] == f"Question: {examples[0]['question']}"
    worked = parse_response(chats[0][1]["content"])
    assert [chats[0][1]["content"][a:b] for a, b in worked.paragraphs] == examples[0]["thinking"]
    assert worked.answer == examples[0]["answer"]


def test_bad_few_shot_file_names_the_example_and_field(tmp_path):
    bad = tmp_path / "ex.json"
    bad.write_text(json.dumps({"examples": [{"question": "q", "thinking": ["t"], "answer": "a"},
                                            {"question": "q", "thinking": "not a list", "answer": "a"}]}))
    with pytest.raises(ValueError, match=r"examples\[1\]\.thinking"):
        load_few_shot(bad)


def test_two_phase_responses_are_always_closed(engine, chats):
    on = complete(engine, chats, GREEDY, thinking=True, thinking_mode="prompt", two_phase=True, answer_max_tokens=5)
    off = complete(engine, chats, GREEDY, thinking=False, thinking_mode="prompt", two_phase=True, answer_max_tokens=5)
    assert [len(x) for x in on] == [len(x) for x in off] == [1, 1, 1]
    for chat, (text_on,), (text_off,) in zip(chats, on, off, strict=True):
        assert text_on.startswith("<think>\n") and text_on.endswith("</answer>") and "\n</think>\n<answer>" in text_on
        parsed = parse_response(text_on)
        assert parsed.has_thinking and not parsed.unterminated
        # Phase 1 is the greedy continuation of the prefilled "<think>\n" within the budget (the random
        # model never closes the tag, so the budget ends it and the answer phase closes it).
        head = render_prompt(engine.tokenizer, chat, True, "prompt") + "<think>\n"
        assert text_on[len("<think>\n"):].startswith(engine.generate([head], GREEDY)[0][0].strip())
        assert text_off.startswith("<think>\n\n</think>\n<answer>") and text_off.endswith("</answer>")
        assert not parse_response(text_off).has_thinking


def test_phase_one_stops_at_the_stop_string(engine, chats):
    """Greedy is deterministic: take a piece of the free continuation as the stop; output ends before it."""
    prompt = render_prompt(engine.tokenizer, chats[0], True, "prompt")
    free = engine.generate([prompt], SamplingConfig(n=1, temperature=0.0, max_new_tokens=24))[0][0]
    stop = free[len(free) // 2 : len(free) // 2 + 3]
    assert stop.strip(), free
    stopped = engine.generate([prompt], SamplingConfig(n=1, temperature=0.0, max_new_tokens=24), stop=stop)[0][0]
    assert stop not in stopped and free.startswith(stopped) and len(stopped) < len(free)


def test_two_phase_with_several_draws_keeps_them_per_question(engine, chats):
    sampled = SamplingConfig(n=2, temperature=1.0, top_p=1.0, max_new_tokens=8, seed=0)
    out = complete(engine, chats[:2], sampled, thinking=True, thinking_mode="prompt", two_phase=True, answer_max_tokens=4)
    assert [len(x) for x in out] == [2, 2] and all(t.endswith("</answer>") for x in out for t in x)


def test_shared_prefix_cache_gives_the_plain_batch_logits(engine, chats):
    """Few-shot prompts share their examples: the prefilled prefix + padded suffixes score as plain left padding."""
    import torch

    prompts = [render_prompt(engine.tokenizer, m, True, "prompt") + "<think>\n" for m in chats]
    assert engine._encode(prompts, 2)["input_ids"].shape[0] == 6  # each prompt twice (n = 2)
    cached = engine._encode(prompts, 1)
    assert "past_key_values" in cached
    plain = {**engine.tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False),
             "num_return_sequences": 1}
    scores = []
    for inputs in (cached, plain):
        out = engine.model.generate(**inputs, max_new_tokens=3, do_sample=False, output_scores=True,
                                    return_dict_in_generate=True, pad_token_id=engine.tokenizer.pad_token_id)
        scores.append(torch.stack(out.scores))  # (3, 3, V)
    torch.testing.assert_close(scores[0], scores[1], atol=1e-4, rtol=1e-4)
    engine.MIN_SHARED_PREFIX = 10**9  # the plain path is still taken when told
    try:
        assert "past_key_values" not in engine._encode(prompts, 1)
    finally:
        engine.MIN_SHARED_PREFIX = type(engine).MIN_SHARED_PREFIX

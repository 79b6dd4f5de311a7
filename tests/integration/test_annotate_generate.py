"""Candidate generation on CPU through the real transformers path, with a tiny local Llama (both modes)."""

import json

import pytest

from mralign_plugin.pipeline.generate import (
    EMPTY_THINK,
    INFERENCE_PROMPT,
    GenerateOptions,
    SamplingConfig,
    TransformersEngine,
    generate_file,
    make_engine,
    messages_for,
    render_prompt,
    resolve_thinking_mode,
)

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    return str(build_tiny_llama(tmp_path_factory.mktemp("tiny")))


@pytest.fixture(scope="module")
def engine(tiny):
    return TransformersEngine(tiny, dtype="float32", batch_size=4)


def test_modes_render_through_the_chat_template(engine):
    messages = messages_for("What is the capital of France?")
    assert messages[0]["content"] == INFERENCE_PROMPT.format(question="What is the capital of France?")
    assert resolve_thinking_mode(engine.tokenizer, "auto") == "template"
    on = render_prompt(engine.tokenizer, messages, True, "template")
    off = render_prompt(engine.tokenizer, messages, False, "template")
    assert on.endswith("<|im_start|>assistant\n") and off == on + EMPTY_THINK
    # the prompt-based fallback gives the same two texts for a Qwen3-style template
    assert render_prompt(engine.tokenizer, messages, True, "prompt") == on
    assert render_prompt(engine.tokenizer, messages, False, "prompt") == off


def test_prompt_mode_for_a_template_without_the_flag(tiny):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny)
    tok.chat_template = "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}" \
                        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    assert resolve_thinking_mode(tok, "auto") == "prompt"
    with pytest.raises(ValueError, match="no enable_thinking"):
        resolve_thinking_mode(tok, "template")
    off = render_prompt(tok, messages_for("q"), False, "prompt")
    assert off.endswith("<|im_start|>assistant\n" + EMPTY_THINK)


def test_left_padded_batch_equals_one_by_one_greedy(engine):
    greedy = SamplingConfig(n=1, temperature=0.0, max_new_tokens=12)
    prompts = [render_prompt(engine.tokenizer, messages_for(q), True, "template")
               for q in ("Short?", "A much longer question about the capital city of a large country?", "Mid length q?")]
    batched = engine.generate(prompts, greedy)
    single = [engine.generate([p], greedy)[0] for p in prompts]
    assert batched == single
    assert engine.tokenizer.padding_side == "left"


def test_generate_file_both_modes_n_draws_and_resume(tiny, tmp_path):
    qa = tmp_path / "qa.jsonl"
    qa.write_text("".join(json.dumps({"question": f"Capital of country {i}?", "answer": ["X"]}) + "\n" for i in range(5)),
                  encoding="utf-8")
    out = tmp_path / "cand.jsonl"
    opts = GenerateOptions(model=tiny, engine="transformers", dtype="float32", batch_size=3, chunk_size=2,
                           progress=False, limit=3)
    sampling = SamplingConfig(n=2, temperature=0.7, top_p=0.9, max_new_tokens=8, seed=1)
    s = generate_file(qa, out, opts, sampling)
    assert (s["questions"], s["generated"], s["skipped_done"]) == (3, 3, 0)
    rows = [json.loads(line) for line in open(out)]
    assert [r["id"] for r in rows] == ["qa-000000", "qa-000001", "qa-000002"]
    for r in rows:
        assert set(r["draws"]) == {"thinking_on", "thinking_off"}
        assert all(len(r["draws"][k]) == 2 and all(isinstance(t, str) for t in r["draws"][k]) for k in r["draws"])
        assert r["sampling"] == {"n": 2, "temperature": 0.7, "top_p": 0.9, "top_k": 0, "max_new_tokens": 8, "seed": 1}
        assert (r["engine"], r["thinking_mode"], r["answers"]) == ("transformers", "template", ["X"])
        assert r["prompt"] == messages_for(r["question"])
    opts.limit = None
    s = generate_file(qa, out, opts, sampling)  # resume: only the two new questions
    assert (s["generated"], s["skipped_done"]) == (2, 3)
    assert len({json.loads(line)["id"] for line in open(out)}) == 5


def test_engine_choice(tiny):
    with pytest.raises(ImportError, match="vllm"):
        make_engine("vllm", tiny)
    with pytest.raises(ValueError, match="unknown engine"):
        make_engine("tgi", tiny)
    assert make_engine("auto", tiny).name == "transformers"  # no vLLM on CPU machines


def test_custom_prompt_template(engine, tmp_path):
    from mralign_plugin.pipeline.generate import generate_rows

    rows = generate_rows(engine, [{"id": "a", "question": "Why?", "answers": ["x"]}],
                         SamplingConfig(n=1, temperature=0.0, max_new_tokens=2), prompt_template="Q: {question}\nA:")
    assert rows[0]["prompt"] == [{"role": "user", "content": "Q: Why?\nA:"}]
    with pytest.raises(ValueError, match="{question}"):
        generate_file(tmp_path / "none.jsonl", tmp_path / "o.jsonl", GenerateOptions(prompt_template="no slot"))

"""The tiny random Llama fixture: loadable, deterministic, offsets exact, Qwen3-style template."""

import pytest

from mralign_plugin.tiny_model import build_tiny_llama


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny"), seed=0)


def test_loads_with_auto_classes(tiny):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    model = AutoModelForCausalLM.from_pretrained(tiny)
    assert model.config.vocab_size == len(tokenizer)
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer.pad_token == "<|endoftext|>"
    for tag in ("<think>", "</think>", "<answer>", "</answer>"):
        assert len(tokenizer(tag, add_special_tokens=False)["input_ids"]) == 1


def test_deterministic(tiny, tmp_path):
    again = build_tiny_llama(tmp_path, seed=0)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again / name).read_bytes() == (tiny / name).read_bytes()


def test_offsets_cover_the_text_and_thinking_survives_decoding(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    text = "<think>\nFirst, recall.\n\nThen check: Paris!\n</think>\n<answer>Paris</answer>"
    encoding = tokenizer(text, return_offsets_mapping=True, add_special_tokens=False)
    assert "".join(text[a:b] for a, b in encoding["offset_mapping"]) == text
    assert tokenizer.decode(encoding["input_ids"], skip_special_tokens=True) == text


def test_chat_template_honours_enable_thinking(tiny):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny)
    messages = [{"role": "user", "content": "Capital of France?"}]
    on = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    off = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True, enable_thinking=False)
    assert on == "<|im_start|>user\nCapital of France?<|im_end|>\n<|im_start|>assistant\n"
    assert off == on + "<think>\n\n</think>\n\n"

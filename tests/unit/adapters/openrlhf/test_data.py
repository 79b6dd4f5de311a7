"""KTO rows → tensors: token weights on the right (shifted) positions, verbatim responses, refusals."""

import numpy as np
import pytest
import torch

from mralign_plugin.adapters.openrlhf.data import KTODataset, check_micro_batch, class_balance_message, pad_rows
from mralign_plugin.core.formats import FormatError
from mralign_plugin.core.kto_rows import encode_row
from mralign_plugin.tiny_model import build_tokenizer

RESPONSE = (
    "<think>\nThe question asks for a capital.\n\nI recall Paris is the capital.\n\nDouble-check: yes.\n</think>\n"
    "<answer>Paris</answer>"
)
ROW = {
    "prompt": "What is the capital of France?",
    "response": RESPONSE,
    "label": True,
    "steps": [{"paragraphs": [0], "states": ["framing"]}, {"paragraphs": [1, 2], "states": ["retrieval"]}],
    "step_weights": [2.0, 0.5],
}


@pytest.fixture(scope="module")
def tokenizer():
    return build_tokenizer(seed=0)  # a real byte-level BPE fast tokenizer, trained locally


def test_weights_land_on_the_right_tokens(tokenizer):
    item, status = encode_row(ROW, tokenizer, max_len=512, use_weights=True)
    assert status == "ok"
    weights = item["weights"]
    pieces = [tokenizer.decode([t]) for t in item["response_ids"]]
    assert "".join(pieces[:-1]) == RESPONSE and pieces[-1] == tokenizer.eos_token  # verbatim + forced EOS
    text_pos = 0
    for piece, w in zip(pieces[:-1], weights[:-1], strict=True):
        start = text_pos
        text_pos += len(piece)
        first = RESPONSE.index("The question")
        second = RESPONSE.index("I recall")
        end_think = RESPONSE.index("</think>")
        if first <= start < second:
            assert w == 2.0, piece  # paragraph 0 and its separator
        elif second <= start < end_think:
            assert w == 0.5, piece  # paragraphs 1-2 (one step)
        else:
            assert w == 1.0, piece  # tags, answer
    assert weights[-1] == 1.0  # EOS


def test_shifted_positions_match_actor_logprobs(tokenizer):
    """Actor's log-probs at column t score token t+1: the mask/weights must sit one column to the left."""
    item, _ = encode_row(ROW, tokenizer, max_len=512, use_weights=True)
    batch = pad_rows([item["prompt_ids"]], [item["response_ids"]], [item["weights"]], tokenizer.pad_token_id)
    ids, mask, w = batch["input_ids"][0], batch["response_mask"][0], batch["token_weights"][0]
    scored = ids[1:][mask]  # the tokens whose log-probs the loss sums
    assert scored.tolist() == item["response_ids"]
    assert torch.equal(w[mask], torch.as_tensor(item["weights"]))
    assert (w[~mask] == 0).all()


def test_weights_off_or_missing_give_ones(tokenizer):
    item, status = encode_row(ROW, tokenizer, max_len=512, use_weights=False)
    assert status == "ok" and (item["weights"] == 1).all()
    plain = {"prompt": "Q?", "completion": "<think>\nx\n</think>\nA", "label": False}  # unpaired KTO jsonl
    item, status = encode_row(plain, tokenizer, max_len=512, use_weights=True)
    assert status == "unweighted" and (item["weights"] == 1).all() and item["desirable"] is False


def test_chat_template_never_touches_the_response(tokenizer):
    # A template that would rewrite thinking in an assistant turn (as Qwen3's strips it) must not matter:
    # only the prompt goes through it, the response is appended as tokenised alone.
    tokenizer = build_tokenizer(seed=0)
    tokenizer.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] | replace('<think>', '') }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    row = dict(ROW, prompt=[{"role": "user", "content": "<think> capital of France?"}])
    item, _ = encode_row(row, tokenizer, max_len=512, use_weights=True)
    assert tokenizer.decode(item["prompt_ids"]).endswith("<|im_start|>assistant\n")
    assert " capital of France?" in tokenizer.decode(item["prompt_ids"])
    assert tokenizer.decode(item["response_ids"][:-1]) == RESPONSE
    # string prompts use the template only when asked
    raw, _ = encode_row(ROW, tokenizer, max_len=512, use_weights=True, apply_chat_template=False)
    assert tokenizer.decode(raw["prompt_ids"]) == ROW["prompt"]


def test_micro_batch_of_one_is_refused(tokenizer):
    with pytest.raises(ValueError, match="micro_batch_size must be >= 2"):
        check_micro_batch("batch", 1)
    check_micro_batch("accumulated", 1)
    check_micro_batch("none", 1)
    dataset = KTODataset([ROW, dict(ROW, label=False)], tokenizer, 512, kl_mode="batch")
    with pytest.raises(ValueError, match="kl_mode=accumulated"):
        dataset.collate_fn([dataset[0]])


def test_collate_builds_mismatched_pairs(tokenizer):
    other = {"prompt": "Name the capital of Italy.", "response": "<think>\nRome.\n</think>\nRome", "label": False}
    dataset = KTODataset([ROW, other, dict(ROW, prompt="Third?")], tokenizer, 512, kl_mode="batch")
    batch = dataset.collate_fn([dataset[0], dataset[1], dataset[2]])
    assert batch["desirable"].tolist() == [True, False, True]
    kl = batch["kl"]
    for i in range(3):
        j = (i + 1) % 3
        scored = kl["input_ids"][i, 1:][kl["response_mask"][i]].tolist()
        assert scored == dataset[j]["response_ids"]  # (prompt_i, response_{i+1})
        n_prompt = len(dataset[i]["prompt_ids"])
        assert kl["input_ids"][i, :n_prompt].tolist() == dataset[i]["prompt_ids"]
    assert "kl" not in KTODataset([ROW], tokenizer, 512, kl_mode="none").collate_fn([dataset[0]])


def test_overlength_is_dropped_or_thinking_truncated(tokenizer):
    full, _ = encode_row(ROW, tokenizer, max_len=512, use_weights=True)
    n = len(full["prompt_ids"]) + len(full["response_ids"])
    max_len = n - 5
    assert encode_row(ROW, tokenizer, max_len=max_len, use_weights=True) == (None, "dropped")

    item, status = encode_row(ROW, tokenizer, max_len=max_len, use_weights=True, overlength="truncate_thinking")
    assert status == "truncated"
    assert len(item["prompt_ids"]) + len(item["response_ids"]) == max_len
    text = tokenizer.decode(item["response_ids"])
    assert text.startswith("<think>\nThe question") and text.endswith("</think>\n<answer>Paris</answer>" + tokenizer.eos_token)
    assert len(item["weights"]) == len(item["response_ids"])

    # the answer is never cut: when removing the whole thinking is not enough, the row is dropped
    tiny = encode_row(ROW, tokenizer, max_len=len(full["prompt_ids"]) + 8, use_weights=True,
                      overlength="truncate_thinking")
    assert tiny == (None, "dropped")

    dataset = KTODataset([ROW, ROW, dict(ROW, prompt="x" * 2000)], tokenizer, max_len=n)
    assert dataset.counts["dropped"] == 1 and len(dataset) == 2


def test_class_balance_message():
    assert class_balance_message(4830, 2143, 1.0, 1.5) is None  # the paper's data: ratio 1.50
    message = class_balance_message(100, 100, 1.0, 1.5)  # ratio 0.667
    assert "0.667" in message and "kto.undesirable_weight=0.800" in message
    assert "needs both classes" in class_balance_message(10, 0, 1.0, 1.5)


@pytest.mark.parametrize(
    "row, message",
    [
        ({"prompt": "q", "label": True}, "response"),
        ({"prompt": "q", "response": "a", "label": "yes"}, "label"),
        ({"response": "a", "label": True}, "prompt"),
        (dict(ROW, step_weights=[1.0]), "step_weights"),
    ],
)
def test_bad_rows_name_the_problem(tokenizer, row, message):
    with pytest.raises(FormatError, match=message):
        encode_row(dict(row, _line="data.jsonl:7"), tokenizer, 512, use_weights=True)


def test_weight_vectors_are_float32(tokenizer):
    item, _ = encode_row(ROW, tokenizer, 512, use_weights=True)
    assert item["weights"].dtype == np.float32


def test_fixed_pairs_are_a_seeded_derangement(tokenizer):
    rows = [dict(ROW, prompt=f"Question {i}?") for i in range(7)]
    dataset = KTODataset(rows, tokenizer, 512, kl_mode="fixed", seed=3)
    partner = dataset.partner
    assert sorted(partner) == sorted(partner.values()) == list(range(7))
    assert all(i != j for i, j in partner.items())
    assert partner == KTODataset(rows, tokenizer, 512, kl_mode="fixed", seed=3).partner
    batch = dataset.collate_fn([dataset[2]])  # works at micro-batch 1
    kl = batch["kl"]
    assert kl["input_ids"][0, 1:][kl["response_mask"][0]].tolist() == dataset[partner[2]]["response_ids"]
    assert batch["index"] == [2]

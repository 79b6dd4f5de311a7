"""A tiny random Llama plus a locally trained tokenizer: the fastest fixture for trainer tests.

No model hub is needed. The tokenizer is a byte-level BPE trained with the ``tokenizers`` library on
a small built-in corpus, so every string encodes and ``return_offsets_mapping`` covers the text
exactly (no offset trimming). Its added tokens mimic Qwen3: ``<|im_start|>``, ``<|im_end|>`` (eos),
``<|endoftext|>`` (pad), and ``<think>``, ``</think>``, ``<answer>``, ``</answer>`` as single tokens that
``decode(skip_special_tokens=True)`` keeps, as Qwen3's do. The chat template is Qwen3-style and honours
``enable_thinking=False`` (it pre-fills an empty ``<think>\\n\\n</think>\\n\\n`` block).

    python -m mralign_plugin.tiny_model /tmp/tiny-llama
    python -c "from transformers import AutoModelForCausalLM as M; M.from_pretrained('/tmp/tiny-llama')"

Building takes about a second; the same arguments always give the same files.
"""

from __future__ import annotations

import argparse
import random
from pathlib import Path

IM_START, IM_END, PAD = "<|im_start|>", "<|im_end|>", "<|endoftext|>"
THINK_TOKENS = ("<think>", "</think>", "<answer>", "</answer>")

# Qwen3-style, written from its documented behaviour: ChatML turns; with enable_thinking=false the
# generation prompt carries an empty think block, so the model answers directly.
CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}"
    "{{- '<|im_start|>assistant\\n' }}"
    "{%- if enable_thinking is defined and enable_thinking is false %}"
    "{{- '<think>\\n\\n</think>\\n\\n' }}"
    "{%- endif %}"
    "{%- endif %}"
)

_WORDS = (
    "the of and to in is was for on that with as by at from it an be this which or are his her their "
    "who what when where why how many much first last year city country capital river mountain element "
    "number symbol president king queen song album film book wrote written directed born died located "
    "largest smallest population currency language official state france paris germany berlin italy rome "
    "spain madrid japan tokyo china beijing india delhi brazil canada ottawa egypt cairo gold silver iron "
    "oxygen hydrogen carbon water answer question think step check recall so therefore maybe perhaps wait "
    "let me first then next finally because however also not yes no true false known called named about"
).split()


def _corpus(seed: int, n_lines: int = 3000) -> list[str]:
    """Deterministic pseudo-English with <think>/<answer> structure, digits and punctuation."""
    rng = random.Random(seed)
    lines = []
    for i in range(n_lines):
        words = [rng.choice(_WORDS) for _ in range(rng.randint(4, 14))]
        sentence = " ".join(words).capitalize() + rng.choice([".", "?", "!", ",", ":"])
        if i % 3 == 0:
            sentence = f"<think>\n{sentence}\n\n{sentence[::-1]}\n</think>\n<answer>{words[-1]}</answer>"
        lines.append(f"{sentence} {rng.randint(0, 2100)} ({rng.choice(_WORDS)}) 'x' \"y\" - {i % 10}")
    return lines


def build_tokenizer(seed: int = 0, vocab_size: int = 1024):
    """Train the byte-level BPE and wrap it as a transformers fast tokenizer (not saved)."""
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, processors, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.post_processor = processors.ByteLevel(trim_offsets=False)
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=[PAD, IM_START, IM_END],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_corpus(seed), trainer=trainer)
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        chat_template=CHAT_TEMPLATE,
        model_max_length=4096,
        padding_side="left",
    )


def build_tiny_llama(
    out_dir: str | Path,
    seed: int = 0,
    vocab_size: int = 1024,
    hidden_size: int = 64,
    num_layers: int = 2,
    num_heads: int = 4,
    num_kv_heads: int = 2,
    intermediate_size: int = 128,
    max_position_embeddings: int = 4096,
) -> Path:
    """Write a deterministic random ``LlamaForCausalLM`` and its tokenizer to ``out_dir``.

    Args:
        out_dir: directory to create (or overwrite files in).
        seed: seeds both the tokenizer corpus and the weight initialisation.
        vocab_size: BPE vocabulary size before the 4 added think/answer tokens.
        hidden_size, num_layers, num_heads, num_kv_heads, intermediate_size, max_position_embeddings:
            Llama shape (about 0.2 M parameters with the defaults).

    Returns:
        ``Path(out_dir)``, loadable with ``AutoModelForCausalLM`` / ``AutoTokenizer.from_pretrained``.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer(seed=seed, vocab_size=vocab_size)

    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=num_layers,
        num_attention_heads=num_heads,
        num_key_value_heads=num_kv_heads,
        max_position_embeddings=max_position_embeddings,
        bos_token_id=tokenizer.convert_tokens_to_ids(IM_START),
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        tie_word_embeddings=False,
        torch_dtype="float32",
    )
    # fork_rng keeps the caller's global RNG state untouched.
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write a tiny random Llama + byte-level BPE tokenizer.")
    parser.add_argument("out_dir")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--vocab-size", type=int, default=1024)
    parser.add_argument("--hidden-size", type=int, default=64)
    parser.add_argument("--num-layers", type=int, default=2)
    args = parser.parse_args(argv)
    path = build_tiny_llama(
        args.out_dir, seed=args.seed, vocab_size=args.vocab_size, hidden_size=args.hidden_size,
        num_layers=args.num_layers,
    )
    print(path)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

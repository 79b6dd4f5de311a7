"""Package data: the bundled, hand-written annotated corpus (``demo_annotated.jsonl``) and the
worked examples for few-shot generation (``few_shot_factual.json``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_CORPUS = "demo_annotated.jsonl"
FEW_SHOT_FACTUAL = "few_shot_factual.json"


def demo_corpus_path() -> Path:
    """Path of the bundled, hand-written annotated corpus (120 trajectories, 70 positive / 50 negative)."""
    return Path(str(resources.files("mralign_plugin") / "data" / DEMO_CORPUS))


def few_shot_factual_path() -> Path:
    """Path of the three worked examples (question, thinking paragraphs, answer) for ``--few-shot``."""
    return Path(str(resources.files("mralign_plugin") / "data" / FEW_SHOT_FACTUAL))

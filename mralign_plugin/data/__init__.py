"""Package data: the bundled, hand-written annotated corpus (``demo_annotated.jsonl``)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

DEMO_CORPUS = "demo_annotated.jsonl"


def demo_corpus_path() -> Path:
    """Path of the bundled, hand-written annotated corpus (120 trajectories, 70 positive / 50 negative)."""
    return Path(str(resources.files("mralign_plugin") / "data" / DEMO_CORPUS))

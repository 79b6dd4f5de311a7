"""File formats, version 1 (DESIGN.md "Formats"): annotated-trajectory jsonl and transitions.json.

Every problem is reported as ``PATH:LINE: FIELD: message`` so a user can jump to it. Unknown fields
of a record are kept, never dropped.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

import numpy as np

from mralign_plugin.core.segment import parse_response
from mralign_plugin.core.taxonomy import MAX_STATES_PER_STEP, PAPER_TAXONOMY, Taxonomy
from mralign_plugin.core.transitions import TRANSITIONS_FORMAT


class FormatError(ValueError):
    """A record or file that does not follow the format; the message names the line and field."""


def parse_jsonl_line(path: str | Path, lineno: int, line: str) -> dict | FormatError:
    """One jsonl line as a dict, or the :class:`FormatError` (naming the line) that it is not one."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError as e:
        return FormatError(f"{path}:{lineno}: invalid JSON: {e.msg} (character {e.pos + 1})")
    if not isinstance(record, dict):
        return FormatError(f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}")
    return record


def iter_jsonl(path: str | Path) -> Iterator[tuple[int, dict | FormatError]]:
    """Yield ``(line_number, record)`` for each non-blank line; a line that is not a JSON object
    yields a :class:`FormatError` in place of the record, so callers can report and go on."""
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, start=1):
            if line.strip():
                yield lineno, parse_jsonl_line(path, lineno, line)


def read_jsonl(path: str | Path) -> list[dict]:
    """All records of a jsonl; raises the :class:`FormatError` of the first line that is not an object."""
    records = []
    for _, record in iter_jsonl(path):
        if isinstance(record, FormatError):
            raise record
        records.append(record)
    return records


def write_jsonl(path: str | Path, records: Iterable[dict]) -> int:
    """Write records one per line (UTF-8, no ASCII escaping); returns how many were written."""
    n = 0
    with open(path, "w", encoding="utf-8") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return n


def record_problems(record: dict, taxonomy: Taxonomy = PAPER_TAXONOMY, check_paragraphs: bool = True) -> list[str]:
    """All format problems of one annotated-trajectory record, each as ``"field: message"``.

    Args:
        record: one parsed jsonl object.
        taxonomy: the state names that are valid.
        check_paragraphs: also parse the response and check paragraph indices against it (off for
            consumers that never touch the text, e.g. the transition fit).
    """
    problems: list[str] = []
    if "id" in record and not isinstance(record["id"], str | int):
        problems.append("id: must be a string or an integer")
    prompt = record.get("prompt")
    if prompt is None:
        problems.append("prompt: missing")
    elif not isinstance(prompt, str | list):
        problems.append("prompt: must be a string or a list of chat messages")
    response = record.get("response")
    if response is None:
        problems.append("response: missing")
    elif not isinstance(response, str):
        problems.append("response: must be a string")
        response = None
    if "label" not in record:
        problems.append("label: missing (true = desirable, false = undesirable)")
    elif not isinstance(record["label"], bool):
        problems.append(f"label: must be true or false, got {record['label']!r}")
    if "gold" in record and not (
        isinstance(record["gold"], list) and all(isinstance(g, str) for g in record["gold"])
    ):
        problems.append("gold: must be a list of strings")

    steps = record.get("steps")
    if steps is None:
        problems.append("steps: missing")
        return problems
    if not isinstance(steps, list):
        problems.append("steps: must be a list")
        return problems
    n_paragraphs = None
    if check_paragraphs and response is not None:
        n_paragraphs = len(parse_response(response).paragraphs)
    last_paragraph = -1
    for t, step in enumerate(steps):
        where = f"steps[{t}]"
        if not isinstance(step, dict):
            problems.append(f"{where}: must be an object with 'paragraphs' and 'states'")
            continue
        problems += _step_problems(step, where, taxonomy)
        paragraphs = step.get("paragraphs")
        if isinstance(paragraphs, list) and paragraphs and all(type(p) is int for p in paragraphs):
            if paragraphs[0] <= last_paragraph:
                problems.append(
                    f"{where}.paragraphs: paragraph {paragraphs[0]} overlaps or precedes the previous step "
                    f"(which ends at {last_paragraph})"
                )
            last_paragraph = max(last_paragraph, paragraphs[-1])
            if n_paragraphs is not None:
                bad = [p for p in paragraphs if not 0 <= p < n_paragraphs]
                if bad:
                    problems.append(
                        f"{where}.paragraphs: index {bad[0]} out of range (the thinking has {n_paragraphs} paragraphs)"
                    )
    weights = record.get("step_weights")
    if weights is not None and not (
        isinstance(weights, list)
        and len(weights) == len(steps)
        and all(isinstance(w, int | float) and not isinstance(w, bool) and math.isfinite(w) for w in weights)
    ):
        problems.append(f"step_weights: must be {len(steps)} finite numbers, one per step")
    return problems


def _step_problems(step: dict, where: str, taxonomy: Taxonomy) -> list[str]:
    problems = []
    paragraphs = step.get("paragraphs")
    if not isinstance(paragraphs, list) or not paragraphs:
        problems.append(f"{where}.paragraphs: must be a non-empty list of paragraph indices")
    elif not all(type(p) is int for p in paragraphs):
        problems.append(f"{where}.paragraphs: indices must be integers")
    elif any(a >= b for a, b in pairwise(paragraphs)):
        problems.append(f"{where}.paragraphs: must be strictly ascending, got {paragraphs}")
    states = step.get("states")
    if not isinstance(states, list):
        problems.append(f"{where}.states: must be a list of 0-{MAX_STATES_PER_STEP} state names")
        return problems
    if len(states) > MAX_STATES_PER_STEP:
        problems.append(f"{where}.states: at most {MAX_STATES_PER_STEP} states per step, got {len(states)}")
    for s in states:
        if s not in taxonomy:
            problems.append(f"{where}.states: unknown state {s!r}")
    if len(set(map(str, states))) < len(states):
        problems.append(f"{where}.states: repeated state in {states}")
    confidence = step.get("confidence")
    if confidence is not None and not (
        isinstance(confidence, list)
        and len(confidence) == len(states)
        and all(isinstance(c, int | float) and not isinstance(c, bool) for c in confidence)
    ):
        problems.append(f"{where}.confidence: must be one number per state")
    return problems


def read_annotated(
    path: str | Path, taxonomy: Taxonomy = PAPER_TAXONOMY, check_paragraphs: bool = True
) -> Iterator[dict]:
    """Yield validated annotated-trajectory records; raise :class:`FormatError` at the first bad line."""
    for lineno, record in iter_jsonl(path):
        if isinstance(record, FormatError):
            raise record
        problems = record_problems(record, taxonomy, check_paragraphs)
        if problems:
            raise FormatError(f"{path}:{lineno}: {problems[0]}" + (f" (+{len(problems) - 1} more)" if len(problems) > 1 else ""))
        yield record


def validate_file(path: str | Path, taxonomy: Taxonomy = PAPER_TAXONOMY) -> tuple[int, list[tuple[int, str]]]:
    """Check every line of an annotated jsonl.

    Returns:
        ``(n_records, problems)``: every problem of every line, as ``(line_number, message)`` with
        the message starting ``PATH:LINE``.
    """
    n, problems = 0, []
    for lineno, record in iter_jsonl(path):
        n += 1
        if isinstance(record, FormatError):
            problems.append((lineno, str(record)))
            continue
        rid = f" (id {record['id']})" if isinstance(record.get("id"), str | int) else ""
        problems += [(lineno, f"{path}:{lineno}{rid}: {p}") for p in record_problems(record, taxonomy)]
    return n, problems


@dataclass(frozen=True)
class TransitionModel:
    """The three (K, K) matrices of transitions.json, with rows/columns in ``taxonomy`` order."""

    taxonomy: Taxonomy
    trans_all: np.ndarray  # P,  (K, K)
    trans_pos: np.ndarray  # P⁺, (K, K)
    trans_neg: np.ndarray  # P⁻, (K, K)
    clip: tuple[float, float]
    raw: dict  # the whole file, for counts and config


def write_transitions(path: str | Path, model: dict) -> None:
    """Write a transitions.json dict (as built by ``fit_transition_model``)."""
    Path(path).write_text(json.dumps(model, indent=1) + "\n", encoding="utf-8")


def read_transitions(path: str | Path, taxonomy: Taxonomy = PAPER_TAXONOMY) -> TransitionModel:
    """Read transitions.json, mapping states by name (not position) onto ``taxonomy``'s order."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise FormatError(f"{path}: invalid JSON: {e.msg} (line {e.lineno})") from None
    if not isinstance(data, dict) or data.get("format") != TRANSITIONS_FORMAT:
        raise FormatError(f"{path}: format: expected {TRANSITIONS_FORMAT!r}, got {data.get('format') if isinstance(data, dict) else data!r}")
    states = data.get("states")
    if not isinstance(states, list) or sorted(map(str, states)) != sorted(taxonomy.states):
        missing = sorted(set(taxonomy.states) - set(states or []))
        extra = sorted(set(states or []) - set(taxonomy.states))
        raise FormatError(f"{path}: states: do not match the taxonomy (missing {missing}, unexpected {extra})")
    order = np.array([states.index(name) for name in taxonomy.states])  # file position of each state
    K = len(states)
    mats = []
    for key in ("P", "P_pos", "P_neg"):
        try:
            mat = np.asarray(data[key], dtype=np.float64)
        except (KeyError, TypeError, ValueError):
            raise FormatError(f"{path}: {key}: missing or not a numeric matrix") from None
        if mat.shape != (K, K) or not np.isfinite(mat).all() or (mat < 0).any():
            raise FormatError(f"{path}: {key}: must be a {K}x{K} matrix of non-negative finite numbers")
        if not np.allclose(mat.sum(1), 1.0, atol=1e-6):
            raise FormatError(f"{path}: {key}: rows must sum to 1")
        mats.append(mat[np.ix_(order, order)])  # (K, K) in taxonomy order
    clip = tuple(data.get("config", {}).get("clip", (math.exp(-1), math.e)))
    return TransitionModel(taxonomy, *mats, clip=(float(clip[0]), float(clip[1])), raw=data)

"""`mralign weigh`: add Eq. 10 segment weights (``step_weights``) to every annotated record.

    mralign weigh annotated.jsonl --transitions transitions.json -o weighted.jsonl
"""

from __future__ import annotations

import json
from pathlib import Path

from tqdm import tqdm

from mralign_plugin.core.formats import FormatError, TransitionModel, iter_jsonl, read_transitions, record_problems
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy
from mralign_plugin.core.transitions import single_label
from mralign_plugin.core.weights import step_weights


def record_step_weights(record: dict, model: TransitionModel, one_label: bool = False) -> list[float]:
    """Eq. 10 weights of one validated record: P⁺ in the numerator for desirable, P⁻ for undesirable."""
    taxonomy = model.taxonomy
    step_states = []
    for step in record["steps"]:
        states = single_label(step["states"], step.get("confidence")) if one_label else step["states"]
        step_states.append([taxonomy.index(s) for s in states])
    trans_class = model.trans_pos if record["label"] else model.trans_neg
    return step_weights(step_states, trans_class, model.trans_all, clip_min=model.clip[0], clip_max=model.clip[1],
                        start=taxonomy.start)


def weigh_file(
    annotated: str | Path,
    transitions: str | Path,
    out: str | Path,
    taxonomy: Taxonomy = PAPER_TAXONOMY,
    progress: bool = True,
) -> dict:
    """Write ``out`` = ``annotated`` with ``step_weights`` added; returns summary statistics.

    Raises :class:`FormatError` naming the first bad line (nothing is written past it).
    """
    model = read_transitions(transitions, taxonomy)
    one_label = bool(model.raw.get("config", {}).get("single_label", False))
    lo, hi = model.clip
    n = n_steps = n_clipped = 0
    w_sum, w_min, w_max = 0.0, float("inf"), float("-inf")
    with open(out, "w", encoding="utf-8") as f:
        for lineno, record in tqdm(iter_jsonl(annotated), desc="weigh", unit=" rec", disable=None if progress else True,
                                   mininterval=1.0):
            if isinstance(record, FormatError):
                raise record
            problems = record_problems(record, taxonomy)
            if problems:
                raise FormatError(f"{annotated}:{lineno}: {problems[0]}")
            weights = record_step_weights(record, model, one_label)
            record["step_weights"] = weights
            if weights:
                n_steps += len(weights)
                w_sum += sum(weights)
                w_min, w_max = min(w_min, *weights), max(w_max, *weights)
                n_clipped += sum(w <= lo + 1e-12 or w >= hi - 1e-12 for w in weights)
            f.write(json.dumps(record, ensure_ascii=False) + "\n")
            n += 1
    return {
        "records": n,
        "steps": n_steps,
        "weights/mean": w_sum / n_steps if n_steps else float("nan"),
        "weights/min": w_min if n_steps else float("nan"),
        "weights/max": w_max if n_steps else float("nan"),
        "weights/clip_frac": n_clipped / n_steps if n_steps else 0.0,
    }

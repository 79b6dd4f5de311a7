"""Ensemble aggregation of two annotators plus an adjudicator (paper §3.1.2; method/MRALIGN.md §4.5, §9 item 10).

Per step, with annotator A's labels ``a`` and B's labels ``b`` (label -> 0-10 confidence):

1. ``consistent``: the same label set -> accept it with A's confidences (A = GPT-4o in the paper).
2. ``consolidated``: otherwise keep the shared labels (confidence = the higher of the two); while
   fewer than two, add single-annotator labels whose confidence exceeds 7, highest first.
3. ``adjudicated``: if fewer than two labels remain after rule 2, the adjudicator's labels decide.
   Interpretation (§9 item 10): the literal trigger, ``escalate_when="lt2"``; ``"empty"``
   escalates only when rule 2 leaves no label (cheaper).

The two annotators may merge paragraphs into steps differently. Interpretation (paper silent): the
aggregated steps are the common refinement of both segmentations (a boundary wherever either
annotator has one); each refined step inherits the labels of the A-step and B-step covering it,
and a paragraph that one annotator left uncovered has the empty label set there.
"""

from __future__ import annotations

from mralign_plugin.core.taxonomy import MAX_STATES_PER_STEP

CONSOLIDATE_MIN_CONFIDENCE = 7.0  # "exceeds 7", strictly
RULES = ("consistent", "consolidated", "adjudicated")


def aggregate_labels(
    a: dict[str, float], b: dict[str, float], escalate_when: str = "lt2"
) -> tuple[list[str], list[float], str]:
    """Rules 1-2 for one step; rule 3 is signalled, not applied.

    Args:
        a: annotator A's labels and confidences, in A's order.
        b: annotator B's labels and confidences.
        escalate_when: ``"lt2"`` (escalate when fewer than two labels remain) or ``"empty"``.

    Returns:
        ``(states, confidences, rule)`` with rule ``"consistent"``, ``"consolidated"`` or
        ``"escalate"`` (then states and confidences are the consolidated ones, for reference).

    Example:
        >>> aggregate_labels({"retrieval": 8}, {"retrieval": 6})
        (['retrieval'], [8], 'consistent')
        >>> aggregate_labels({"retrieval": 6, "framing": 9}, {"retrieval": 8, "evaluation": 5})
        (['retrieval', 'framing'], [8, 9], 'consolidated')
    """
    if escalate_when not in ("lt2", "empty"):
        raise ValueError(f"escalate_when must be 'lt2' or 'empty', got {escalate_when!r}")
    if set(a) == set(b):
        return list(a), list(a.values()), "consistent"
    kept = {s: max(a[s], b[s]) for s in a if s in b}
    singles = sorted(
        ((conf, s) for labels, other in ((a, b), (b, a)) for s, conf in labels.items() if s not in other),
        key=lambda cs: -cs[0],  # stable: ties keep A's labels first, then A's order
    )
    for conf, s in singles:
        if len(kept) >= MAX_STATES_PER_STEP:
            break
        if conf > CONSOLIDATE_MIN_CONFIDENCE:
            kept[s] = conf
    too_few = len(kept) < MAX_STATES_PER_STEP if escalate_when == "lt2" else not kept
    return list(kept), list(kept.values()), "escalate" if too_few else "consolidated"


def _labels_by_paragraph(steps: list[dict], n_paragraphs: int) -> list[int | None]:
    """For each paragraph, the index of the step covering it (None when uncovered)."""
    owner: list[int | None] = [None] * n_paragraphs
    for t, step in enumerate(steps):
        for p in step["paragraphs"]:
            owner[p] = t
    return owner


def _labels(step: dict | None) -> dict[str, float]:
    if step is None:
        return {}
    confidence = step.get("confidence") or [0.0] * len(step["states"])
    return dict(zip(step["states"], confidence, strict=True))


def refine(steps_a: list[dict], steps_b: list[dict], n_paragraphs: int) -> list[tuple[list[int], dict, dict]]:
    """The common refinement of two step segmentations: ``[(paragraphs, labels_a, labels_b), ...]``.

    Paragraphs covered by neither annotator belong to no refined step.
    """
    owner_a = _labels_by_paragraph(steps_a, n_paragraphs)
    owner_b = _labels_by_paragraph(steps_b, n_paragraphs)
    refined: list[tuple[list[int], dict, dict]] = []
    prev = None
    for p in range(n_paragraphs):
        key = (owner_a[p], owner_b[p])
        if key == (None, None):
            prev = None
            continue
        if key == prev:
            refined[-1][0].append(p)
        else:
            step_a = steps_a[key[0]] if key[0] is not None else None
            step_b = steps_b[key[1]] if key[1] is not None else None
            refined.append(([p], _labels(step_a), _labels(step_b)))
        prev = key
    return refined


def adjudicated_labels(paragraphs: list[int], adjudicator_steps: list[dict]) -> tuple[list[str], list[float]]:
    """The adjudicator's labels for ``paragraphs``: those of its steps covering any of them, the
    most confident first, at most two (a label seen twice keeps its higher confidence)."""
    wanted = set(paragraphs)
    best: dict[str, float] = {}
    for step in adjudicator_steps:
        if wanted.intersection(step["paragraphs"]):
            for s, c in _labels(step).items():
                best[s] = max(c, best.get(s, c))
    ranked = sorted(best.items(), key=lambda sc: -sc[1])[:MAX_STATES_PER_STEP]
    return [s for s, _ in ranked], [c for _, c in ranked]


def aggregate(
    steps_a: list[dict],
    steps_b: list[dict],
    n_paragraphs: int,
    adjudicator_steps: list[dict] | None = None,
    escalate_when: str = "lt2",
) -> tuple[list[dict], bool]:
    """Aggregate two annotations of one trajectory (§4.5).

    Args:
        steps_a, steps_b: the two annotators' steps (``paragraphs``, ``states``, ``confidence``).
        n_paragraphs: paragraphs in the thinking.
        adjudicator_steps: the adjudicator's steps, or None if it has not been asked yet.
        escalate_when: see :func:`aggregate_labels`.

    Returns:
        ``(steps, needs_adjudicator)``. When some step escalates and ``adjudicator_steps`` is None,
        ``needs_adjudicator`` is True and those steps are left undecided (call again with the
        adjudicator's steps); otherwise every step carries its ``rule`` from :data:`RULES`.
    """
    out: list[dict] = []
    needs = False
    for paragraphs, labels_a, labels_b in refine(steps_a, steps_b, n_paragraphs):
        states, confidence, rule = aggregate_labels(labels_a, labels_b, escalate_when)
        if rule == "escalate":
            if adjudicator_steps is None:
                needs = True
                continue
            states, confidence = adjudicated_labels(paragraphs, adjudicator_steps)
            rule = "adjudicated"
        out.append({"paragraphs": paragraphs, "states": states, "confidence": [float(c) for c in confidence], "rule": rule})
    return out, needs

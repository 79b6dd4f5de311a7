"""Formats v1 (DESIGN.md): validation names the line and field; transitions.json maps states by name."""

import copy
import json
import math

import numpy as np
import pytest

from mralign_plugin.core.formats import (
    FormatError,
    read_annotated,
    read_transitions,
    record_problems,
    validate_file,
    write_jsonl,
    write_transitions,
)
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY, Taxonomy

GOOD = {
    "id": "nq-1",
    "prompt": "who wrote the song?",
    "response": "<think>\nFirst paragraph.\n\nSecond paragraph.\n\nThird.\n</think>\n<answer>Nala</answer>",
    "label": True,
    "gold": ["Nala"],
    "steps": [
        {"paragraphs": [0], "states": ["framing"], "confidence": [9.0]},
        {"paragraphs": [1, 2], "states": ["retrieval", "self_verification"]},
    ],
    "extra_field": {"kept": True},
}


def with_change(path, value):
    rec = copy.deepcopy(GOOD)
    target = rec
    for key in path[:-1]:
        target = target[key]
    if value is KeyError:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return rec


def test_good_record_has_no_problems():
    assert record_problems(GOOD) == []


@pytest.mark.parametrize(
    "path, value, expected",
    [
        (("label",), KeyError, "label: missing"),
        (("label",), "yes", "label: must be true or false"),
        (("response",), KeyError, "response: missing"),
        (("prompt",), KeyError, "prompt: missing"),
        (("steps",), KeyError, "steps: missing"),
        (("steps", 0, "states"), ["framing", "retrieval", "analogy"], "steps[0].states: at most 2 states"),
        (("steps", 1, "states"), ["retreival"], "steps[1].states: unknown state 'retreival'"),
        (("steps", 1, "paragraphs"), [2, 1], "steps[1].paragraphs: must be strictly ascending"),
        (("steps", 1, "paragraphs"), [1, 7], "steps[1].paragraphs: index 7 out of range (the thinking has 3"),
        (("steps", 1, "paragraphs"), [0, 1], "steps[1].paragraphs: paragraph 0 overlaps"),
        (("steps", 1, "paragraphs"), [], "steps[1].paragraphs: must be a non-empty list"),
        (("steps", 0, "confidence"), [9.0, 8.0], "steps[0].confidence: must be one number per state"),
        (("step_weights",), [1.0], "step_weights: must be 2 finite numbers"),
        (("step_weights",), [1.0, math.nan], "step_weights: must be 2 finite numbers"),
        (("gold",), "Nala", "gold: must be a list of strings"),
    ],
)
def test_each_problem_names_its_field(path, value, expected):
    problems = record_problems(with_change(path, value))
    assert any(p.startswith(expected) for p in problems), problems


def test_empty_states_are_allowed_and_unknown_fields_kept(tmp_path):
    rec = with_change(("steps", 1, "states"), [])
    assert record_problems(rec) == []
    path = tmp_path / "a.jsonl"
    write_jsonl(path, [rec])
    (back,) = list(read_annotated(path))
    assert back["extra_field"] == {"kept": True}


def test_no_thinking_means_every_paragraph_is_out_of_range():
    rec = with_change(("response",), "<answer>Nala</answer>")
    assert any("out of range (the thinking has 0 paragraphs)" in p for p in record_problems(rec))


def test_validate_file_reports_every_problem_with_line_numbers(tmp_path):
    path = tmp_path / "mixed.jsonl"
    lines = [
        json.dumps(GOOD),
        "{not json",
        json.dumps(with_change(("label",), KeyError)),
        "",
        json.dumps(with_change(("steps", 0, "states"), ["nope", "framing", "retrieval"])),
        "[1, 2]",
    ]
    path.write_text("\n".join(lines) + "\n")
    n, numbered = validate_file(path)
    assert n == 5
    assert all(message.startswith(f"{path}:{lineno}") for lineno, message in numbered)
    problems = [message for _, message in numbered]
    assert any(p.startswith(f"{path}:2: invalid JSON") for p in problems)
    assert any(p.startswith(f"{path}:3 (id nq-1): label: missing") for p in problems)
    line5 = [p for p in problems if p.startswith(f"{path}:5 ")]
    # too many states, an unknown one, and confidences no longer one per state: all reported
    assert [p.split(": ", 2)[1] for p in line5] == ["steps[0].states"] * 2 + ["steps[0].confidence"]
    assert any(p.startswith(f"{path}:6: expected a JSON object") for p in problems)
    with pytest.raises(FormatError, match=r":2: invalid JSON"):
        list(read_annotated(path))


def test_custom_taxonomy_is_used_for_validation():
    tax = Taxonomy.from_entries([{"name": "plan"}, {"name": "recall"}])
    rec = with_change(("steps",), [{"paragraphs": [0], "states": ["plan"]}])
    assert record_problems(rec, tax) == []
    assert any("unknown state 'plan'" in p for p in record_problems(rec))


def _model_dict(states, P):
    return {"format": "mralign-transitions/1", "states": list(states), "P": P.tolist(), "P_pos": P.tolist(),
            "P_neg": P.tolist(), "n_trajectories": {"all": 1, "pos": 1, "neg": 0},
            "n_transitions": {"all": 2, "pos": 2, "neg": 0}, "config": {"clip": [math.exp(-1), math.e]}}


def test_transitions_reader_maps_by_name_not_position(tmp_path):
    tax = Taxonomy.from_entries(["a", "b"])
    K = tax.num_states
    rng = np.random.default_rng(0)
    P = rng.random((K, K))
    P /= P.sum(1, keepdims=True)
    perm = [3, 1, 0, 2]  # file order: <stop>, a, <start>, b
    states = [tax.states[i] for i in perm]
    path = tmp_path / "t.json"
    write_transitions(path, _model_dict(states, P[np.ix_(perm, perm)]))
    model = read_transitions(path, tax)
    np.testing.assert_allclose(model.trans_all, P)
    assert model.clip == (math.exp(-1), math.e)


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(format="other/2"), "format: expected"),
        (lambda d: d["states"].pop(), "states: do not match"),
        (lambda d: d.update(P_pos=[[1.0]]), "P_pos: must be a 4x4"),
        (lambda d: d["P"][0].__setitem__(0, 5.0), "P: rows must sum to 1"),
        (lambda d: d.pop("P_neg"), "P_neg: missing"),
    ],
)
def test_transitions_reader_rejects_bad_files(tmp_path, mutate, message):
    tax = Taxonomy.from_entries(["a", "b"])
    P = np.full((4, 4), 0.25)
    data = _model_dict(tax.states, P)
    mutate(data)
    path = tmp_path / "t.json"
    path.write_text(json.dumps(data))
    with pytest.raises(FormatError, match=message):
        read_transitions(path, tax)


def test_paper_taxonomy_order_and_indices():
    assert PAPER_TAXONOMY.states[0] == "<start>" and PAPER_TAXONOMY.states[-1] == "<stop>"
    assert PAPER_TAXONOMY.index("framing") == 1 and PAPER_TAXONOMY.index("summarization") == 15
    assert PAPER_TAXONOMY.num_states == 17

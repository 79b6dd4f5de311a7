"""The closed-vocabulary prompt (App. F) and strict validation of the annotator's JSON."""

import json

import pytest

from mralign_plugin.annotate.prompts import AnnotationError, build_messages, parse_annotation, repair_messages
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY


def step(paragraphs, labels, confs=None):
    confs = confs or [8] * len(labels)
    return {"step_number": 1, "thinking_step": paragraphs, "meta_reasoning_strategies": labels,
            "strategy_confidence_rating": [{"strategy": s, "confidence_rating": c} for s, c in zip(labels, confs, strict=True)]}


def answer(*steps, **extra):
    return json.dumps({"index_base": 0, "steps": list(steps), **extra})


def test_prompt_has_the_inputs_and_the_closed_vocabulary():
    messages = build_messages("Who wrote X?", ["Tim Rice", "Rice"], ["First para.", "Second para."])
    assert [m["role"] for m in messages] == ["system", "user"]
    user = messages[1]["content"]
    assert "Question: Who wrote X?" in user
    assert "Gold Answer: Tim Rice | Rice" in user
    assert "[0] First para.\n\n[1] Second para." in user
    assert "Solution (2 segments)" in user
    for name in PAPER_TAXONOMY.names:
        assert f"- {name}: " in user
    # the vocabulary is listed in the paper's controlled-vocabulary order
    positions = [user.index(f"- {name}: ") for name in PAPER_TAXONOMY.names]
    assert positions == sorted(positions)
    assert "JSON only" in user


def test_parse_valid_answer_with_merge_empty_step_and_final_confidence():
    text = answer(step([0], ["framing"], [9]), step([1, 2], ["retrieval", "self_verification"], [8, 6.5]),
                  step([4], []), final_confidence_rating=7)
    steps, final = parse_annotation(text, 5)
    assert steps == [
        {"paragraphs": [0], "states": ["framing"], "confidence": [9.0]},
        {"paragraphs": [1, 2], "states": ["retrieval", "self_verification"], "confidence": [8.0, 6.5]},
        {"paragraphs": [4], "states": [], "confidence": []},
    ]
    assert final == 7.0


def test_code_fence_is_accepted():
    steps, _ = parse_annotation("```json\n" + answer(step([0], ["framing"])) + "\n```", 1)
    assert steps[0]["states"] == ["framing"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Sure! framing then retrieval.", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        (answer(step([0], ["framing"])) + " trailing words", "not valid JSON"),
        (json.dumps({"index_base": 1, "steps": []}), "index_base"),
        (json.dumps({"steps": {}}), "'steps' must be a list"),
        (answer(step([], ["framing"])), "non-empty list"),
        (answer(step([0.5], ["framing"])), "non-empty list"),
        (answer(step([3], ["framing"])), "out of range"),
        (answer(step([-1], ["framing"])), "out of range"),
        (answer(step([1, 0], ["framing"])), "not ascending"),
        (answer(step([0, 1], ["framing"]), step([1], ["retrieval"])), "already covered"),
        (answer(step([0], ["hypothesis_generation"])), "not in the allowed list"),
        (answer(step([0], ["Framing"])), "not in the allowed list"),
        (answer(step([0], ["framing", "retrieval", "evaluation"])), "at most 2"),
        (answer(step([0], ["framing", "framing"])), "repeated label"),
        (answer(step([0], ["framing"], [11])), "0 to 10"),
        (answer(step([0], ["framing"], ["high"])), "0 to 10"),
        (answer({"thinking_step": [0], "meta_reasoning_strategies": ["framing"]}), "no confidence"),
        (answer(step([0], ["framing"]), final_confidence_rating=-1), "final_confidence_rating"),
    ],
)
def test_invalid_answers_are_rejected_with_a_precise_reason(text, message):
    with pytest.raises(AnnotationError, match=message):
        parse_annotation(text, 3)


def test_repair_messages_carry_the_bad_answer_and_the_error():
    messages = build_messages("q", None, ["p"])
    repaired = repair_messages(messages, "not json", "not valid JSON (x)")
    assert repaired[:2] == messages
    assert repaired[2] == {"role": "assistant", "content": "not json"}
    assert repaired[3]["role"] == "user" and "not valid JSON (x)" in repaired[3]["content"]
    assert "Gold Answer: (not given)" in messages[1]["content"]

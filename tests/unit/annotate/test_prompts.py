"""The closed-vocabulary prompt (App. F) and strict validation of the annotator's JSON."""

import json

import pytest

from mralign_plugin.annotate.prompts import (
    AnnotationError,
    annotation_schema,
    build_messages,
    first_json_value,
    parse_annotation,
    repair_messages,
    response_format,
)
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


GOOD = answer(step([0], ["framing"]), step([1], ["retrieval"]))


@pytest.mark.parametrize(
    "text",
    [
        GOOD + "\n\nI hope this helps! Let me know.",  # json.loads: "Extra data"
        "Here is the annotation:\n" + GOOD,  # json.loads: "Expecting value at line 1 column 1"
        "Sure.\n```json\n" + GOOD + "\n```\nThe steps follow the rules.",
        "```\n" + GOOD + "\n```",
        "```json\n" + GOOD,  # an unclosed fence (the reply hit max_tokens after the object)
        "The {framing} step comes first. " + GOOD + " {not json}",  # a brace in prose before the object
        GOOD + "\n" + answer(step([0], ["evaluation"])),  # two objects: the first one counts
    ],
)
def test_tolerant_parsing_takes_the_first_complete_object(text):
    steps, _ = parse_annotation(text, 2)
    assert [s["states"] for s in steps] == [["framing"], ["retrieval"]]


def test_first_json_value_reports_the_whole_reply_error():
    with pytest.raises(json.JSONDecodeError, match="Expecting value"):
        first_json_value("no json here at all")
    assert first_json_value("  [1, 2] ") == [1, 2]  # a whole-reply value is returned as is (then rejected)


def test_content_validation_is_unchanged_after_extraction():
    with pytest.raises(AnnotationError, match="out of range"):
        parse_annotation("Result: " + answer(step([5], ["framing"])) + " done", 2)


def test_schema_bounds_follow_the_record_and_the_taxonomy():
    schema = annotation_schema(4)
    steps = schema["properties"]["steps"]
    item = steps["items"]["properties"]
    assert steps["maxItems"] == 4 and steps["minItems"] == 1
    assert item["thinking_step"]["items"] == {"type": "integer", "minimum": 0, "maximum": 3}
    assert item["meta_reasoning_strategies"]["items"]["enum"] == list(PAPER_TAXONOMY.names)
    assert item["meta_reasoning_strategies"]["maxItems"] == 2
    rating = item["strategy_confidence_rating"]["items"]["properties"]
    assert rating["confidence_rating"] == {"type": "number", "minimum": 0, "maximum": 10}
    # strict mode: every object closed, every property required
    for obj in (schema, steps["items"], item["strategy_confidence_rating"]["items"]):
        assert obj["additionalProperties"] is False and obj["required"] == list(obj["properties"])
    fmt = response_format(4)
    assert fmt["type"] == "json_schema" and fmt["json_schema"]["strict"] is True
    assert fmt["json_schema"]["schema"] == schema
    with pytest.raises(ValueError, match="n_paragraphs"):
        annotation_schema(0)


def test_schema_admits_what_the_parser_accepts():
    """A hand-written validator of the schema's keywords agrees with parse_annotation on valid answers."""
    def conforms(value, schema):
        kind = schema["type"]
        if kind == "object":
            return (isinstance(value, dict) and set(value) == set(schema["properties"])
                    and all(conforms(value[k], sub) for k, sub in schema["properties"].items()))
        if kind == "array":
            return (isinstance(value, list) and schema["minItems"] <= len(value) <= schema["maxItems"]
                    and all(conforms(v, schema["items"]) for v in value))
        if "enum" in schema and value not in schema["enum"]:
            return False
        if kind == "string":
            return isinstance(value, str)
        ok = isinstance(value, int) if kind == "integer" else isinstance(value, int | float)
        return ok and schema.get("minimum", value) <= value <= schema.get("maximum", value)

    good = json.loads(answer(step([0], ["framing"], [9]), step([1, 2], ["retrieval", "evaluation"], [8, 6.5]),
                             final_confidence_rating=7))
    for k, st in enumerate(good["steps"]):
        st["step_number"] = k + 1
    assert parse_annotation(json.dumps(good), 3)[0]
    assert conforms(good, annotation_schema(3))
    assert not conforms(good, annotation_schema(2))  # index 2 is out of range for 2 paragraphs
    bad_label = json.loads(json.dumps(good))
    bad_label["steps"][0]["meta_reasoning_strategies"] = ["hypothesis_generation"]
    assert not conforms(bad_label, annotation_schema(3))


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("Sure! framing then retrieval.", "not valid JSON"),
        ("[1, 2]", "expected a JSON object"),
        ("Here it is: {\"steps\": [ {\"thinking_step\": [0]", "not valid JSON"),  # truncated: no complete object
        ("```json\n{\"steps\": [}\n```", "not valid JSON"),
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

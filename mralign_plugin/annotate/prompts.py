"""The closed-vocabulary annotation prompt and strict parsing of its answer (App. F, Figure 9; method/MRALIGN.md §4.4).

The paper's formal prompt gives the annotator a role, the Question, the Gold Answer and the
Solution paragraphs (indexed from 0), allows only the controlled vocabulary, 0-2 labels per step,
steps that merge adjacent paragraphs, a 0-10 confidence per label and for the whole trace, and asks
for JSON only. The wording below is ours (the paper's text is paraphrased, not copied).

:func:`parse_annotation` is tolerant about where the JSON is and strict about what it says: it takes
the first complete JSON object of the reply (inside a code fence, or before trailing text), and
anything off-schema in it raises :class:`AnnotationError` with a message precise enough to send
back to the model in the one repair turn (:func:`repair_messages`). :func:`annotation_schema` is the
same schema as a JSON Schema, for servers that constrain decoding to it (``response_format``).
"""

from __future__ import annotations

import functools
import json

from mralign_plugin.core.taxonomy import MAX_STATES_PER_STEP, PAPER_TAXONOMY, Taxonomy

SYSTEM_PROMPT = (
    "You are an annotator of meta-reasoning traces, grounded in cognitive science. You read a model's "
    "step-by-step solution to a factual question and name, for each step, the reasoning strategies it "
    "visibly uses. You answer with one JSON object and nothing else."
)

_TASK = """Annotate the Solution below with meta-reasoning strategies.

Rules:
1. The Solution is already split into segments on blank lines; segment indices start at 0 and are shown as [i]. \
Group the segments into steps in order. A step is one segment, or several adjacent segments merged so that the step is \
one complete, meaningful move. Refer to segments only by index in "thinking_step" (ascending); never copy their text, \
never infer hidden thoughts, never invent steps that are not in the Solution. Each segment belongs to at most one step.
2. Use ONLY these strategy labels, spelled exactly as written (any other label is invalid):
{vocabulary}
3. Give each step 0, 1 or 2 labels; usually 1. Use 2 only when both strategies clearly occur in the step; use [] only \
when no strategy applies.
4. For each label give a confidence from 0 to 10: how clearly and effectively the strategy, as shown in this step, \
improves the factuality and relevance of the answer (0-2 not evident or irrelevant, 3-5 weak, 6-8 clear contribution, \
9-10 decisive). Score only what is visible in the text; merely naming a strategy earns nothing.
5. Give a "final_confidence_rating" from 0 to 10 for the whole trace (9-10 correct, sufficient and coherent; 7-8 mostly \
correct; 5-6 mixed; 3-4 weak; 0-2 misleading).

Answer with JSON only, in exactly this schema:
{{"index_base": 0,
 "steps": [{{"step_number": 1, "thinking_step": [0], "meta_reasoning_strategies": ["framing"],
             "strategy_confidence_rating": [{{"strategy": "framing", "confidence_rating": 9}}]}},
           {{"step_number": 2, "thinking_step": [1, 2], "meta_reasoning_strategies": ["retrieval", "self_verification"],
             "strategy_confidence_rating": [{{"strategy": "retrieval", "confidence_rating": 8}},
                                            {{"strategy": "self_verification", "confidence_rating": 6}}]}}],
 "final_confidence_rating": 8}}

"""
_INPUTS = """Question: {question}

Gold Answer: {gold}

Solution ({n} segments):
{solution}"""


class AnnotationError(ValueError):
    """An annotator answer that is not valid JSON in the schema; the message says what is wrong."""


def build_messages(
    question: str, gold: list[str] | str | None, paragraphs: list[str], taxonomy: Taxonomy = PAPER_TAXONOMY
) -> list[dict]:
    """Chat messages (system + user) asking for the closed-vocabulary annotation of ``paragraphs``.

    Args:
        question: the question text.
        gold: gold answer aliases (joined with " | "), or None when unknown.
        paragraphs: the thinking paragraphs, in order (index i is shown as ``[i]``).
        taxonomy: the controlled vocabulary, listed with each label's definition.
    """
    if isinstance(gold, list):
        gold = " | ".join(gold)
    solution = "\n\n".join(f"[{i}] {p}" for i, p in enumerate(paragraphs))
    user = _task(taxonomy) + _INPUTS.format(question=question, gold=gold or "(not given)", n=len(paragraphs), solution=solution)
    return [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": user}]


@functools.lru_cache(maxsize=8)
def _task(taxonomy: Taxonomy) -> str:
    """The fixed part of the user message (rules, vocabulary, schema), built once per taxonomy."""
    vocabulary = "\n".join(f"- {n}: {d}" for n, d in zip(taxonomy.names, taxonomy.definitions, strict=True))
    return _TASK.format(vocabulary=vocabulary)


def repair_messages(messages: list[dict], answer: str, error: str) -> list[dict]:
    """The conversation plus the invalid answer and a request to fix ``error`` (the one repair turn)."""
    return [
        *messages,
        {"role": "assistant", "content": answer},
        {
            "role": "user",
            "content": f"Your answer is invalid: {error}\nReply again with the corrected JSON object only, "
            "following every rule and the schema exactly.",
        },
    ]


def annotation_schema(n_paragraphs: int, taxonomy: Taxonomy = PAPER_TAXONOMY) -> dict:
    """The answer format of :data:`_TASK` as a JSON Schema, for ``response_format`` (structured outputs).

    What a schema can say: the keys, segment indices in ``[0, n_paragraphs)``, 0-2 labels from the
    taxonomy's enum, confidences in [0, 10], at most ``n_paragraphs`` steps. What it cannot (ascending
    indices, each segment once, one confidence per chosen label) :func:`parse_annotation` still checks.
    Only keywords that OpenAI's strict mode, vLLM / SGLang (xgrammar) and llama.cpp's grammar
    conversion all accept are used; every property is required and no other is allowed (strict mode).

    Example:
        >>> s = annotation_schema(3)
        >>> s["properties"]["steps"]["items"]["properties"]["thinking_step"]["items"]
        {'type': 'integer', 'minimum': 0, 'maximum': 2}
    """
    if n_paragraphs < 1:
        raise ValueError(f"annotation_schema: n_paragraphs must be >= 1, got {n_paragraphs}")
    label = {"type": "string", "enum": list(taxonomy.names)}
    confidence = {"type": "number", "minimum": 0, "maximum": 10}
    rating = _closed_object({"strategy": label, "confidence_rating": confidence})
    step = _closed_object({
        "step_number": {"type": "integer", "minimum": 1},
        "thinking_step": {"type": "array", "items": {"type": "integer", "minimum": 0, "maximum": n_paragraphs - 1},
                          "minItems": 1, "maxItems": n_paragraphs},
        "meta_reasoning_strategies": {"type": "array", "items": label, "minItems": 0, "maxItems": MAX_STATES_PER_STEP},
        "strategy_confidence_rating": {"type": "array", "items": rating, "minItems": 0, "maxItems": MAX_STATES_PER_STEP},
    })
    return _closed_object({
        "index_base": {"type": "integer", "enum": [0]},
        "steps": {"type": "array", "items": step, "minItems": 1, "maxItems": n_paragraphs},
        "final_confidence_rating": confidence,
    })


def _closed_object(properties: dict) -> dict:
    return {"type": "object", "properties": properties, "required": list(properties), "additionalProperties": False}


def response_format(n_paragraphs: int, taxonomy: Taxonomy = PAPER_TAXONOMY) -> dict:
    """The chat-completions ``response_format`` member asking for :func:`annotation_schema` (strict)."""
    return {"type": "json_schema", "json_schema": {"name": "meta_reasoning_annotation", "strict": True,
                                                   "schema": annotation_schema(n_paragraphs, taxonomy)}}


_DECODER = json.JSONDecoder()
_MAX_STARTS = 32  # "{" positions tried in a reply before giving up (bounds the work on long prose)


def first_json_value(text: str) -> object:
    """The JSON value of an annotator reply: the whole reply, else the first complete object in it.

    A reply that is one JSON value (optionally inside one code fence) is decoded as is. Otherwise
    the first ``{`` from which a complete object decodes wins: after an opening code fence if there
    is one, else anywhere, ignoring the text before it and after it ("Here is the JSON: {...} Hope
    this helps"). Only when no object decodes is the reply invalid.

    Raises:
        json.JSONDecodeError: the error of decoding the reply as a whole (the message for the repair turn).

    Example:
        >>> first_json_value('Sure!\\n```json\\n{"steps": []}\\n```\\nAnything else?')
        {'steps': []}
    """
    stripped = text.strip()
    fence = stripped.find("```")
    body = stripped
    if fence >= 0:
        newline = stripped.find("\n", fence)
        body = stripped[newline + 1 :] if newline >= 0 else stripped[fence + 3 :]
        close = body.rfind("```")
        body = (body[:close] if close >= 0 else body).strip()
    try:
        return json.loads(body)
    except json.JSONDecodeError as whole:
        # The fenced block first; then the whole reply, in case the object stood outside the fence.
        for candidate in (body, stripped) if body is not stripped else (body,):
            start = candidate.find("{")
            for _ in range(_MAX_STARTS):
                if start < 0:
                    break
                try:
                    return _DECODER.raw_decode(candidate, start)[0]
                except json.JSONDecodeError:
                    start = candidate.find("{", start + 1)
        raise whole from None


def _confidence(value: object, where: str) -> float:
    # type() excludes bool; the comparison excludes NaN and infinities.
    if type(value) not in (int, float) or not 0 <= value <= 10:
        raise AnnotationError(f"{where}: confidence must be a number from 0 to 10, got {value!r}")
    return float(value)


def parse_annotation(
    text: str, n_paragraphs: int, taxonomy: Taxonomy = PAPER_TAXONOMY
) -> tuple[list[dict], float | None]:
    """Validate an annotator answer and convert it to annotated-trajectory steps.

    Checks: a JSON object (the first complete one, :func:`first_json_value`); ``index_base`` 0 if given;
    ``steps`` a list; each step's ``thinking_step`` non-empty, integer, ascending, in range, and
    after the previous step's (so every paragraph is covered at most once); 0-2 distinct labels,
    all in the taxonomy, each with one 0-10 confidence; ``final_confidence_rating`` 0-10 if given.

    Args:
        text: the raw message content.
        n_paragraphs: how many paragraphs the Solution had.
        taxonomy: the valid labels.

    Returns:
        ``(steps, final_confidence)`` with steps as ``{"paragraphs", "states", "confidence"}``.

    Raises:
        AnnotationError: the first problem found.

    Example:
        >>> parse_annotation('{"steps": [{"thinking_step": [0, 1], "meta_reasoning_strategies": ["framing"],'
        ...                  ' "strategy_confidence_rating": [{"strategy": "framing", "confidence_rating": 9}]}]}', 2)
        ([{'paragraphs': [0, 1], 'states': ['framing'], 'confidence': [9.0]}], None)
    """
    try:
        data = first_json_value(text)
    except json.JSONDecodeError as e:
        raise AnnotationError(f"not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None
    if not isinstance(data, dict):
        raise AnnotationError(f"expected a JSON object, got {type(data).__name__}")
    if data.get("index_base", 0) != 0:
        raise AnnotationError(f"index_base must be 0, got {data['index_base']!r}")
    raw_steps = data.get("steps")
    if not isinstance(raw_steps, list):
        raise AnnotationError("'steps' must be a list of step objects")
    valid = set(taxonomy.names)
    steps: list[dict] = []
    last = -1
    # This runs once per annotated record on the client's hot path: plain loops, no generators.
    for t, step in enumerate(raw_steps):
        if type(step) is not dict:
            raise AnnotationError(f"steps[{t}]: must be an object")
        paragraphs = step.get("thinking_step")
        if type(paragraphs) is not list or not paragraphs:
            raise AnnotationError(f"steps[{t}].thinking_step: must be a non-empty list of segment indices")
        for p in paragraphs:
            if type(p) is not int:
                raise AnnotationError(f"steps[{t}].thinking_step: must be a non-empty list of segment indices")
            if not 0 <= p < n_paragraphs:
                raise AnnotationError(
                    f"steps[{t}].thinking_step: index {p} out of range (valid: 0 to {n_paragraphs - 1})"
                )
            if p <= last:
                raise AnnotationError(
                    f"steps[{t}].thinking_step: index {p} is not ascending or repeats a segment already covered"
                )
            last = p
        states = step.get("meta_reasoning_strategies", [])
        if type(states) is not list:
            raise AnnotationError(f"steps[{t}].meta_reasoning_strategies: must be a list of label strings")
        if len(states) > MAX_STATES_PER_STEP:
            raise AnnotationError(f"steps[{t}]: at most {MAX_STATES_PER_STEP} labels per step, got {len(states)}")
        for s in states:
            if type(s) is not str:
                raise AnnotationError(f"steps[{t}].meta_reasoning_strategies: must be a list of label strings")
            if s not in valid:
                raise AnnotationError(f"steps[{t}]: label {s!r} is not in the allowed list ({', '.join(taxonomy.names)})")
        if len(states) == 2 and states[0] == states[1]:
            raise AnnotationError(f"steps[{t}]: repeated label in {states}")
        ratings = step.get("strategy_confidence_rating", [])
        if type(ratings) is not list:
            raise AnnotationError(f"steps[{t}].strategy_confidence_rating: must be a list")
        confidence: dict[str, float] = {}
        for rating in ratings:
            if type(rating) is not dict or rating.get("strategy") not in states:
                raise AnnotationError(
                    f"steps[{t}].strategy_confidence_rating: each entry needs a 'strategy' from this step's labels {states}"
                )
            confidence[rating["strategy"]] = _confidence(rating.get("confidence_rating"), f"steps[{t}]")
        if len(confidence) < len(states):
            missing = [s for s in states if s not in confidence]
            raise AnnotationError(f"steps[{t}].strategy_confidence_rating: no confidence for {missing}")
        steps.append({"paragraphs": paragraphs, "states": states, "confidence": [confidence[s] for s in states]})
    final = data.get("final_confidence_rating")
    if final is not None:
        final = _confidence(final, "final_confidence_rating")
    return steps, final

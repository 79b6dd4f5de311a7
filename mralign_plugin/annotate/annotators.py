"""The three annotators on one trajectory's paragraphs: rules, one LLM, the LLM ensemble (method/MRALIGN.md §4.3-4.5).

Each returns ``(steps, info)``: steps in the annotated-trajectory format and the provenance that
goes into the record's ``annotation`` member. The LLM annotators raise
:class:`~mralign_plugin.annotate.prompts.AnnotationError` (invalid after one repair turn) or
:class:`~mralign_plugin.annotate.client.ChatRequestError` (the endpoint failed); the file-to-file
driver (pipeline/annotate.py) turns either into a rejected record.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from dataclasses import dataclass

from mralign_plugin.annotate.aggregate import aggregate
from mralign_plugin.annotate.client import ChatClient, api_key_from_env
from mralign_plugin.annotate.prompts import (
    AnnotationError,
    build_messages,
    parse_annotation,
    repair_messages,
    response_format,
)
from mralign_plugin.annotate.rules import check_taxonomy, tag_paragraphs
from mralign_plugin.core.taxonomy import Taxonomy


@dataclass
class Endpoint:
    """One OpenAI-compatible model: where it is, its name, and the env variable holding its key."""

    base_url: str
    model: str
    api_key_env: str | None = None


def make_clients(endpoints: list[Endpoint], **client_options) -> list[ChatClient]:
    """One :class:`ChatClient` per endpoint; ``client_options`` are ChatClient's keyword arguments."""
    return [ChatClient(e.base_url, e.model, api_key_from_env(e.api_key_env), **client_options) for e in endpoints]


def rules_steps(paragraphs: list[str], taxonomy: Taxonomy) -> tuple[list[dict], dict]:
    """One step per paragraph, tagged by the offline rules tagger."""
    check_taxonomy(taxonomy)
    steps = [{"paragraphs": [i], "states": list(states)} for i, states in enumerate(tag_paragraphs(paragraphs))]
    return steps, {"annotator": "rules"}


async def ask(client: ChatClient, question: str, gold: object, paragraphs: list[str],
              taxonomy: Taxonomy) -> tuple[list[dict], dict]:
    """One annotator: the App. F prompt (with the answer's JSON Schema as ``response_format`` where the
    endpoint honours it), tolerant extraction and strict validation, and one repair turn with the error."""
    messages = build_messages(question, gold, paragraphs, taxonomy)
    schema = response_format(len(paragraphs), taxonomy)
    result = await client.chat(messages, schema)
    info = {"model": client.model, "structured": client.structured_state, "repaired": False,
            "prompt_tokens": result.prompt_tokens,
            "completion_tokens": result.completion_tokens}
    try:
        steps, final = parse_annotation(result.text, len(paragraphs), taxonomy)
    except AnnotationError as first:
        repair = await client.chat(repair_messages(messages, result.text, str(first)), schema)
        info["repaired"] = True
        info["prompt_tokens"] += repair.prompt_tokens
        info["completion_tokens"] += repair.completion_tokens
        try:
            steps, final = parse_annotation(repair.text, len(paragraphs), taxonomy)
        except AnnotationError as second:
            raise AnnotationError(f"{client.model}: invalid after one repair: {second} (first: {first})") from None
    info["final_confidence"] = final
    return steps, info


async def llm_steps(client: ChatClient, question: str, gold: object, paragraphs: list[str],
                    taxonomy: Taxonomy) -> tuple[list[dict], dict]:
    """One LLM annotator (``--annotator llm``)."""
    steps, info = await ask(client, question, gold, paragraphs, taxonomy)
    return steps, {"annotator": "llm", **info}


async def ensemble_steps(clients: list[ChatClient], question: str, gold: object, paragraphs: list[str],
                         taxonomy: Taxonomy, escalate_when: str = "lt2") -> tuple[list[dict], dict]:
    """Annotators A and B, and the adjudicator C only when a step escalates (§4.5, annotate/aggregate.py)."""
    (steps_a, info_a), (steps_b, info_b) = await asyncio.gather(
        ask(clients[0], question, gold, paragraphs, taxonomy), ask(clients[1], question, gold, paragraphs, taxonomy)
    )
    n = len(paragraphs)
    steps, needs = aggregate(steps_a, steps_b, n, escalate_when=escalate_when)
    infos = [info_a, info_b]
    if needs:
        adjudicator_steps, info_c = await ask(clients[2], question, gold, paragraphs, taxonomy)
        infos.append(info_c)
        steps, _ = aggregate(steps_a, steps_b, n, adjudicator_steps, escalate_when=escalate_when)
    return steps, {"annotator": "ensemble", "annotators": infos, "rules": dict(Counter(s["rule"] for s in steps))}

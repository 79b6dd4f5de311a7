"""Thinking extraction and paragraph segmentation (paper §3.1.2, §3.2.2; method/MRALIGN.md §4.3, §9.4, §9.6).

A response is ``<think>`` thinking ``</think>`` followed by the answer, optionally inside
``<answer>…</answer>``. The atomic unit of annotation is a *paragraph* of the thinking, indexed
from 0; the annotator groups paragraphs into steps (DESIGN.md, "Annotated trajectory").

Every position here is a character offset into the ORIGINAL response ``str`` (Python indices, not
bytes), and every span is half-open ``(start, end)``, so ``response[start:end]`` is its text. The
per-token weights of weights.py map these spans to tokens through a tokenizer's offset mapping.
"""

from __future__ import annotations

import re
from typing import NamedTuple

_ANSWER_OPEN = "<answer>"
_ANSWER_CLOSE = "</answer>"
# A blank-line separator: a newline, a whitespace-only line, then any further whitespace (so 3+
# newlines, "\r\n" and indented blank lines are one separator). The whitespace before its first
# "\n" (e.g. the "\r" of "\r\n") is trimmed off the paragraph separately.
_BLANK_LINE = re.compile(r"\n[^\S\n]*\n\s*")
_LEADING_SPACE = re.compile(r"\s*")

Span = tuple[int, int]


class ParsedResponse(NamedTuple):
    r"""A response split into thinking blocks, paragraphs and answer; spans index the response.

    A named tuple (immutable, and cheap to build on every reward call).

    Attributes:
        think_spans: content span of every ``<think>`` block (tags excluded), in order.
        paragraphs: span of every thinking paragraph, stripped of surrounding whitespace, in
            order across blocks; the paragraph indices of the annotation format index this tuple.
        answer_span: span of ``answer`` (empty, ``(len(response),) * 2``, when truncated).
        thinking: the block contents joined by ``"\n\n"`` (unstripped), so
            ``split_paragraphs(thinking)`` yields the same paragraph texts as ``paragraphs``.
        answer: content of the first ``<answer>`` after the thinking if there is one, else the
            text after the last ``</think>`` (the whole response when there are no tags); stripped.
        has_thinking: at least one non-blank paragraph. An empty ``<think></think>`` (the
            thinking-off chat mode) is a block in ``think_spans`` but has no thinking.
        unterminated: the last block has no ``</think>`` (truncated generation); answer is empty.
        has_answer_tag: the answer came from an ``<answer>`` tag.
    """

    think_spans: tuple[Span, ...]
    paragraphs: tuple[Span, ...]
    answer_span: Span
    thinking: str
    answer: str
    has_thinking: bool
    unterminated: bool
    has_answer_tag: bool


def split_paragraphs(text: str, offset: int = 0) -> list[Span]:
    r"""Spans of the paragraphs of ``text``: split on blank lines, each stripped of whitespace (§4.3).

    The paper splits on ``"\n\n"``. Interpretation: any run of two or more line breaks, possibly
    with whitespace-only lines and ``"\r\n"`` endings, is one separator, and whitespace around
    the text or a paragraph never makes a paragraph, so no paragraph is empty.

    Args:
        text: the thinking text (or any text).
        offset: added to every span, e.g. the position of ``text`` in the response.

    Returns:
        ``[(start, end), ...]`` with ``text[start - offset:end - offset]`` the paragraph.

    Example:
        >>> thinking = "\nThe question asks for a capital.\r\n\r\n\n  Recall: Paris.\nCheck it.  \n"
        >>> spans = split_paragraphs(thinking)
        >>> [thinking[a:b] for a, b in spans]
        ['The question asks for a capital.', 'Recall: Paris.\nCheck it.']
        >>> split_paragraphs("A.\n\nB.", offset=7)
        [(7, 9), (11, 13)]
    """
    if offset == 0:
        return _paragraph_spans(text, 0, len(text))
    return [(start + offset, end + offset) for start, end in _paragraph_spans(text, 0, len(text))]


def _paragraph_spans_py(text: str, start: int, stop: int) -> list[Span]:
    """:func:`split_paragraphs` of ``text[start:stop]``, with spans that index ``text`` (no copy is made)."""
    spans = []
    start = _LEADING_SPACE.match(text, start, stop).end()
    while stop > start and text[stop - 1].isspace():
        stop -= 1
    for sep in _BLANK_LINE.finditer(text, start, stop):
        end = sep.start()
        while text[end - 1].isspace():  # trailing "\r" or spaces before the line break
            end -= 1
        spans.append((start, end))
        start = sep.end()
    if start < stop:
        spans.append((start, stop))
    return spans


def _think_blocks_py(response: str) -> tuple[list[Span], int | None]:
    """Content spans of the think blocks and the end of the last ``</think>`` (None if unterminated).

    Every ``<think>`` opens a block (closing an open one); every ``</think>`` closes the open block
    or, with none open, one that began after the previous ``</think>`` or at position 0. So a
    prefilled ``<think>`` (closing tag only) makes everything before ``</think>`` thinking.
    """
    blocks = []
    block_start = None  # content start of the open block
    last_close = 0  # end of the last "</think>"
    i = response.find("think>")
    while i >= 0:
        if i >= 2 and response.startswith("</", i - 2):  # "</think>"
            blocks.append((last_close if block_start is None else block_start, i - 2))
            block_start, last_close = None, i + 6
        elif i >= 1 and response[i - 1] == "<":  # "<think>"
            if block_start is not None:
                blocks.append((block_start, i - 1))
            block_start = i + 6
        i = response.find("think>", i + 6)
    if block_start is not None:
        blocks.append((block_start, len(response)))
        return blocks, None
    return blocks, last_close


try:  # the same two functions in C (core/_segment_c.c), built at install when a C compiler is there
    from mralign_plugin.core._segment_c import paragraph_spans as _paragraph_spans
    from mralign_plugin.core._segment_c import think_blocks as _think_blocks
except ImportError:  # the same results, slower
    _paragraph_spans, _think_blocks = _paragraph_spans_py, _think_blocks_py
COMPILED = _paragraph_spans is not _paragraph_spans_py  # parse_response runs its searches compiled


def _strip_span(text: str, start: int, end: int) -> Span:
    """``(start, end)`` shrunk so that ``text[start:end]`` has no surrounding whitespace."""
    piece = text[start:end]
    stripped = piece.strip()
    if not stripped:
        return end, end
    start += len(piece) - len(piece.lstrip())
    return start, start + len(stripped)


def parse_response(response: str) -> ParsedResponse:
    r"""Split a response into thinking blocks, paragraphs and answer (§4.3, §5.2; answer per §9.6).

    Handles ``<think>…</think>`` answers; a closing tag only (the chat template prefilled
    ``<think>``: thinking starts at 0); no closing tag (truncated: thinking runs to the end,
    ``unterminated``, empty answer); several blocks (all are thinking; the answer follows the last
    ``</think>``); no tags (no thinking, answer = whole text); ``<answer>…</answer>`` after the
    thinking (answer = its content, up to the end if ``</answer>`` is missing). Never raises.

    Args:
        response: the generated text, without the prompt.

    Returns:
        The :class:`ParsedResponse`; all its spans index ``response``.

    Example:
        >>> r = "<think>\nThe question asks for a capital.\n\nRecall: Paris.\n</think>\n<answer>Paris</answer>"
        >>> parsed = parse_response(r)
        >>> [r[a:b] for a, b in parsed.paragraphs]
        ['The question asks for a capital.', 'Recall: Paris.']
        >>> parsed.answer, r[slice(*parsed.answer_span)]
        ('Paris', 'Paris')
        >>> parse_response("Recall: Paris.</think> Paris").paragraphs  # prefilled <think>
        ((0, 14),)
        >>> parse_response("<think>\n\n</think>\n\nParis").has_thinking  # thinking-off mode
        False
    """
    blocks, after_think = _think_blocks(response)
    if len(blocks) == 1:
        paragraphs = tuple(_paragraph_spans(response, blocks[0][0], blocks[0][1]))
    else:
        paragraphs = tuple(span for start, end in blocks for span in _paragraph_spans(response, start, end))
    n = len(response)
    tag = -1 if after_think is None else response.find(_ANSWER_OPEN, after_think)
    if after_think is None:  # truncated inside the thinking
        answer_span = (n, n)
    elif tag < 0:
        answer_span = _strip_span(response, after_think, n)
    else:
        content = tag + len(_ANSWER_OPEN)
        close = response.find(_ANSWER_CLOSE, content)
        answer_span = _strip_span(response, content, n if close < 0 else close)
    return ParsedResponse(
        think_spans=tuple(blocks),
        paragraphs=paragraphs,
        answer_span=answer_span,
        thinking=response[blocks[0][0] : blocks[0][1]] if len(blocks) == 1 else "\n\n".join(
            response[start:end] for start, end in blocks
        ),
        answer=response[answer_span[0] : answer_span[1]],
        has_thinking=bool(paragraphs),
        unterminated=after_think is None,
        has_answer_tag=tag >= 0,
    )

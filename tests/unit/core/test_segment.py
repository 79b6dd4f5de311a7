"""Thinking extraction and paragraph segmentation: every span is checked by slicing the response."""

import doctest
import re
from itertools import pairwise

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mralign_plugin.core import segment
from mralign_plugin.core.segment import parse_response, split_paragraphs


def texts(text, spans):
    return [text[a:b] for a, b in spans]


def test_doctests():
    assert doctest.testmod(segment).failed == 0


# --- split_paragraphs ------------------------------------------------------------------------


def test_split_plain_blank_lines():
    text = "First idea.\n\nSecond idea,\nsame paragraph.\n\nThird."
    assert texts(text, split_paragraphs(text)) == ["First idea.", "Second idea,\nsame paragraph.", "Third."]


def test_split_crlf_three_newlines_and_whitespace_only_lines():
    text = "One.\r\n\r\nTwo.\n\n\n\nThree.\n  \t \nFour.\r\n \r\n\r\nFive.\r\nstill five."
    assert texts(text, split_paragraphs(text)) == ["One.", "Two.", "Three.", "Four.", "Five.\r\nstill five."]


def test_split_strips_paragraphs_and_ignores_outer_whitespace():
    text = "\n\n  \r\n  Indented start.   \n\n\t Tabbed.\t\r\n\n \n"
    assert split_paragraphs(text) == [(8, 23), (30, 37)]
    assert texts(text, split_paragraphs(text)) == ["Indented start.", "Tabbed."]


def test_split_empty_and_blank_text():
    assert split_paragraphs("") == []
    assert split_paragraphs(" \n\r\n\t\n ") == []
    assert split_paragraphs("x") == [(0, 1)]


def test_split_offset_shifts_spans():
    text = "A.\n\nB."
    assert split_paragraphs(text, offset=100) == [(100, 102), (104, 106)]


def test_split_non_ascii_offsets_are_characters():
    text = "Café.\n\n東京は首都。\n\nNaïve."
    spans = split_paragraphs(text)
    assert spans == [(0, 5), (7, 13), (15, 21)]
    assert texts(text, spans) == ["Café.", "東京は首都。", "Naïve."]


@given(st.lists(st.sampled_from(["a", "é", "東", " ", "\t", "\n", "\r\n", "\u3000", "."]), max_size=40).map("".join))
def test_split_matches_reference(text):
    """Same paragraphs as a naive split on blank lines; spans are stripped, ordered and disjoint."""
    spans = split_paragraphs(text)
    reference = [p.strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    assert texts(text, spans) == reference
    assert all(a < b for a, b in spans)
    assert all(b1 < a2 for (_, b1), (a2, _) in pairwise(spans))


WHITESPACE = [" ", "\t", "\n", "\r", "\r\n", "\x0b", "\x0c", "\x1c", "\x85", "\u2028", "\u3000", "\n\n"]


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(["a", "é", "東", "😀", ".", *WHITESPACE]), max_size=40).map("".join), st.data())
def test_compiled_paragraph_spans_equal_the_python_ones(text, data):
    """The C splitter (core/_segment_c.c) gives the spans of the Python one on any slice, any whitespace."""
    start = data.draw(st.integers(0, len(text)))
    stop = data.draw(st.integers(start, len(text)))
    assert segment._paragraph_spans(text, start, stop) == segment._paragraph_spans_py(text, start, stop)


def test_compiled_parser_is_built_and_checks_its_slice():
    assert segment.COMPILED, "mralign_plugin/core/_segment_c.c was not built: reinstall with a C compiler present"
    assert segment._think_blocks is not segment._think_blocks_py
    with pytest.raises(ValueError, match="slice"):
        segment._paragraph_spans("abc", 2, 1)


# --- parse_response --------------------------------------------------------------------------


def test_parse_normal_with_answer_tag():
    r = "<think>\nThe question asks for a capital.\n\nRecall: Paris.\n</think>\n<answer> Paris </answer>\n"
    p = parse_response(r)
    assert texts(r, p.think_spans) == ["\nThe question asks for a capital.\n\nRecall: Paris.\n"]
    assert texts(r, p.paragraphs) == ["The question asks for a capital.", "Recall: Paris."]
    assert p.thinking == "\nThe question asks for a capital.\n\nRecall: Paris.\n"
    assert p.answer == "Paris" == r[slice(*p.answer_span)]
    assert (p.has_thinking, p.unterminated, p.has_answer_tag) == (True, False, True)


def test_parse_answer_without_tag_is_stripped_text_after_think():
    r = "<think>Recall: Paris.</think>\n\n  The capital is Paris.  \n"
    p = parse_response(r)
    assert p.answer == "The capital is Paris." == r[slice(*p.answer_span)]
    assert not p.has_answer_tag


def test_parse_prefilled_think_has_only_closing_tag():
    r = "Recall the capital.\n\nIt is Paris.\n</think>\n\nParis"
    p = parse_response(r)
    assert p.think_spans == ((0, r.index("</think>")),)
    assert texts(r, p.paragraphs) == ["Recall the capital.", "It is Paris."]
    assert p.answer == "Paris" == r[slice(*p.answer_span)]
    assert p.has_thinking and not p.unterminated


def test_parse_unterminated_thinking_runs_to_end():
    r = "<think>\nRecall the capital.\n\nIt is Par"
    p = parse_response(r)
    assert p.think_spans == ((7, len(r)),)
    assert texts(r, p.paragraphs) == ["Recall the capital.", "It is Par"]
    assert p.unterminated and p.has_thinking
    assert p.answer == "" and p.answer_span == (len(r), len(r))
    assert not p.has_answer_tag


def test_parse_unterminated_ignores_answer_tag_inside_thinking():
    r = "<think>Maybe <answer>Lyon</answer>?\n\nNo,"
    p = parse_response(r)
    assert p.unterminated and p.answer == "" and not p.has_answer_tag
    assert texts(r, p.paragraphs) == ["Maybe <answer>Lyon</answer>?", "No,"]


def test_parse_several_think_blocks():
    r = "<think>A1.\n\nA2.</think>\nDraft.\n<think>\nB1.\n</think>\n<answer>Paris</answer>"
    p = parse_response(r)
    assert texts(r, p.think_spans) == ["A1.\n\nA2.", "\nB1.\n"]
    assert texts(r, p.paragraphs) == ["A1.", "A2.", "B1."]
    assert p.thinking == "A1.\n\nA2.\n\n\nB1.\n"
    assert p.answer == "Paris" == r[slice(*p.answer_span)]


def test_parse_answer_tag_inside_thinking_is_not_the_answer():
    r = "<think>Try <answer>Lyon</answer>.\n\nNo: Paris.</think>\nParis"
    p = parse_response(r)
    assert p.answer == "Paris" and not p.has_answer_tag


def test_parse_unclosed_answer_tag_runs_to_end():
    r = "<think>Paris.</think><answer> Paris\n"
    p = parse_response(r)
    assert p.answer == "Paris" == r[slice(*p.answer_span)]
    assert p.has_answer_tag


def test_parse_no_thinking_at_all():
    for r in ["The capital is Paris.", "  <answer>Paris</answer> ", "", "\n\n"]:
        p = parse_response(r)
        assert not p.has_thinking and not p.unterminated
        assert p.think_spans == () and p.paragraphs == () and p.thinking == ""
        assert p.answer == r[slice(*p.answer_span)]
    assert parse_response("  The capital is Paris.\n").answer == "The capital is Paris."
    assert parse_response("  <answer>Paris</answer> ").answer == "Paris"


def test_parse_empty_think_block_is_thinking_off():
    """Thinking-off chat mode: the block is recorded but there is no thinking and no paragraph."""
    r = "<think>\n\n</think>\n\nParis"
    p = parse_response(r)
    assert p.think_spans == ((7, 9),)
    assert p.paragraphs == () and not p.has_thinking and not p.unterminated
    assert p.answer == "Paris"
    assert parse_response("<think></think>Paris").think_spans == ((7, 7),)


def test_parse_stray_open_tag_starts_a_new_block():
    r = "<think>A.<think>B.</think>ans"
    p = parse_response(r)
    assert texts(r, p.paragraphs) == ["A.", "B."]
    assert p.answer == "ans"


def test_parse_stray_close_tag_makes_preceding_text_thinking():
    r = "<think>A.</think>B.</think>ans"
    p = parse_response(r)
    assert texts(r, p.paragraphs) == ["A.", "B."]
    assert p.answer == "ans"


@given(
    st.lists(
        st.sampled_from(["a", "é", "東", " ", "\n", "\r\n", "\n\n", "<think>", "</think>", "<answer>", "</answer>"]),
        max_size=30,
    ).map("".join)
)
def test_parse_invariants(r):
    """Never raises; paragraphs lie in think blocks and match split_paragraphs(thinking)."""
    p = parse_response(r)
    assert p.answer == r[slice(*p.answer_span)] == p.answer.strip()
    assert texts(r, p.paragraphs) == texts(p.thinking, split_paragraphs(p.thinking))
    assert all(any(s <= a < b <= e for s, e in p.think_spans) for a, b in p.paragraphs)
    assert all("<think>" not in t and "</think>" not in t for t in texts(r, p.paragraphs))
    assert p.has_thinking == bool(p.paragraphs)
    if p.unterminated:
        assert p.answer == "" and p.think_spans[-1][1] == len(r)


def reference_think_blocks(response):
    """_think_blocks as first written: the tags found by a regex, left to right."""
    blocks, block_start, last_close = [], None, 0
    for tag in re.finditer(r"<(/?)think>", response):
        if tag.group(1):
            blocks.append((last_close if block_start is None else block_start, tag.start()))
            block_start, last_close = None, tag.end()
        else:
            if block_start is not None:
                blocks.append((block_start, tag.start()))
            block_start = tag.end()
    if block_start is not None:
        blocks.append((block_start, len(response)))
        return blocks, None
    return blocks, last_close


@settings(max_examples=2000)
@given(st.lists(st.sampled_from(["<think>", "</think>", "think>", "<", "/", "</", "x", "\n", "é", "東", "😀"]),
                max_size=20).map("".join))
def test_think_tags_found_by_str_find_equal_the_regex(r):
    """Python finds the tags with str.find("think>") and a look at the 1-2 characters before it, C with a
    look after each "<"; both equal the regex."""
    assert segment._think_blocks_py(r) == reference_think_blocks(r)
    assert segment._think_blocks(r) == reference_think_blocks(r)

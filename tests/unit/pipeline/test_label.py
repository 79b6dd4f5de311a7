"""Positive / negative labelling (§3.1.1, §9 items 6, 8): all-draws rule, first qualifying draw, filters, dedup."""

import json

import pytest

from mralign_plugin.pipeline.label import (
    DROP_REASONS,
    LabelOptions,
    classify,
    format_summary,
    is_correct,
    label_file,
    label_rows,
    load_token_counter,
)


def thinking(n_paragraphs, words_per_paragraph=10):
    return "\n\n".join(" ".join(["word"] * words_per_paragraph) for _ in range(n_paragraphs))


def on(answer, n_paragraphs=6, words=100):
    return f"<think>\n{thinking(n_paragraphs, words)}\n</think>\n\n<answer>{answer}</answer>"


def off(answer):
    return f"<answer>{answer}</answer>"


def row(i, on_draws, off_draws, question=None, source="nq"):
    return {"id": f"q{i}", "question": question or f"question {i}?", "answers": ["Paris", "City of Light"],
            "source": source, "prompt": [{"role": "user", "content": f"question {i}?"}],
            "draws": {"thinking_on": on_draws, "thinking_off": off_draws}}


def words(texts):  # a whitespace "tokenizer" for the unit tests
    return [len(t.split()) for t in texts]


def run(rows, **opts):
    return label_rows(enumerate(rows, 1), LabelOptions(**opts), count_tokens=words)


def test_is_correct_uses_the_extracted_answer():
    assert is_correct("<think>Paris? no.</think><answer>Lyon</answer>", ["Paris"]) is False
    assert is_correct("<think>hmm</think>It is paris.", ["Paris"]) is True  # text after </think>
    assert is_correct("The City of Light!", ["city of light"]) is True  # no tags: whole text
    assert is_correct("<think>truncated Paris", ["Paris"]) is False  # unterminated: no answer


def test_classify_all_cases():
    assert classify([1, 1, 1], [0, 0, 0]) == "positive"
    assert classify([0, 0, 0], [1, 1, 1]) == "negative"
    assert classify([1, 1, 1], [1, 1, 1]) == "both_correct"
    assert classify([0, 0, 0], [0, 0, 0]) == "both_wrong"
    assert classify([1, 1, 0], [0, 0, 0]) == "inconsistent"
    assert classify([1, 1, 1], [0, 1, 0]) == "inconsistent"


def test_positive_negative_and_every_drop_reason():
    rows = [
        row(0, [on("Paris")] * 3, [off("Lyon")] * 3),  # positive
        row(1, [on("Lyon")] * 3, [off("Paris")] * 3),  # negative
        row(2, [on("Paris")] * 3, [off("Paris")] * 3),  # both correct
        row(3, [on("Lyon")] * 3, [off("Lyon")] * 3),  # both wrong
        row(4, [on("Paris"), on("Lyon"), on("Paris")], [off("Lyon")] * 3),  # not all draws agree
        row(5, ["Paris"] * 3, [off("Lyon")] * 3),  # positive but no thinking
        row(6, [on("Paris", n_paragraphs=3)] * 3, [off("Lyon")] * 3),  # 3 paragraphs: not in (4, 15)
        row(7, [on("Paris", words=10)] * 3, [off("Lyon")] * 3),  # 60 tokens: not in (450, 1000)
        row(8, [on("Paris")] * 3, [off("Lyon")] * 3, question="Question 0"),  # duplicate of row 0 after normalisation
    ]
    trajectories, summary = run(rows)
    assert [(t["id"], t["label"]) for t in trajectories] == [("q0", True), ("q1", False)]
    c = summary["total"]
    assert (c["positive"], c["negative"]) == (1, 1)
    assert {r: c[r] for r in DROP_REASONS if c[r]} == {
        "both_correct": 1, "both_wrong": 1, "inconsistent": 1, "no_thinking": 1, "paragraphs": 1, "tokens": 1,
        "duplicate": 1}
    assert c["in"] == c["positive"] + c["negative"] + sum(c[r] for r in DROP_REASONS)
    t = trajectories[0]
    assert t["response"] == rows[0]["draws"]["thinking_on"][0]
    assert t["gold"] == ["Paris", "City of Light"] and t["prompt"] == rows[0]["prompt"]
    assert (t["n_paragraphs"], t["n_reasoning_tokens"]) == (6, 600)


def test_first_qualifying_draw_is_kept():
    draws = [on("Paris", n_paragraphs=2), on("Paris", words=5), on("Paris", n_paragraphs=7), on("Paris")]
    trajectories, _ = run([row(0, draws, [off("no")] * 4)])
    assert trajectories[0]["draw"] == 2 and trajectories[0]["n_paragraphs"] == 7


def test_bounds_are_exclusive_and_configurable():
    exactly = [row(0, [on("Paris", n_paragraphs=5, words=90)], [off("x")])]  # 450 tokens exactly
    assert run(exactly)[1]["total"]["tokens"] == 1
    assert len(run(exactly, min_tokens=449)[0]) == 1
    assert len(run(exactly, no_filter=True)[0]) == 1
    fifteen = [row(0, [on("Paris", n_paragraphs=15, words=40)], [off("x")])]
    assert run(fifteen)[1]["total"]["paragraphs"] == 1


def test_no_filter_never_loads_a_tokenizer():
    rows = [row(0, [on("Paris", words=3)], [off("x")])]
    trajectories, _ = label_rows(enumerate(rows), LabelOptions(no_filter=True, tokenizer="/nonexistent"))
    assert len(trajectories) == 1 and "n_reasoning_tokens" not in trajectories[0]


def test_missing_tokenizer_names_the_fix():
    rows = [row(0, [on("Paris")], [off("x")])]
    with pytest.raises(ValueError, match="--no-filter"):
        label_rows(enumerate(rows), LabelOptions(tokenizer="/nonexistent/tokenizer"))


def test_malformed_rows_are_counted_per_source(tmp_path):
    path = tmp_path / "cand.jsonl"
    good = row(0, [on("Paris")] * 3, [off("x")] * 3, source="sciq")
    bad = {"id": "b", "question": "q", "answers": ["a"], "source": "sciq", "draws": {"thinking_on": []}}
    path.write_text(json.dumps(good) + "\n{broken\n" + json.dumps(bad) + "\n", encoding="utf-8")
    summary = label_file(path, tmp_path / "t.jsonl", LabelOptions(), count_tokens=words)
    assert dict(summary["by_source"]["sciq"]) == {"in": 2, "positive": 1, "malformed": 1}
    assert summary["by_source"]["?"]["malformed"] == 1
    table = format_summary(summary)
    assert table.splitlines()[0].split()[:5] == ["source", "positive", "negative", "total", "in"]
    assert table.splitlines()[-1].split()[:5] == ["TOTAL", "1", "0", "1", "3"]


def test_real_tokenizer_counts(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tokenizer

    path = tmp_path_factory.mktemp("tok")
    build_tokenizer().save_pretrained(path)
    count = load_token_counter(str(path))
    a, b = count(["Paris is the capital", "Paris is the capital of France and more"])
    assert 0 < a < b


def test_majority_rule_two_of_three():
    assert classify([1, 1, 0], [0, 0, 1], rule="majority") == "positive"
    assert classify([0, 1, 0], [1, 1, 0], rule="majority") == "negative"
    assert classify([1, 0, 1], [1, 1, 0], rule="majority") == "both_correct"
    assert classify([0, 0, 1], [0, 1, 0], rule="majority") == "both_wrong"
    assert classify([1, 0], [0, 0], rule="majority") == "inconsistent"  # a tie is no majority
    for on_hits, off_hits in (([1], [0]), ([0], [1]), ([1], [1]), ([0], [0])):  # one draw: both rules agree
        assert classify(on_hits, off_hits, rule="majority") == classify(on_hits, off_hits)
    with pytest.raises(ValueError, match="all or majority"):
        classify([1], [0], rule="most")


def test_majority_keeps_a_draw_that_agrees_with_the_label():
    # Positive by 2 of 3: the first thinking-on draw is wrong, so the second (correct) one is kept.
    pos = row(1, [on("Lyon"), on("Paris"), on("Paris")], [off("Lyon"), off("Lyon"), off("Paris")])
    # Negative by 2 of 3: the kept thinking-on draw is a wrong one (the third), not the correct first one.
    neg = row(2, [on("Paris"), on("Lyon", n_paragraphs=2), on("Nice")], [off("Paris"), off("Paris"), off("Lyon")])
    trajectories, summary = run([pos, neg], rule="majority")
    assert [(t["id"], t["label"], t["draw"]) for t in trajectories] == [("q1", True, 1), ("q2", False, 2)]
    assert summary["total"]["positive"] == 1 and summary["total"]["negative"] == 1
    strict, strict_summary = run([pos, neg])  # the paper's all-draws rule drops both
    assert strict == [] and strict_summary["total"]["inconsistent"] == 2

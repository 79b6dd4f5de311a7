"""The annotation driver: loss-free accounting, resume, rejected reasons, LLM and ensemble runs."""

import json
from collections import Counter

import pytest
from fake_chat_server import FakeChatServer

from mralign_plugin.annotate.annotators import Endpoint
from mralign_plugin.core.formats import record_problems
from mralign_plugin.pipeline.annotate import AnnotateOptions, annotate_file, dry_run
from mralign_plugin.pipeline.resumable import record_key, rejected_path

PARAGRAPHS = [
    "Okay, so the question is asking who wrote the song.",
    "I remember that Elton John composed the music in 1994.",
    "Wait, let me check that. Actually I'm not sure.",
    "So the answer is Elton John.",
]


def trajectory(i, question=None, n=3):
    question = question or f"who wrote song {i}?"
    thinking = "\n\n".join(PARAGRAPHS[(i + k) % 4] + f" ({i}.{k})" for k in range(n))
    return {"id": f"q{i}", "prompt": question, "question": question, "label": i % 2 == 0, "gold": ["Elton John"],
            "response": f"<think>\n{thinking}\n</think>\n<answer>Elton John</answer>", "extra_field": i}


def write_input(path, records, raw_lines=()):
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r) + "\n")
        for line in raw_lines:
            f.write(line + "\n")
    return path


def read(path):
    return [json.loads(line) for line in open(path, encoding="utf-8")] if path.exists() else []


def keys(records):
    return Counter(record_key(r["id"], r["response"]) for r in records)


BAD_LINES = [
    "{not json",
    json.dumps({"id": "no-response", "prompt": "q", "label": True}),
    json.dumps({"id": "no-thinking", "prompt": "q", "response": "Paris.", "label": True}),
    json.dumps({"id": "empty-thinking", "prompt": "q", "response": "<think>\n\n</think>Paris", "label": False}),
    json.dumps({"id": "bad-label", "prompt": "q", "response": "<think>a</think>b", "label": "yes"}),
    json.dumps([1, 2]),
]


def test_rules_run_accounts_for_every_line(tmp_path):
    src = write_input(tmp_path / "in.jsonl", [trajectory(i) for i in range(20)], BAD_LINES)
    out = tmp_path / "out.jsonl"
    s = annotate_file(src, out, AnnotateOptions(progress=False))
    assert (s["in"], s["annotated"], s["rejected"], s["skipped_done"]) == (26, 20, 6, 0)
    assert s["rejected_by_stage"] == {"invalid_json": 2, "invalid_record": 2, "no_thinking": 2}
    annotated = read(out)
    assert all(record_problems(r) == [] for r in annotated)
    assert all(r["extra_field"] is not None and r["annotation"] == {"annotator": "rules"} for r in annotated)
    rejected = read(rejected_path(out))
    assert [r["line"] for r in rejected] == [21, 22, 23, 24, 25, 26]
    assert all(r["reason"] for r in rejected)
    assert "label" in rejected[4]["reason"]

    again = annotate_file(src, out, AnnotateOptions(progress=False))  # a rerun does nothing
    assert (again["annotated"], again["rejected"], again["skipped_done"]) == (0, 0, 26)
    assert len(read(out)) == 20 and len(read(rejected_path(out))) == 6


def test_resume_after_partial_output_and_duplicates_in_input(tmp_path):
    records = [trajectory(i) for i in range(10)]
    src = write_input(tmp_path / "in.jsonl", records + [records[7]])  # one exact duplicate
    out = tmp_path / "out.jsonl"
    annotate_file(src, out, AnnotateOptions(progress=False, limit=4))
    # simulate a kill in the middle of writing the 5th record
    with open(out, "a", encoding="utf-8") as f:
        f.write(json.dumps(trajectory(4))[:40])
    s = annotate_file(src, out, AnnotateOptions(progress=False))
    assert (s["in"], s["annotated"], s["skipped_done"], s["skipped_duplicate"]) == (11, 6, 4, 1)
    final = read(out)
    assert keys(final) == keys(records)  # every record exactly once


def test_retry_rejected(tmp_path):
    src = write_input(tmp_path / "in.jsonl", [trajectory(0)], BAD_LINES[:1])
    out = tmp_path / "out.jsonl"
    annotate_file(src, out, AnnotateOptions(progress=False))
    s = annotate_file(src, out, AnnotateOptions(progress=False, retry_rejected=True))
    assert (s["rejected"], s["skipped_done"]) == (1, 1)
    assert len(read(rejected_path(out))) == 1


def test_dry_run_prints_the_exact_prompt(tmp_path, capsys):
    src = write_input(tmp_path / "in.jsonl", [trajectory(0)], [])
    assert dry_run(src, AnnotateOptions(annotator="llm", endpoints=[Endpoint("http://x", "m")])) == 0
    text = capsys.readouterr().out
    assert "----- system -----" in text and "Question: who wrote song 0?" in text and "[2] " in text
    assert dry_run(src, AnnotateOptions()) == 0
    assert "no prompt" in capsys.readouterr().out


@pytest.fixture(scope="module")
def server():
    with FakeChatServer(retry_after=0.1) as srv:
        yield srv


def llm_opts(server, **kw):
    return AnnotateOptions(annotator="llm", endpoints=[Endpoint(server.base_url, "m1")], progress=False,
                           backoff=0.01, max_retries=2, **kw)


def test_llm_run_with_misbehaving_server_ends_every_record_annotated_or_rejected(tmp_path, server):
    modes = ["ok", "500", "429", "flaky:1", "invalid_json", "bad_labels", "repairable", "hang_once:2", "slow:0.05"]
    records = [trajectory(i, f"q{i} [mock:{modes[i % len(modes)]}]") for i in range(45)]
    src = write_input(tmp_path / "in.jsonl", records, BAD_LINES[:2])
    out = tmp_path / "out.jsonl"
    server.reset()
    s = annotate_file(src, out, llm_opts(server, timeout=0.5, concurrency=8))
    assert s["in"] == 47 and s["annotated"] + s["rejected"] == 47
    assert s["rejected_by_stage"] == {"request_failed": 5, "invalid_annotation": 10, "invalid_json": 1,
                                      "invalid_record": 1}
    annotated, rejected = read(out), read(rejected_path(out))
    assert len(annotated) == 30 and len(rejected) == 17
    assert all(record_problems(r) == [] for r in annotated)
    assert {r["id"] for r in annotated}.isdisjoint({r["id"] for r in rejected})
    assert sum(r["annotation"]["repaired"] for r in annotated) == 5
    reasons = " ".join(r["reason"] for r in rejected)
    assert "hypothesis_generation" in reasons and "HTTP 500" in reasons and "invalid after one repair" in reasons
    # bounded: at most (1 + max_retries) requests per call, at most two calls (first + repair) per record
    assert server.requests <= 45 * 2 * 3
    assert s["usage"]["requests"] == server.requests
    assert s["usage"]["prompt_tokens"] > 0

    again = annotate_file(src, out, llm_opts(server))
    assert (again["annotated"], again["rejected"], again["skipped_done"]) == (0, 0, 47)
    assert keys(read(out)) == keys(annotated)


def test_ensemble_run(tmp_path, server):
    src = write_input(tmp_path / "in.jsonl", [trajectory(i, n=4) for i in range(12)])
    out = tmp_path / "out.jsonl"
    opts = AnnotateOptions(annotator="ensemble", endpoints=[Endpoint(server.base_url, m) for m in ("a", "b", "adj")],
                           progress=False)
    s = annotate_file(src, out, opts)
    assert s["annotated"] == 12
    records = read(out)
    assert all(record_problems(r) == [] for r in records)
    rules = Counter(st["rule"] for r in records for st in r["steps"])
    assert set(rules) <= {"consistent", "consolidated", "adjudicated"} and sum(rules.values()) > 0
    assert rules == Counter(s["ensemble_rules"])
    asked_adjudicator = [r for r in records if len(r["annotation"]["annotators"]) == 3]
    assert all(any(st["rule"] == "adjudicated" for st in r["steps"]) for r in asked_adjudicator)


def test_ensemble_needs_three_endpoints(tmp_path, server):
    src = write_input(tmp_path / "in.jsonl", [trajectory(0)])
    with pytest.raises(ValueError, match="3 endpoint"):
        annotate_file(src, tmp_path / "o.jsonl", AnnotateOptions(annotator="ensemble", progress=False,
                                                                 endpoints=[Endpoint(server.base_url, "a")]))


def test_a_second_run_on_the_same_output_is_refused(tmp_path):
    import fcntl

    src = write_input(tmp_path / "in.jsonl", [trajectory(0)])
    out = tmp_path / "out.jsonl"
    with open(out, "a") as holder:
        fcntl.flock(holder, fcntl.LOCK_EX)
        with pytest.raises(ValueError, match="another `mralign annotate` run"):
            annotate_file(src, out, AnnotateOptions(progress=False))
    assert annotate_file(src, out, AnnotateOptions(progress=False))["annotated"] == 1

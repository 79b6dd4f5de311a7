"""`mralign generate`, `label`, `annotate` end to end through the CLI (tiny model, local server)."""

import json

import pytest
from fake_chat_server import FakeChatServer

from mralign_plugin.cli import main

pytestmark = pytest.mark.integration


def thinking_response(answer, n=5):
    paragraphs = ["Okay, so the question is asking for a capital.", "I remember that Paris is in France.",
                  "Wait, let me check that again.", "Compared to Lyon, Paris is larger.", "So the answer is clear.",
                  "Let me double-check the spelling."]
    return "<think>\n" + "\n\n".join(paragraphs[:n]) + f"\n</think>\n\n<answer>{answer}</answer>"


def test_generate_cli_with_tiny_model(tmp_path, capsys):
    from mralign_plugin.tiny_model import build_tiny_llama

    model = build_tiny_llama(tmp_path / "tiny")
    qa = tmp_path / "sciq.jsonl"
    qa.write_text(json.dumps({"question": "What gas do plants absorb?", "correct_answer": "carbon dioxide"}) + "\n",
                  encoding="utf-8")
    out = tmp_path / "cand.jsonl"
    assert main(["generate", str(qa), "-o", str(out), "--model", str(model), "--n", "2", "--max-new-tokens", "6",
                 "--engine", "transformers", "--no-progress"]) == 0
    row = json.loads(out.read_text(encoding="utf-8"))
    assert row["source"] == "sciq" and row["answers"] == ["carbon dioxide"]
    assert [len(row["draws"][k]) for k in ("thinking_on", "thinking_off")] == [2, 2]
    assert "generated 1" in capsys.readouterr().out


def test_label_then_annotate_then_validate(tmp_path, capsys):
    rows = []
    for i in range(6):
        right, wrong = thinking_response("Paris"), thinking_response("Lyon")
        on, off = ([right] * 3, ["Lyon"] * 3) if i % 2 == 0 else ([wrong] * 3, ["Paris"] * 3)
        rows.append({"id": f"nq-{i}", "question": f"capital number {i}?", "answers": ["Paris"], "source": "nq",
                     "draws": {"thinking_on": on, "thinking_off": off}})
    rows.append({"id": "nq-both", "question": "x?", "answers": ["Paris"], "source": "nq",
                 "draws": {"thinking_on": [thinking_response("Paris")], "thinking_off": ["Paris"]}})
    cand = tmp_path / "cand.jsonl"
    cand.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    traj = tmp_path / "traj.jsonl"
    assert main(["label", str(cand), "-o", str(traj), "--no-filter", "--summary-json", str(tmp_path / "s.json")]) == 0
    out = capsys.readouterr().out
    assert "TOTAL" in out and "wrote 6 trajectories" in out
    summary = json.loads((tmp_path / "s.json").read_text())
    assert summary["total"]["positive"] == 3 and summary["total"]["negative"] == 3 and summary["total"]["both_correct"] == 1

    annotated = tmp_path / "annotated.jsonl"
    assert main(["annotate", str(traj), "-o", str(annotated), "--no-progress"]) == 0
    assert "in 6 = annotated 6 + rejected 0" in capsys.readouterr().out
    assert main(["validate", str(annotated)]) == 0

    with FakeChatServer() as srv:
        llm_out = tmp_path / "llm.jsonl"
        assert main(["annotate", str(traj), "-o", str(llm_out), "--annotator", "llm", "--model", "m",
                     "--base-url", srv.base_url, "--no-progress"]) == 0
        ens_out = tmp_path / "ens.jsonl"
        assert main(["annotate", str(traj), "-o", str(ens_out), "--annotator", "ensemble", "--model", "a,b,c",
                     "--base-url", srv.base_url, "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert "usage: 7 requests (0 retries, 1 structured-outputs probes)" in out and "ensemble steps by rule" in out
    assert main(["validate", str(llm_out)]) == 0
    assert main(["validate", str(ens_out)]) == 0


def test_cli_errors_are_one_line(tmp_path, capsys):
    traj = tmp_path / "t.jsonl"
    traj.write_text("", encoding="utf-8")
    assert main(["annotate", str(traj), "-o", str(tmp_path / "o.jsonl"), "--annotator", "ensemble", "--model", "a,b"]) == 2
    assert "needs --model with 3 name(s)" in capsys.readouterr().err
    assert main(["annotate", str(tmp_path / "missing.jsonl"), "-o", str(tmp_path / "o.jsonl")]) == 2
    assert main(["annotate", str(traj), "-o", str(tmp_path / "o.jsonl"), "--annotator", "llm", "--model", "m",
                 "--api-key-env", "MRALIGN_SURELY_UNSET_KEY"]) == 2
    assert "MRALIGN_SURELY_UNSET_KEY" in capsys.readouterr().err

"""`mralign annotate` flags and recipe sections (the verbs' end-to-end runs are in tests/integration)."""

import json

from fake_chat_server import FakeChatServer

from mralign_plugin.cli import main


def write_trajectories(path, n=3):
    with open(path, "w", encoding="utf-8") as f:
        for i in range(n):
            f.write(json.dumps({"id": i, "prompt": f"q{i}", "label": True,
                                "response": "<think>Okay, the question asks X.\n\nI recall Y.</think>Y"}) + "\n")
    return path


def test_endpoint_from_recipe_and_flag_wins(tmp_path, capsys):
    src = write_trajectories(tmp_path / "in.jsonl")
    with FakeChatServer() as srv:
        recipe = tmp_path / "annotate.yaml"
        recipe.write_text(f"annotate:\n  annotator: llm\n  model: [from-recipe]\n  base_url: {srv.base_url}\n"
                          "  concurrency: 2\n  no_progress: true\nkto:\n  beta: 0.1\n", encoding="utf-8")
        out = tmp_path / "out.jsonl"
        assert main(["annotate", str(src), "-o", str(out), "--recipe", str(recipe)]) == 0
        assert {json.loads(line)["annotation"]["model"] for line in open(out)} == {"from-recipe"}
        out2 = tmp_path / "out2.jsonl"
        assert main(["annotate", str(src), "-o", str(out2), "--recipe", str(recipe), "--model", "from-flag"]) == 0
        assert {json.loads(line)["annotation"]["model"] for line in open(out2)} == {"from-flag"}
    capsys.readouterr()
    recipe.write_text("annotate:\n  modle: x\n", encoding="utf-8")
    assert main(["annotate", str(src), "-o", str(out), "--recipe", str(recipe)]) == 2
    assert "annotate.modle: unknown key" in capsys.readouterr().err


def test_summary_line_and_json(tmp_path, capsys):
    src = write_trajectories(tmp_path / "in.jsonl", 4)
    assert main(["annotate", str(src), "-o", str(tmp_path / "o.jsonl"), "--no-progress", "--limit", "3"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("in 3 = annotated 3 + rejected 0 + skipped 0")
    assert json.loads(lines[-1])["annotated"] == 3


def test_dry_run_writes_nothing(tmp_path, capsys):
    src = write_trajectories(tmp_path / "in.jsonl")
    out = tmp_path / "o.jsonl"
    assert main(["annotate", str(src), "-o", str(out), "--dry-run", "--annotator", "llm", "--model", "m"]) == 0
    assert "Solution (2 segments)" in capsys.readouterr().out
    assert not out.exists()


def test_structured_flag_through_the_cli(tmp_path, capsys):
    """--structured auto falls back on a refusing server (probed once, shown); --structured on rejects instead."""
    src = write_trajectories(tmp_path / "in.jsonl", 4)
    with FakeChatServer(mode="refuse_schema") as srv:
        base = ["--annotator", "llm", "--model", "m", "--base-url", srv.base_url, "--no-progress", "--concurrency", "2"]
        assert main(["annotate", str(src), "-o", str(tmp_path / "auto.jsonl"), *base]) == 0
        out = capsys.readouterr().out
        summary = json.loads(out.splitlines()[-1])
        assert summary["annotated"] == 4 and summary["usage"]["structured_probes"] == 1
        assert summary["usage"]["requests"] == 5 and list(summary["usage"]["structured"].values()) == ["refused"]
        assert "structured outputs (response_format): {'m @ " in out
        assert {json.loads(line)["annotation"]["structured"] for line in open(tmp_path / "auto.jsonl")} == {"refused"}
        assert main(["annotate", str(src), "-o", str(tmp_path / "on.jsonl"), *base, "--structured", "on"]) == 0
        summary = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert summary["rejected"] == 4 and summary["rejected_by_stage"] == {"request_failed": 4}
    with FakeChatServer(mode="honour_schema") as srv:
        assert main(["annotate", str(src), "-o", str(tmp_path / "h.jsonl"), "--annotator", "llm", "--model", "m",
                     "--base-url", srv.base_url, "--no-progress"]) == 0
        summary = json.loads(capsys.readouterr().out.splitlines()[-1])
        assert summary["annotated"] == 4 and srv.stats()["with_response_format"] == 5  # the probe + 4 records
        assert list(summary["usage"]["structured"].values()) == ["used"]

"""`mralign eval` / `mralign report` on predictions: loaders on each schema's fixture, the numbers, the files."""

import json
from pathlib import Path

import pytest

from mralign_plugin.cli import main
from mralign_plugin.eval.report import build_report, render_markdown
from mralign_plugin.eval.run import import_predictions, method_label, parse_dataset_spec, task_of
from mralign_plugin.pipeline.datasets import load_qa

DATA = Path(__file__).resolve().parents[2] / "data" / "eval"


@pytest.mark.parametrize(
    ("fixture", "n", "first_answers", "task"),
    [
        ("nq_open.jsonl", 10, ["Canberra"], "short_qa"),
        ("sciq.jsonl", 4, ["carbon dioxide"], "short_qa"),  # open short answer: distractors are not used
        ("simpleqa.csv", 3, ["Athens"], "short_qa"),
        ("truthfulqa.jsonl", 4, ["The person would feel a light impact but would not be seriously hurt", "Nothing serious happens"], "truthfulqa"),
        ("longfact.jsonl", 3, [], "longfact"),
    ],
)
def test_loaders_on_each_schema(fixture, n, first_answers, task):
    rows = load_qa(DATA / fixture)
    assert len(rows) == n and rows[0]["answers"] == first_answers and task_of(rows) == task
    assert rows[0]["source"] == Path(fixture).stem
    if task == "truthfulqa":
        assert rows[0]["best_answer"] == rows[0]["answers"][0] and rows[0]["incorrect_answers"]
    if task == "short_qa" and fixture == "sciq.jsonl":
        assert "tides" not in json.dumps(rows[0])


def test_truthfulqa_from_parquet_and_csv(tmp_path):
    import csv

    import pyarrow as pa
    import pyarrow.parquet as pq

    rows = [json.loads(line) for line in (DATA / "truthfulqa.jsonl").read_text().splitlines()]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "tqa.parquet")
    with open(tmp_path / "tqa.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        for r in rows:
            writer.writerow({k: json.dumps(v) if isinstance(v, list) else v for k, v in r.items()})
    expected = load_qa(DATA / "truthfulqa.jsonl", name="tqa")
    assert load_qa(tmp_path / "tqa.parquet", name="tqa") == expected == load_qa(tmp_path / "tqa.csv", name="tqa")


def test_specs_and_labels():
    assert parse_dataset_spec("nq_open") == ("nq_open", "nq_open")
    assert parse_dataset_spec("my set=x.jsonl") == ("my_set", "x.jsonl")
    assert method_label("vanilla", "thinking_off", ["thinking_off", "thinking_on"]) == "vanilla w/o Thinking"
    assert method_label("vanilla", "thinking_on", ["thinking_off", "thinking_on"]) == "vanilla w Thinking"
    assert method_label("MR-ALIGN", "thinking_on", ["thinking_on"]) == "MR-ALIGN"


def _run(tmp_path, name, *args):
    out = tmp_path / name
    assert main(["eval", "--name", name, "--n-resamples", "200", "-o", str(out), *args]) == 0
    return out


def test_eval_on_predictions_and_report(tmp_path):
    """predictions_base: thinking on (EM_t, EM_a) per item = (1,1) (1,0) (0,1) (1,1) (0,0) (1,1) (0,0) (1,0)
    (1,0: truncated) (0,1: no thinking) -> Acc 30, Mis 50, EM_t 60, EM_a 50; thinking off: Acc = EM_a = 30.
    predictions_new (gold inline): (1,1) x3, (1,0), (0,0), (1,1) x4, (0,1) -> Acc 70, Mis 20."""
    base = _run(tmp_path, "vanilla", "--dataset", f"nq_open={DATA / 'nq_open.jsonl'}",
                "--predictions", f"nq_open={DATA / 'predictions_base.jsonl'}", "--thinking", "both")
    rows = json.loads((base / "report.json").read_text())["rows"]
    assert [r["method"] for r in rows] == ["vanilla w/o Thinking", "vanilla w Thinking"]
    off, on = rows[0]["results"]["nq_open"], rows[1]["results"]["nq_open"]
    assert (off["acc"], off["answer_acc"], off["mis"]) == (30.0, 30.0, None)
    assert (on["acc"], on["mis"], on["em_t"], on["em_a"], on["answer_acc"]) == (30.0, 50.0, 60.0, 50.0, 50.0)
    assert (on["no_thinking"], on["unterminated"]) == (1, 1)
    assert on["hit_gap"]["right"]["n"] == 3 and on["hit_gap"]["wrong"]["n"] == 3

    new = _run(tmp_path, "MR-ALIGN", "--predictions", f"nq_open={DATA / 'predictions_new.jsonl'}", "--baseline", str(base))
    report = json.loads((new / "report.json").read_text())
    res = report["rows"][0]["results"]["nq_open"]
    assert (report["rows"][0]["method"], res["acc"], res["mis"]) == ("MR-ALIGN", 70.0, 20.0)
    (bucket,) = report["buckets"]
    b = bucket["buckets"]
    # Base buckets: Both Correct {0,3,5}, Both Wrong {4,6}, Inconsistent {1,2,7,8,9}; new correct: all but 3, 4, 9.
    assert [b[k]["n"] for k in ("both_correct", "both_wrong", "inconsistent")] == [3, 2, 5]
    assert b["both_correct"]["delta_acc"] == pytest.approx(-100 / 3, abs=1e-3)
    assert (b["both_wrong"]["delta_acc"], b["inconsistent"]["delta_acc"]) == (50.0, 80.0)
    assert (b["inconsistent"]["base_answer_acc"], b["inconsistent"]["new_answer_acc"]) == (40.0, 100.0)
    for png in ("scores.png", "hit_gap.png", "buckets.png"):
        assert (new / "plots" / png).stat().st_size > 10_000
    md = (new / "report.md").read_text()
    assert "| MR-ALIGN | 70.00 | 20.00 |" in md and "Inconsistent" in md

    table = tmp_path / "table"
    assert main(["report", str(base), str(new), "--baseline", str(base), "-o", str(table)]) == 0
    md = (table / "report.md").read_text()
    assert md.index("| vanilla w/o Thinking | 30.00 | – |") < md.index("| vanilla w Thinking | 30.00 | 50.00 |") \
        < md.index("| MR-ALIGN | 70.00 | 20.00 |")
    combined = json.loads((table / "report.json").read_text())
    assert [x["method"] for x in combined["buckets"]] == ["MR-ALIGN"]  # the baseline's own rows are the reference
    assert {p.name for p in (table / "plots").iterdir()} == {"scores.png", "hit_gap.png", "buckets.png"}


def test_rerun_and_several_datasets(tmp_path):
    preds = tmp_path / "sciq_preds.jsonl"
    rows = load_qa(DATA / "sciq.jsonl", name="sciq")
    preds.write_text("".join(json.dumps({"id": r["id"], "mode": "thinking_on",
                                         "response": f"<think>\nIt is {r['answers'][0]}.\n</think>\n<answer>{r['answers'][0]}</answer>"})
                             + "\n" for r in rows))
    out = _run(tmp_path, "m", "--dataset", f"sciq={DATA / 'sciq.jsonl'}", "--predictions", f"sciq={preds}",
               "--predictions", f"nq_open={DATA / 'predictions_new.jsonl'}")
    report = build_report([out])
    assert list(report["datasets"]) == ["sciq", "nq_open"]
    assert report["rows"][0]["results"]["sciq"]["acc"] == 100.0
    assert "sciq Acc↑ | sciq Mis↓ | nq_open Acc↑" in render_markdown(report)


def test_input_errors_are_one_line(tmp_path, capsys):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(json.dumps({"id": "nq_open-000000", "response": "x"}) + "\n")
    code = main(["eval", "--dataset", f"nq_open={DATA / 'nq_open.jsonl'}", "--predictions", f"nq_open={bad}",
                 "--thinking", "both", "-o", str(tmp_path / "o")])
    assert code == 2 and "no `mode` field" in capsys.readouterr().err
    bad.write_text(json.dumps({"id": "zzz", "response": "x"}) + "\n")
    assert main(["eval", "--dataset", f"nq_open={DATA / 'nq_open.jsonl'}", "--predictions", f"nq_open={bad}",
                 "-o", str(tmp_path / "o")]) == 2
    assert "not in dataset" in capsys.readouterr().err
    assert main(["eval", "--dataset", str(DATA / "nq_open.jsonl"), "-o", str(tmp_path / "o")]) == 2
    assert "needs --model" in capsys.readouterr().err
    assert main(["report", str(tmp_path), "-o", str(tmp_path / "t")]) == 2


def test_import_generate_candidates(tmp_path):
    """A candidates file of `mralign generate` (draws per mode) is scored on its first draw of each mode."""
    cand = tmp_path / "cand.jsonl"
    cand.write_text(json.dumps({"id": "q1", "question": "Capital of France?", "answers": ["Paris"],
                                "draws": {"thinking_on": ["<think>\nParis.\n</think>\n<answer>Paris</answer>", "x"],
                                          "thinking_off": ["Lyon", "Paris"]}}) + "\n")
    by_mode = import_predictions(cand, "c", None, ["thinking_on"])
    assert {m: [r["response"] for r in rs] for m, rs in by_mode.items()} == {
        "thinking_on": ["<think>\nParis.\n</think>\n<answer>Paris</answer>"], "thinking_off": ["Lyon"]}


def test_eval_sampling_is_the_papers_table_15():
    from mralign_plugin.eval.run import EvalConfig, sampling_config

    s = sampling_config(EvalConfig())
    assert (s.n, s.temperature, s.top_p, s.top_k, s.max_new_tokens) == (1, 0.6, 0.95, 20, 8192)

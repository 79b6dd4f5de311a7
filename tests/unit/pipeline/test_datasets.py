"""QA loaders: one schema mapping for ours, NQ-Open, SciQ and SimpleQA; jsonl / json / parquet / csv."""

import csv
import json
import subprocess
import sys

import pytest

from mralign_plugin.pipeline.datasets import load_qa, to_qa

NQ = [{"question": "who sang hakuna matata in the lion king", "answer": ["Nathan Lane", "Ernie Sabella"]},
      {"question": "where is the eiffel tower", "answer": ["Paris"]}]
SCIQ = [{"question": "What phenomenon results from plate tectonic motion?", "correct_answer": "earthquakes",
         "distractor1": "tides", "distractor2": "winds", "distractor3": "eclipses", "support": "..."}]
SIMPLEQA = [{"problem": "Who received the IEEE Frank Rosenblatt Award in 2010?", "answer": "Michio Sugeno",
             "metadata": "{'topic': 'Science'}"}]
OURS = [{"id": "c-1", "question": "Capital of France?", "answers": "Paris"}]


def write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        (NQ, {"question": NQ[0]["question"], "answers": ["Nathan Lane", "Ernie Sabella"]}),
        (SCIQ, {"question": SCIQ[0]["question"], "answers": ["earthquakes"]}),
        (SIMPLEQA, {"question": SIMPLEQA[0]["problem"], "answers": ["Michio Sugeno"]}),
        (OURS, {"question": "Capital of France?", "answers": ["Paris"]}),
    ],
)
def test_each_schema_from_jsonl(tmp_path, rows, expected):
    qa = load_qa(write_jsonl(tmp_path / "src.jsonl", rows))
    assert {k: qa[0][k] for k in expected} == expected
    assert qa[0]["source"] == "src"
    assert qa[0]["id"] == rows[0].get("id", "src-000000")


def test_json_parquet_and_csv(tmp_path):
    (tmp_path / "a.json").write_text(json.dumps({"data": NQ}), encoding="utf-8")
    assert [r["answers"] for r in load_qa(tmp_path / "a.json")] == [r["answer"] for r in NQ]

    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.Table.from_pylist(SCIQ), tmp_path / "sciq.parquet")
    assert load_qa(tmp_path / "sciq.parquet")[0]["answers"] == ["earthquakes"]

    with open(tmp_path / "q.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=["question", "answers"])
        w.writeheader()
        w.writerow({"question": "Capital of Peru?", "answers": json.dumps(["Lima", "Lima, Peru"])})
        w.writerow({"question": "Capital of Chad?", "answers": "N'Djamena"})
    qa = load_qa(tmp_path / "q.csv")
    assert [r["answers"] for r in qa] == [["Lima", "Lima, Peru"], ["N'Djamena"]]


def test_limit_and_name(tmp_path):
    qa = load_qa(write_jsonl(tmp_path / "x.jsonl", NQ), limit=1, name="nq_open")
    assert len(qa) == 1 and qa[0]["source"] == "nq_open" and qa[0]["id"] == "nq_open-000000"


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"query": "q", "label": "a"}, "unknown schema"),
        ({"question": "", "answers": ["a"]}, "empty"),
        ({"question": "q", "answers": []}, "no non-empty answer"),
        ({"question": "q", "answer": [""]}, "no non-empty answer"),
    ],
)
def test_bad_rows(row, message):
    with pytest.raises(ValueError, match=message):
        to_qa(row, 0, "s")


def test_duplicate_ids_and_bad_json_are_errors(tmp_path):
    with pytest.raises(ValueError, match="duplicate ids"):
        load_qa(write_jsonl(tmp_path / "d.jsonl", OURS + OURS))
    (tmp_path / "b.jsonl").write_text('{"question": "q", "answers": ["a"]}\n{oops\n', encoding="utf-8")
    with pytest.raises(ValueError, match="b.jsonl:2"):
        load_qa(tmp_path / "b.jsonl")
    with pytest.raises(ValueError, match="unsupported"):
        (tmp_path / "x.txt").write_text("q", encoding="utf-8")
        load_qa(tmp_path / "x.txt")


def test_hub_name_without_datasets_names_the_fix():
    # A child interpreter in which `datasets` cannot be imported (as on a machine without it).
    code = (
        "import sys\n"
        "class Block:\n"
        "    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'datasets': raise ImportError('No module named datasets')\n"
        "sys.meta_path.insert(0, Block())\n"
        "from mralign_plugin.pipeline.datasets import load_qa\n"
        "try:\n"
        "    load_qa('nq_open')\n"
        "except ImportError as e:\n"
        "    print(e)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "pip install datasets" in out, out


def test_hub_short_names_map_to_dataset_ids(monkeypatch):
    datasets = pytest.importorskip("datasets")
    calls = []

    def fake_load_dataset(path, name=None, split=None):
        calls.append((path, name, split))
        return SIMPLEQA if "SimpleQA" in path else NQ

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    assert load_qa("nq_open")[1]["answers"] == ["Paris"]
    assert load_qa("simpleqa")[0]["source"] == "simpleqa"
    assert load_qa("someone/my_qa", split="validation")[0]["source"] == "my_qa"
    assert calls == [("google-research-datasets/nq_open", None, "train"), ("basicv8vc/SimpleQA", None, "test"),
                     ("someone/my_qa", None, "validation")]

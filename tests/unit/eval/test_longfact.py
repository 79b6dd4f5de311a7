"""LongFact: F1@K from VeriScore's per-claim output (hand-computed), and the VeriScore hook of `mralign eval`."""

import json
import shutil
import textwrap
from pathlib import Path

import pytest

from mralign_plugin.cli import main
from mralign_plugin.eval.longfact import (
    claim_counts,
    command,
    f1_at_k,
    input_stem,
    median_k,
    read_output,
    summarize_longfact,
)

DATA = Path(__file__).resolve().parents[2] / "data" / "eval"


def test_f1_at_k_by_hand():
    assert f1_at_k(3, 5, 2) == pytest.approx(0.75)  # P = 0.6, R = min(3/2, 1) = 1 -> 2·0.6/1.6
    assert f1_at_k(3, 5, 6) == pytest.approx(2 * 0.6 * 0.5 / 1.1)  # R = 0.5
    assert f1_at_k(0, 4, 3) == 0.0 and f1_at_k(0, 0, 3) == 0.0
    assert median_k([4]) == 4 and median_k([1, 2, 3, 4]) == 3  # VeriScore's upper median
    with pytest.raises(ValueError):
        median_k([])


def test_claim_counts_on_the_veriscore_fixture():
    """Record 1: 6 claims with one duplicate -> 5 distinct; 3 "supported" (contradicted / inconclusive are not).
    Record 2: the older mapping layout, labels in any case -> 2 of 2. Record 3: "No verifiable claim." -> 0 of 0.
    K = sorted([5, 2, 0])[1] = 2; F1@2 = (0.75 + 1 + 0) / 3 = 58.33 %; #Claims = 7/3."""
    rows = read_output(DATA / "veriscore_output.jsonl")
    assert [(r["supported"], r["claims"]) for r in rows] == [(3, 5), (2, 2), (0, 0)]
    s = summarize_longfact([(r["supported"], r["claims"]) for r in rows], n_resamples=200)
    assert s["k"] == 2 and s["f1_at_k"] == pytest.approx(100 * 1.75 / 3, abs=1e-3)
    assert s["claims_mean"] == pytest.approx(7 / 3, abs=1e-3) and s["n_scored"] == 3
    assert summarize_longfact([(3, 5), (2, 2), (0, 0)], k=5)["f1_at_k"] == pytest.approx(
        100 * (f1_at_k(3, 5, 5) + f1_at_k(2, 2, 5)) / 3, abs=1e-3)
    assert claim_counts({"abstained": True}) == (0, 0)


def _predictions(tmp_path: Path) -> Path:
    prompts = [json.loads(line)["prompt"] for line in (DATA / "longfact.jsonl").read_text().splitlines()]
    preds = tmp_path / "lf_preds.jsonl"
    preds.write_text("".join(json.dumps({"id": f"lf-{i:06d}", "response": f"<think>\nRecall.\n</think>\n<answer>About {p}</answer>"})
                             + "\n" for i, p in enumerate(prompts)))
    return preds


def test_eval_writes_veriscore_input_then_reads_its_output(tmp_path):
    preds, out = _predictions(tmp_path), tmp_path / "run"
    argv = ["eval", "--dataset", f"lf={DATA / 'longfact.jsonl'}", "--predictions", f"lf={preds}", "--name", "m",
            "--n-resamples", "100", "-o", str(out)]
    assert main(argv) == 0
    stem = input_stem("lf", "thinking_on")
    rows = [json.loads(line) for line in (out / "veriscore" / f"{stem}.jsonl").read_text().splitlines()]
    assert [set(r) for r in rows] == [{"question", "response", "model", "prompt_source", "id"}] * 3
    assert rows[0]["response"].startswith("About ") and "<think>" not in rows[0]["response"]  # the answer only
    res = json.loads((out / "report.json").read_text())["rows"][0]["results"]["lf"]
    assert res["f1_at_k"] is None and "veriscore.veriscore" in res["pending"]

    result = out / "veriscore" / "model_output" / f"verification_{stem}_3.jsonl"
    result.parent.mkdir(parents=True)
    shutil.copy(DATA / "veriscore_output.jsonl", result)
    assert main(argv) == 0  # the rerun reuses the predictions and finds VeriScore's output
    res = json.loads((out / "report.json").read_text())["rows"][0]["results"]["lf"]
    assert (res["k"], res["n_scored"]) == (2, 3) and res["f1_at_k"] == pytest.approx(58.3333, abs=1e-3)
    assert "lf F1@K↑" in (out / "report.md").read_text()


def test_veriscore_hook_runs_the_documented_command(tmp_path, monkeypatch):
    """A stand-in `veriscore` package on PYTHONPATH checks the arguments and the working directory, then
    writes the fixture output where VeriScore would."""
    fake = tmp_path / "fake_site" / "veriscore"
    fake.mkdir(parents=True)
    (fake / "__init__.py").write_text("")
    (fake / "veriscore.py").write_text(textwrap.dedent(f"""
        import argparse, os, shutil
        p = argparse.ArgumentParser()
        for a in ("--data_dir", "--input_file", "--output_dir", "--model_name_extraction", "--model_name_verification", "--label_n"):
            p.add_argument(a)
        args = p.parse_args()
        assert os.path.isdir("prompt"), "VeriScore reads prompt/ from its working directory"
        assert os.path.isfile(os.path.join(args.data_dir, "demos", "few_shot_examples.jsonl"))
        assert os.path.isfile(os.path.join(args.data_dir, args.input_file))
        stem = "".join(args.input_file.split(".")[:-1])
        os.makedirs(os.path.join(args.output_dir, "model_output"), exist_ok=True)
        shutil.copy({str(DATA / 'veriscore_output.jsonl')!r},
                    os.path.join(args.output_dir, "model_output", f"verification_{{stem}}_{{args.label_n}}.jsonl"))
    """))
    home = tmp_path / "VeriScore"
    (home / "prompt").mkdir(parents=True)
    (home / "data" / "demos").mkdir(parents=True)
    (home / "data" / "demos" / "few_shot_examples.jsonl").write_text("{}\n")
    monkeypatch.setenv("PYTHONPATH", str(fake.parent))
    preds, out = _predictions(tmp_path), tmp_path / "run"
    assert main(["eval", "--dataset", f"lf={DATA / 'longfact.jsonl'}", "--predictions", f"lf={preds}",
                 "--veriscore-home", str(home), "--n-resamples", "100", "-o", str(out)]) == 0
    res = json.loads((out / "report.json").read_text())["rows"][0]["results"]["lf"]
    assert res["f1_at_k"] == pytest.approx(58.3333, abs=1e-3)
    argv = command("x.jsonl", "/r/veriscore")
    assert argv[1:4] == ["-m", "veriscore.veriscore", "--data_dir"] and "--model_name_verification" in argv


def test_report_pools_k_across_runs(tmp_path):
    """Two runs with the same VeriScore output: the pooled claim counts [5, 2, 0, 5, 2, 0] give K = 2 (unchanged);
    --longfact-k 5 recomputes F1@5 for both rows."""
    preds = _predictions(tmp_path)
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        result = out / "veriscore" / "model_output" / f"verification_{input_stem('lf', 'thinking_on')}_3.jsonl"
        result.parent.mkdir(parents=True)
        shutil.copy(DATA / "veriscore_output.jsonl", result)
        assert main(["eval", "--dataset", f"lf={DATA / 'longfact.jsonl'}", "--predictions", f"lf={preds}", "--name", name,
                     "--n-resamples", "50", "-o", str(out)]) == 0
        runs.append(str(out))
    assert main(["report", *runs, "--longfact-k", "5", "-o", str(tmp_path / "table")]) == 0
    report = json.loads((tmp_path / "table" / "report.json").read_text())
    assert report["longfact_k"] == {"lf": 5}
    expected = 100 * (f1_at_k(3, 5, 5) + f1_at_k(2, 2, 5)) / 3
    assert [r["results"]["lf"]["f1_at_k"] for r in report["rows"]] == [pytest.approx(expected, abs=1e-3)] * 2

"""The `mralign` command: every verb has working --help; the data verbs run end to end on fixtures."""

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mralign_plugin.cli import build_parser, main

DATA = Path(__file__).resolve().parents[1] / "data"


def verbs() -> list[str]:
    return sorted(build_parser()._subparsers._group_actions[0].choices)


def test_core_verbs_are_present():
    assert {"validate", "fit-transitions", "weigh", "demo"} <= set(verbs())


@pytest.mark.parametrize("verb", verbs())
def test_every_verb_has_help(verb, capsys):
    with pytest.raises(SystemExit) as e:
        main([verb, "--help"])
    assert e.value.code == 0
    assert "usage: mralign " + verb in capsys.readouterr().out


def test_console_script_is_installed():
    exe = shutil.which("mralign", path=str(Path(sys.executable).parent))
    assert exe, "the mralign console script is not installed next to this python"
    out = subprocess.run([exe, "--help"], capture_output=True, text=True, check=True).stdout
    assert "fit-transitions" in out


def test_validate_reports_every_bad_line(capsys):
    assert main(["validate", str(DATA / "annotated_bad.jsonl")]) == 1
    out = capsys.readouterr().out.splitlines()
    expected = ["invalid JSON", "label: missing", "label: must be true or false", "unknown state",
                "out of range", "strictly ascending", "at most 2 states", "response: missing"]
    problems = out[:-1]
    for lineno, (line, defect) in enumerate(zip(problems, expected, strict=True), start=1):
        assert line.startswith(f"{DATA / 'annotated_bad.jsonl'}:{lineno}") and defect in line, line
    assert out[-1].endswith("8 records, 8 problems on 8 lines")
    assert main(["validate", str(DATA / "annotated_small.jsonl")]) == 0


def test_fit_then_weigh(tmp_path, capsys):
    out = tmp_path / "transitions.json"
    plots = tmp_path / "plots"
    assert main(["fit-transitions", str(DATA / "annotated_small.jsonl"), "-o", str(out), "--plot-dir", str(plots)]) == 0
    model = json.loads(out.read_text())
    assert model["format"] == "mralign-transitions/1" and len(model["P"]) == 17
    assert model["n_trajectories"] == {"all": 6, "pos": 3, "neg": 3}
    for name in ("P", "P_pos", "P_neg", "W_pos", "W_neg"):
        assert (plots / f"{name}.png").stat().st_size > 10_000

    weighted = tmp_path / "weighted.jsonl"
    assert main(["weigh", str(DATA / "annotated_small.jsonl"), "--transitions", str(out), "-o", str(weighted)]) == 0
    records = [json.loads(line) for line in weighted.read_text().splitlines()]
    assert len(records) == 6
    for rec in records:
        assert len(rec["step_weights"]) == len(rec["steps"])
        assert all(math.exp(-1) - 1e-12 <= w <= math.e + 1e-12 for w in rec["step_weights"])
    assert main(["validate", str(weighted)]) == 0


def test_bad_input_is_one_line_error_not_a_traceback(tmp_path, capsys):
    code = main(["fit-transitions", str(DATA / "annotated_bad.jsonl"), "-o", str(tmp_path / "t.json")])
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("mralign fit-transitions: error: ")
    assert "annotated_bad.jsonl:1: invalid JSON: Expecting ',' delimiter (character " in err[0]
    assert main(["weigh", str(DATA / "annotated_small.jsonl"), "--transitions", str(tmp_path / "missing.json"),
                 "-o", str(tmp_path / "w.jsonl")]) == 2


def test_estimator_and_single_label_ablations(tmp_path):
    for extra in (["--estimator", "frequency"], ["--single-label"]):
        out = tmp_path / ("t" + extra[-1] + ".json")
        assert main(["fit-transitions", str(DATA / "annotated_small.jsonl"), "-o", str(out), *extra]) == 0
        config = json.loads(out.read_text())["config"]
        assert config["estimator"] == ("frequency" if "frequency" in extra else "em")
        assert config["single_label"] is ("--single-label" in extra)


def test_demo_without_training_runs_on_bundled_corpus(tmp_path, capsys):
    assert main(["demo", "--quick", "--out", str(tmp_path), "--no-train"]) == 0
    out = capsys.readouterr().out
    assert "[4/5] train: skipped (--no-train)" in out
    assert "[5/5] report" in out and "most positive-typical transitions" in out
    assert (tmp_path / "weighted.jsonl").exists() and (tmp_path / "plots" / "W_pos.png").exists()


@pytest.mark.parametrize(
    "bad_line, message",
    [(1, "invalid JSON"), (2, "label: missing"), (3, "label: must be true or false"),
     (4, "steps[1].states: unknown state 'brainstorming'"), (7, "steps[2].states: at most 2 states")],
)
def test_fit_names_line_and_field_of_what_it_reads(bad_line, message, tmp_path, capsys):
    # fit-transitions checks the fields it reads (label, states); paragraph defects are validate's job.
    good = (DATA / "annotated_small.jsonl").read_text().splitlines()[0]
    bad = (DATA / "annotated_bad.jsonl").read_text().splitlines()[bad_line - 1]
    path = tmp_path / "a.jsonl"
    path.write_text(good + "\n" + bad + "\n")
    assert main(["fit-transitions", str(path), "-o", str(tmp_path / "t.json")]) == 2
    err = capsys.readouterr().err
    assert f"{path}:2: " in err and message in err, err


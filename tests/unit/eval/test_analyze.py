"""`mralign analyze`: transition shift Δ = P_after − P_before (Figure 4) and advantage maps (Figure 7)."""

import json
from pathlib import Path

import numpy as np

from mralign_plugin.cli import main
from mralign_plugin.core.formats import read_annotated
from mralign_plugin.core.taxonomy import PAPER_TAXONOMY
from mralign_plugin.data import demo_corpus_path
from mralign_plugin.eval.analyze import top_edges, transition_shift

DATA = Path(__file__).resolve().parents[2] / "data"


def test_top_edges_by_hand():
    delta = np.array([[0.0, 0.5, -0.5], [0.2, -0.1, -0.1], [0.0, 0.0, 0.0]])
    up, down = top_edges(delta, 10)
    assert up == [(0, 1), (1, 0)]  # only cells with Δ > 0, largest first
    assert down == [(0, 2), (1, 1), (1, 2)]  # most negative first, ties in row-major order
    assert top_edges(np.zeros((3, 3)), 10) == ([], [])


def test_shift_rows_sum_to_zero_and_identity_gives_no_edges():
    before = list(read_annotated(DATA / "annotated_small.jsonl"))
    after = list(read_annotated(demo_corpus_path()))
    shift = transition_shift(before, after, PAPER_TAXONOMY, top=10)
    delta = shift["delta"]
    assert delta.shape == (17, 17) and np.allclose(delta.sum(axis=1), 0.0, atol=1e-9)
    assert np.allclose(delta[:, 0], 0.0) and np.allclose(delta[-1], 0.0)  # nothing enters <start>; <stop> absorbs
    assert len(shift["strengthened"]) == len(shift["weakened"]) == 10
    assert all(e["delta"] > 0 for e in shift["strengthened"]) and all(e["delta"] < 0 for e in shift["weakened"])
    e = shift["strengthened"][0]
    assert abs(e["delta"] - delta.max()) < 1e-6 and abs(e["p_after"] - e["p_before"] - e["delta"]) < 1e-5
    same = transition_shift(before, before)
    assert np.allclose(same["delta"], 0.0) and same["strengthened"] == [] and same["weakened"] == []


def test_analyze_cli_on_annotated_files(tmp_path, capsys):
    out = tmp_path / "a"
    assert main(["analyze", "--before", str(DATA / "annotated_small.jsonl"), "--after", str(demo_corpus_path()),
                 "-o", str(out)]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert len(analysis["strengthened"]) == 10 and analysis["before"]["n_trajectories"] == 6
    md = (out / "analysis.md").read_text()
    assert "Strengthened edges" in md and f"| {analysis['strengthened'][0]['from']} | {analysis['strengthened'][0]['to']} |" in md
    for png in ("shift_heatmap.png", "shift_graph.png"):
        assert (out / "plots" / png).stat().st_size > 20_000
    assert "most strengthened" in capsys.readouterr().out


def test_analyze_annotates_eval_runs_and_plots_advantage_maps(tmp_path):
    """Eval run directories are annotated here (rules tagger); responses without thinking are rejected."""
    eval_data = DATA / "eval"
    runs = []
    for name, preds, extra in (("base", "predictions_base.jsonl", ["--dataset", f"nq_open={eval_data / 'nq_open.jsonl'}"]),
                               ("new", "predictions_new.jsonl", [])):
        out = tmp_path / name
        assert main(["eval", "--predictions", f"nq_open={eval_data / preds}", *extra, "--n-resamples", "20",
                     "-o", str(out)]) == 0
        runs.append(out)
    transitions = tmp_path / "t.json"
    assert main(["fit-transitions", str(DATA / "annotated_small.jsonl"), "-o", str(transitions)]) == 0
    out = tmp_path / "analysis"
    assert main(["analyze", "--before", str(runs[0]), "--after", str(runs[1]), "--transitions", str(transitions),
                 "--top", "3", "-o", str(out)]) == 0
    analysis = json.loads((out / "analysis.json").read_text())
    assert analysis["before"]["inputs"] == 10 and analysis["before"]["rejected"] == 1  # item 9 has no thinking
    assert analysis["before"]["annotator"] == "rules" and len(analysis["weakened"]) <= 3
    assert (out / "before.annotated.jsonl").exists()
    for name in ("P", "P_pos", "P_neg", "W_pos", "W_neg"):
        assert (out / "plots" / "advantage" / f"{name}.png").stat().st_size > 20_000
    assert main(["analyze", "--before", str(runs[0]), "-o", str(out)]) == 2  # --after missing

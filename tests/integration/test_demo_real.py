"""The real-model main job, reduced: the real SmolLM2, 40 training questions, one optimizer step per arm,
four held-out questions. Every artefact is checked, and every table cell against the file it came from."""

import json
import subprocess
import sys

import numpy as np
import pytest

from mralign_plugin.core.formats import read_jsonl
from mralign_plugin.eval.metrics import paired_difference

REDUCED = """
demo: {questions: 40, held_out: 4, seed: 0}
generate: {max_new_tokens: 96, batch_size: 40}
trainer:
  train: {max_epochs: 1, batch_size: 64, micro_batch_size: 4}
eval: {max_new_tokens: 96, n_resamples: 200}
"""


def rate(items, field):
    return round(100.0 * float(np.mean([bool(it[field]) for it in items])), 4)


@pytest.mark.slow
@pytest.mark.integration
def test_real_model_path_end_to_end(tmp_path):
    recipe = tmp_path / "reduced.yaml"
    recipe.write_text(REDUCED)
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mralign_plugin.cli", "demo", "--out", str(out), "--recipe", str(recipe), "--no-progress"]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())

    # Data and labels: the counts in the report are the files' counts.
    train, test = read_jsonl(out / "data" / "train.jsonl"), read_jsonl(out / "data" / "test.jsonl")
    assert (len(train), len(test)) == (report["data"]["train"], report["data"]["test"]) == (40, 4)
    assert not {r["id"] for r in train} & {r["id"] for r in test}
    candidates = read_jsonl(out / "candidates.jsonl")
    assert len(candidates) == 40 and all(len(c["draws"]["thinking_on"]) == 1 for c in candidates)
    assert all(c["draws"]["thinking_on"][0].startswith("<think>\n") and c["draws"]["thinking_on"][0].endswith("</answer>")
               for c in candidates)
    trajectories = read_jsonl(out / "trajectories.jsonl")
    n_pos = sum(t["label"] for t in trajectories)
    assert (report["label"]["positive"], report["label"]["negative"]) == (n_pos, len(trajectories) - n_pos)
    assert n_pos > 0 and len(trajectories) - n_pos > 0
    annotated = read_jsonl(out / "annotated.jsonl")
    weighted = read_jsonl(out / "weighted.jsonl")
    assert len(weighted) == len(annotated) == report["train"]["rows"]
    assert all(len(r["step_weights"]) == len(r["steps"]) for r in weighted)
    assert report["train"]["lambda_r"] == pytest.approx(n_pos / (1.503 * (len(weighted) - n_pos)))
    for name in ("P", "P_pos", "P_neg", "W_pos", "W_neg"):
        assert (out / "plots" / f"{name}.png").stat().st_size > 0

    # Training: one optimizer step per arm, the same data; only MR-ALIGN's token weights differ from 1.
    for arm, weighted_arm in (("kto", False), ("mralign", True)):
        log = [json.loads(x) for x in (out / arm / "model" / "train_log.jsonl").read_text().splitlines()]
        assert report["train"]["arms"][arm]["steps"] == log[-1]["global_step"] == 1
        mean_weight = np.mean([row["mean_token_weight"] for row in log])
        assert (mean_weight != 1.0) if weighted_arm else (mean_weight == 1.0)
        assert (out / arm / "model" / "config.json").exists()

    # The table: every cell recomputed from the scored items it came from.
    scored = {key: read_jsonl(out / "eval" / key / "scored" / "factual.thinking_on.jsonl")
              for key in ("vanilla", "kto", "mralign")}
    by_method = {r["method"]: r for r in report["table"]}
    assert set(by_method) == {"Vanilla w/o Thinking", "Vanilla w Thinking", "KTO", "MR-ALIGN"}
    for method, key in (("Vanilla w Thinking", "vanilla"), ("KTO", "kto"), ("MR-ALIGN", "mralign")):
        row, items = by_method[method], scored[key]
        assert row["n"] == len(items) == 4
        assert row["acc"] == rate(items, "correct") and row["mis"] == rate(items, "mis")
        assert row["em_t"] == rate(items, "em_t") and row["em_a"] == rate(items, "em_a")
        assert row["acc_ci"][0] <= row["acc"] <= row["acc_ci"][1]
    off = read_jsonl(out / "eval" / "vanilla" / "scored" / "factual.thinking_off.jsonl")
    assert by_method["Vanilla w/o Thinking"]["em_a"] == rate(off, "em_a")
    names = {"MR-ALIGN": "mralign", "KTO": "kto", "Vanilla": "vanilla"}
    for pair in report["paired"]:
        a = {it["id"]: it for it in scored[names[pair["a"]]]}
        b = {it["id"]: it for it in scored[names[pair["b"]]]}
        ids = sorted(a)
        diff, lo, hi = paired_difference(np.array([float(a[i]["correct"]) for i in ids]),
                                         np.array([float(b[i]["correct"]) for i in ids]), n_resamples=200)
        assert pair["acc"] == [round(100 * diff, 2), round(100 * lo, 2), round(100 * hi, 2)]
    md = (out / "report.md").read_text()
    for method, row in by_method.items():
        assert f"| {method} | {row['n']} |" in md
    assert report["verdict"] in md and report["verdict"] in done.stdout
    assert (out / "analysis" / "plots" / "shift_heatmap.png").exists() and (out / "eval" / "report.md").exists()

    # A rerun resumes: every stage is cached, nothing is generated or trained again.
    again = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr[-3000:]
    assert all(stage["cached"] for stage in json.loads((out / "report.json").read_text())["stages"].values())

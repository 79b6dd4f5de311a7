"""The main job (`mralign demo`, run by scripts/run_main.sh) end to end, training included."""

import json
import subprocess
import sys

import pytest


@pytest.mark.integration
def test_demo_trains_both_arms(tmp_path):
    done = subprocess.run([sys.executable, "-m", "mralign_plugin.cli", "demo", "--quick", "--out", str(tmp_path)],
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "MR-ALIGN (weights on)" in done.stdout and "KTO (weights off)" in done.stdout
    for arm, weighted in (("mralign", True), ("kto", False)):
        log = [json.loads(line) for line in (tmp_path / arm / "model" / "train_log.jsonl").read_text().splitlines()]
        assert len(log) >= 20 and all(row["loss"] == row["loss"] for row in log)  # finite, not NaN
        mean_weight = sum(row["mean_token_weight"] for row in log) / len(log)
        assert (mean_weight != 1.0) if weighted else (mean_weight == 1.0)
        assert (tmp_path / arm / "model" / "config.json").exists()

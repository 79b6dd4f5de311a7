"""The main job's settings (embedded defaults == recipes/demo-cpu.yaml) and its stage cache."""

import json
from pathlib import Path

import pytest

from mralign_plugin.demo.config import DEFAULTS, load_demo_config, rejected_weight
from mralign_plugin.demo.real import expected_steps, trainer_argv
from mralign_plugin.demo.stages import Stages, fingerprint
from mralign_plugin.recipe import RecipeError, load_recipe

RECIPE = Path(__file__).parents[3] / "recipes" / "demo-cpu.yaml"


def test_recipe_file_is_the_embedded_defaults():
    assert load_recipe(RECIPE) == DEFAULTS
    assert load_demo_config(RECIPE) == load_demo_config()


def test_overrides_and_unknown_keys(tmp_path):
    config = load_demo_config(questions=40, seed=3)
    assert config["demo"] == {"questions": 40, "held_out": 20, "seed": 3}
    bad = tmp_path / "bad.yaml"
    bad.write_text("generate:\n  temprature: 0.5\n")
    with pytest.raises(RecipeError, match=r"generate\.temprature: unknown key"):
        load_demo_config(bad)
    partial = tmp_path / "partial.yaml"
    partial.write_text("trainer:\n  adam:\n    lr: 1.0e-4\n")
    merged = load_demo_config(partial)
    assert merged["trainer"]["adam"]["lr"] == 1e-4 and merged["trainer"]["train"] == DEFAULTS["trainer"]["train"]


def test_rejected_weight_keeps_the_paper_ratio():
    assert rejected_weight(4830, 2143, 1.503) == pytest.approx(1.5, abs=1e-3)
    assert rejected_weight(27, 50, 1.503) == pytest.approx(27 / (1.503 * 50))
    with pytest.raises(ValueError, match="both classes"):
        rejected_weight(0, 50, 1.503)


def test_trainer_argv_is_the_same_for_both_arms_but_the_weights_switch(tmp_path):
    argv = {w: trainer_argv(DEFAULTS["trainer"], tmp_path / "m", tmp_path / "w.jsonl", tmp_path / w, w, 0.36)
            for w in ("on", "off")}
    flags = {w: [a for a in v if str(tmp_path / w) not in a] for w, v in argv.items()}
    assert [a for a in flags["on"] if a not in ("on", "off")] == [a for a in flags["off"] if a not in ("on", "off")]
    text = " ".join(argv["on"])
    assert "--kto.undesirable_weight 0.36" in text and "--kto.kl_mode fixed" in text and "--ref.precompute" in text
    assert "target_ratio" not in text and "--data.apply_chat_template" in text


def test_stage_runs_once_then_is_cached(tmp_path):
    stages, calls = Stages(tmp_path), []
    out = tmp_path / "a.txt"

    def make():
        calls.append(1)
        out.write_text("x")
        return {"n": 1}

    first = stages.run("a", {"k": 1}, [], [out], make)
    again = Stages(tmp_path).run("a", {"k": 1}, [], [out], make)  # a new process reads stages.json
    assert (first["cached"], again["cached"], again["result"], len(calls)) == (False, True, {"n": 1}, 1)
    changed = Stages(tmp_path).run("a", {"k": 2}, [], [out], make)
    assert not changed["cached"] and len(calls) == 2


def test_interrupted_stage_resumes_on_its_partial_output_but_new_settings_start_over(tmp_path):
    out = tmp_path / "rows.jsonl"

    def interrupted():
        out.write_text("row 1\n")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        Stages(tmp_path).run("gen", {"k": 1}, [], [out], interrupted)
    seen = []
    Stages(tmp_path).run("gen", {"k": 1}, [], [out], lambda: seen.append(out.read_text()) or {})
    assert seen == ["row 1\n"]  # same settings: the partial output is kept for the resumable stage
    record = json.loads((tmp_path / "stages.json").read_text())["gen"]
    assert record["started"] == record["finished"]
    with pytest.raises(KeyboardInterrupt):
        Stages(tmp_path).run("gen", {"k": 2}, [], [out], interrupted)
    seen.clear()
    Stages(tmp_path).run("gen", {"k": 3}, [], [out], lambda: seen.append(out.exists()) or {})
    assert seen == [False]  # other settings: the stale output was deleted first


def test_fingerprint_follows_file_contents(tmp_path):
    f = tmp_path / "in.jsonl"
    f.write_text("a\n")
    before = fingerprint({"x": 1}, [f])
    assert fingerprint({"x": 1}, [f]) == before
    f.write_text("b\n")
    assert fingerprint({"x": 1}, [f]) != before and fingerprint({"x": 2}, [f]) != fingerprint({"x": 1}, [f])


def test_expected_steps_counts_windows_across_epochs():
    # The trainer logged 16 steps for 65 rows and 17 for 70 (2 epochs, micro-batch 4, batch 8): 17 micro-batches
    # per epoch leave a window open at the end of epoch 0 that epoch 1's first micro-batch closes.
    assert expected_steps(65, DEFAULTS["trainer"]) == 16
    assert expected_steps(70, DEFAULTS["trainer"]) == 17

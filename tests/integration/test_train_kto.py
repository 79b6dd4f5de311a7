"""`mralign train recipes/tiny-cpu.yaml` end to end on CPU: a tiny random Llama, OpenRLHF's
DeepspeedStrategy (ZeRO 0, gloo), segment weights on and off, checkpoint reload, resume."""

import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("openrlhf")
pytest.importorskip("deepspeed")

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "tiny-cpu.yaml"


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


def run_train(tiny_model: Path, out: Path, *overrides: str, stdout: list | None = None) -> list[dict]:
    """Run the recipe in a subprocess (as a user would) and return its per-step log (and append its output
    to ``stdout`` when given)."""
    command = [
        sys.executable, "-m", "mralign_plugin.cli", "train", str(RECIPE),
        f"model.model_name_or_path={tiny_model}", f"ckpt.output_dir={out / 'model'}", f"ckpt.path={out / 'ckpt'}",
        *overrides,
    ]
    # One thread: on a shared 2-core machine a tiny model's small matmuls run ~50x slower with two.
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    if stdout is not None:
        stdout.append(done.stdout)
    log = out / "model" / "train_log.jsonl"
    return [json.loads(line) for line in log.read_text().splitlines()]


def changed_parameters(before: Path, after: Path) -> int:
    import torch
    from transformers import AutoModelForCausalLM

    initial = AutoModelForCausalLM.from_pretrained(before, dtype=torch.bfloat16).state_dict()
    trained = AutoModelForCausalLM.from_pretrained(after, dtype=torch.bfloat16).state_dict()
    assert initial.keys() == trained.keys()
    return sum(not torch.equal(initial[k], trained[k]) for k in initial)


@pytest.fixture(scope="module")
def weighted_run(tiny_model, tmp_path_factory):
    out = tmp_path_factory.mktemp("weighted")
    return out, run_train(tiny_model, out, "ckpt.save_steps=3")


def test_weighted_run_trains(tiny_model, weighted_run):
    out, log = weighted_run
    assert [row["global_step"] for row in log] == [1, 2, 3, 4, 5]  # 20 rows / 4 per step
    assert all(math.isfinite(row["loss"]) and math.isfinite(row["grad_norm"]) for row in log)
    assert any(abs(row["mean_token_weight"] - 1) > 0.01 for row in log)  # the step_weights reached the loss
    assert any(row["margin"] != 0 for row in log[1:])
    assert changed_parameters(tiny_model, out / "model") > 0  # the saved HF model loads and has moved
    assert (out / "ckpt" / "global_step3").is_dir()


def test_weights_off_is_plain_kto(tiny_model, tmp_path):
    log = run_train(tiny_model, tmp_path, "mralign.weights=off", "ckpt.save_steps=-1")
    assert len(log) == 5 and all(math.isfinite(row["loss"]) for row in log)
    assert all(row["mean_token_weight"] == 1.0 for row in log)
    assert changed_parameters(tiny_model, tmp_path / "model") > 0


def test_resume_continues_the_step_count(tiny_model, weighted_run, tmp_path):
    out, _ = weighted_run
    shutil.copytree(out / "ckpt", tmp_path / "ckpt")  # global_step3: 12 samples consumed
    log = run_train(tiny_model, tmp_path, "ckpt.load_enable=true", "train.max_epochs=2", "ckpt.save_steps=-1")
    assert [row["global_step"] for row in log] == list(range(4, 11))
    assert [row["epoch"] for row in log] == [0, 0] + [1] * 5


def assert_merged_matches_adapter(tiny_model: Path, adapter_dir: Path) -> None:
    """``adapter_dir/merged`` loads with plain transformers, holds no LoRA module, and gives the logits of the
    base + adapter peft model (float32, a fixed input) within 1e-5, while differing from the base's."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    merged = AutoModelForCausalLM.from_pretrained(adapter_dir / "merged", dtype=torch.float32)
    assert not any("lora" in name for name, _ in merged.named_modules())
    base = AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32)
    assert merged.state_dict().keys() == base.state_dict().keys()
    ids = AutoTokenizer.from_pretrained(adapter_dir / "merged")("<think>\nThe capital of France.\n</think>",
                                                                 return_tensors="pt").input_ids
    with torch.no_grad():
        base_logits = base(ids).logits
        adapted = PeftModel.from_pretrained(base, adapter_dir)
        assert any("lora" in name for name, _ in adapted.named_modules())
        expected, got = adapted(ids).logits, merged(ids).logits
    assert (got - expected).abs().max().item() <= 1e-5
    assert (got - base_logits).abs().max().item() > 1e-4  # the adapter did change the model


def test_lora_micro_batch_one_accumulated_kl(tiny_model, tmp_path):
    """LoRA with the reference = policy with its adapter disabled; z0 pairs across micro-batches; the adapter
    and the merged model (ckpt.save_merged), at the end and with the step-4 HF checkpoint, are saved."""
    log = run_train(tiny_model, tmp_path, "ds.lora.rank=4", "ds.lora.alpha=8", "train.micro_batch_size=1",
                    "train.batch_size=2", "kto.kl_mode=accumulated", "data.max_samples=8", "ckpt.save_steps=4",
                    "ckpt.save_hf=true", "ckpt.disable_ds=true", "ckpt.save_merged=true")
    assert len(log) == 4 and all(math.isfinite(row["loss"]) for row in log)
    from safetensors.torch import load_file

    adapter = load_file(tmp_path / "model" / "adapter_model.safetensors")
    assert any(k.endswith("lora_B.weight") and v.abs().sum() > 0 for k, v in adapter.items())  # B starts at 0
    assert_merged_matches_adapter(tiny_model, tmp_path / "model")
    assert_merged_matches_adapter(tiny_model, tmp_path / "ckpt" / "global_step4_hf")  # the same weights


SMALL = ("train.micro_batch_size=1", "train.batch_size=2", "data.max_samples=8", "kto.kl_mode=fixed",
         "ckpt.save_steps=-1")


@pytest.fixture(scope="module")
def precomputed_run(tiny_model, tmp_path_factory):
    out, printed = tmp_path_factory.mktemp("precomputed"), []
    return out, run_train(tiny_model, out, *SMALL, "ref.precompute=true", stdout=printed), printed[0]


@pytest.mark.slow
def test_precomputed_reference_matches_the_live_one(tiny_model, precomputed_run, tmp_path):
    out, cached, printed = precomputed_run
    assert "cached in" in printed and (out / "model" / "ref_logps.pt").is_file()
    live = run_train(tiny_model, tmp_path, *SMALL)
    assert len(cached) == len(live) == 4
    for a, b in zip(cached, live, strict=True):
        assert a["loss"] == pytest.approx(b["loss"], abs=1e-6) and a["kl"] == pytest.approx(b["kl"], abs=1e-5)


@pytest.mark.slow
def test_reference_cache_is_reused(tiny_model, precomputed_run):
    out, first, _ = precomputed_run
    (out / "model" / "train_log.jsonl").unlink()
    printed = []
    again = run_train(tiny_model, out, *SMALL, "ref.precompute=true", stdout=printed)
    assert "no reference model is loaded" in printed[0]
    assert [row["loss"] for row in again] == pytest.approx([row["loss"] for row in first], abs=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("stage, lora", [(2, 0), (3, 4)])
def test_zero_stages(tiny_model, tmp_path, stage, lora):
    """ZeRO-3 partitions the LoRA weights: the merged model must come from the gathered adapter."""
    log = run_train(tiny_model, tmp_path, f"ds.zero_stage={stage}", f"ds.lora.rank={lora}", "ckpt.save_steps=-1",
                    "ckpt.save_merged=true")
    assert len(log) == 5 and all(math.isfinite(row["loss"]) for row in log)
    if lora:
        assert_merged_matches_adapter(tiny_model, tmp_path / "model")
    else:
        assert not (tmp_path / "model" / "merged").exists()  # a full fine-tune is saved whole anyway

"""Segment-weighted KTO on TRL (adapters/trl/kto.py) against the OpenRLHF path and against TRL's own KTOTrainer.

On one shared batch (the same encoded rows, tokens and weights): the TRL path (TRL's collator, fused-LM-head
log-probs, ``MRAlignKTOTrainer._compute_loss``) and the OpenRLHF path (``openrlhf.models.Actor`` log-probs,
the core loss as ``adapters/openrlhf/kto_trainer.py`` computes it) give the same loss and gradients to 1e-6,
with weights on and off; with weights off the TRL path equals TRL's stock ``KTOTrainer._compute_loss``.
Then ``mralign train recipes/mralign-trl.yaml`` trains a tiny random Llama for a few steps, and a dataset that
cannot be loaded stops it at start, naming the file.
"""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
pytest.importorskip("trl")
torch = pytest.importorskip("torch")

REPO = Path(__file__).resolve().parents[2]
DATA = REPO / "tests" / "data" / "kto_tiny.jsonl"
ROWS = [json.loads(line) for line in DATA.read_text().splitlines()][:4]  # 2 desirable, 2 undesirable


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from mralign_plugin.tiny_model import build_tiny_llama

    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"), seed=0)


def mralign_trainer(tiny, out, segment_weights=True):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mralign_plugin.adapters.trl.kto import ROW_JSON, MRAlignKTOConfig, MRAlignKTOTrainer

    config = MRAlignKTOConfig(output_dir=str(out), per_device_train_batch_size=4, max_length=256, report_to="none",
                              use_cpu=True, bf16=False, segment_weights=segment_weights, apply_chat_template=True,
                              beta=0.1, desirable_weight=1.0, undesirable_weight=1.5)
    dataset = Dataset.from_dict({ROW_JSON: [json.dumps(r) for r in ROWS]})
    model = AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32)
    trainer = MRAlignKTOTrainer(model, args=config, train_dataset=dataset,
                                processing_class=AutoTokenizer.from_pretrained(tiny))
    trainer.model.train()  # as inside Trainer.train (metrics go to the "train" bucket); the model has no dropout
    perturb(trainer.model)
    return trainer


def perturb(model):
    """Move the policy off its reference (a copy made by the trainer), the same way every time: at policy ==
    reference every log-ratio is 0 and the loss cannot tell weights from no weights."""
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for param in model.parameters():
            param.add_(0.05 * torch.randn(param.shape, generator=generator))


def shared_items(tokenizer):
    """The four rows encoded once (core/kto_rows.py), as both frameworks' collators take them; z0's mismatched
    pairs are (x_i, y_{i+1}) in both."""
    from mralign_plugin.core.kto_rows import encode_row

    items = [encode_row(row, tokenizer, 256, True, "drop", True)[0] for row in ROWS]
    for i, item in enumerate(items):
        item["index"] = i
    trl_items = [{"prompt_ids": it["prompt_ids"], "completion_ids": it["response_ids"],
                  "completion_weights": it["weights"].tolist(), "label": it["desirable"],
                  "KL_completion_ids": items[(i + 1) % len(items)]["response_ids"]} for i, it in enumerate(items)]
    return items, trl_items


def grads(model) -> dict:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def openrlhf_loss(trainer, items, use_weights):
    """The OpenRLHF path on the same model weights: Actor log-probs, z0 and loss as KTOTrainer.training_step."""
    from mralign_plugin.adapters.openrlhf import cpu

    cpu.apply()
    from openrlhf.models import Actor

    from mralign_plugin.adapters.openrlhf.data import KTODataset
    from mralign_plugin.core.loss import kto_loss, kto_reference_point

    dataset = KTODataset([], trainer.processing_class, 256, kl_mode="batch")
    batch = dataset.collate_fn(items)
    policy, ref = Actor(trainer.model), Actor(trainer.ref_model)
    for actor in (policy, ref):
        actor.packing_samples = False

    def logps(actor, rows):
        return actor(rows["input_ids"], attention_mask=rows["attention_mask"], return_logprobs=True)

    with torch.no_grad():
        z0 = kto_reference_point(logps(policy, batch["kl"]), logps(ref, batch["kl"]), batch["kl"]["response_mask"])
        ref_logps = logps(ref, batch)
    loss, _ = kto_loss(logps(policy, batch), ref_logps, batch["response_mask"], batch["desirable"], z0,
                       token_weights=batch["token_weights"] if use_weights else None, beta=0.1,
                       desirable_weight=1.0, undesirable_weight=1.5, weights_masked=True)
    return loss


@pytest.mark.parametrize("segment_weights", [True, False], ids=["weights-on", "weights-off"])
def test_trl_path_equals_openrlhf_path(tiny, tmp_path, segment_weights):
    pytest.importorskip("openrlhf")
    trainer = mralign_trainer(tiny, tmp_path, segment_weights)
    items, trl_items = shared_items(trainer.processing_class)
    trainer.model.zero_grad()
    trl_loss = trainer.compute_loss(trainer.model, trainer.data_collator(trl_items))
    trl_loss.backward()
    trl_grads = grads(trainer.model)
    trainer.model.zero_grad()
    ours = openrlhf_loss(trainer, items, segment_weights)
    ours.backward()
    openrlhf_grads = grads(trainer.model)
    assert abs(trl_loss.item() - ours.item()) <= 1e-6, (trl_loss.item(), ours.item())
    assert trl_grads.keys() == openrlhf_grads.keys() and len(trl_grads) > 0
    worst = max((trl_grads[k] - openrlhf_grads[k]).abs().max().item() for k in trl_grads)
    assert worst <= 1e-6, worst


def test_weights_change_the_loss(tiny, tmp_path):
    on, off = mralign_trainer(tiny, tmp_path / "on", True), mralign_trainer(tiny, tmp_path / "off", False)
    batch = on.data_collator(shared_items(on.processing_class)[1])
    with torch.no_grad():
        assert abs(on.compute_loss(on.model, batch).item() - off.compute_loss(off.model, batch).item()) > 1e-6
    assert on._metrics["train"]["mean_token_weight"][-1] != pytest.approx(1.0)  # the rows' step_weights are used


def test_weights_off_equals_trl_stock_kto(tiny, tmp_path):
    """The baseline is TRL's: stock ``trl.KTOTrainer`` on the same batch (minus our weights column)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from trl import KTOConfig, KTOTrainer

    ours = mralign_trainer(tiny, tmp_path / "ours", segment_weights=False)
    stock = KTOTrainer(
        AutoModelForCausalLM.from_pretrained(tiny, dtype=torch.float32),
        args=KTOConfig(output_dir=str(tmp_path / "stock"), per_device_train_batch_size=4, max_length=256,
                       report_to="none", use_cpu=True, bf16=False, beta=0.1, desirable_weight=1.0,
                       undesirable_weight=1.5, train_sampling_strategy="sequential"),
        train_dataset=Dataset.from_list([{"prompt": "q", "completion": "a", "label": i % 2 == 0} for i in range(4)]),
        processing_class=AutoTokenizer.from_pretrained(tiny),
    )
    stock.model.train()
    perturb(stock.model)
    batch = ours.data_collator(shared_items(ours.processing_class)[1])
    stock_batch = {k: v for k, v in batch.items() if k != "completion_weights"}
    for trainer, inputs in ((ours, batch), (stock, stock_batch)):
        trainer.model.zero_grad()
        loss = trainer.compute_loss(trainer.model, inputs)
        loss.backward()
        trainer.result = (loss.item(), grads(trainer.model))
    assert abs(ours.result[0] - stock.result[0]) <= 1e-6, (ours.result[0], stock.result[0])
    worst = max((ours.result[1][k] - stock.result[1][k]).abs().max().item() for k in ours.result[1])
    assert worst <= 1e-6, worst
    assert ours._metrics["train"]["kl"] == pytest.approx(stock._metrics["train"]["kl"], abs=1e-6)


def run_recipe(*overrides, timeout=600):
    # A plain process, as a user starts it: not the rank variables the OpenRLHF test above set in this one.
    env = {k: v for k, v in os.environ.items() if k not in ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR",
                                                             "MASTER_PORT")}
    env.update(HF_HUB_OFFLINE="1", TOKENIZERS_PARALLELISM="false", OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "mralign_plugin.cli", "train", "recipes/mralign-trl.yaml", *overrides]
    return subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=timeout)


def tiny_overrides(tiny, out):
    return [f"model.model_name_or_path={tiny}", "model.lora_rank=0", "model.dtype=float32", f"data.dataset={DATA}",
            f"trl.output_dir={out}", "trl.bf16=false", "trl.use_cpu=true", "trl.gradient_checkpointing=false",
            "trl.max_length=256", "trl.gradient_accumulation_steps=1", "trl.max_steps=3", "trl.learning_rate=1e-3",
            "trl.warmup_steps=0", "trl.save_steps=1000"]


def test_mralign_train_trl_recipe_trains_the_tiny_model(tiny, tmp_path):
    from transformers import AutoModelForCausalLM

    done = run_recipe(*tiny_overrides(tiny, tmp_path / "run"))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-5000:]
    assert "'ok': 20" in done.stdout  # every row of kto_tiny.jsonl encoded with its weights
    before = AutoModelForCausalLM.from_pretrained(tiny).state_dict()
    after = AutoModelForCausalLM.from_pretrained(tmp_path / "run").state_dict()
    assert sum(not torch.equal(before[k], after[k]) for k in before) > 0


@pytest.mark.parametrize("dataset, message", [("missing.jsonl", "missing.jsonl"),
                                              ("annotated_bad.jsonl", "annotated_bad.jsonl:")])
def test_unloadable_dataset_stops_at_start_naming_the_file(tiny, tmp_path, dataset, message):
    path = REPO / "tests" / "data" / dataset
    done = run_recipe(*tiny_overrides(tiny, tmp_path / "run"), f"data.dataset={path}", timeout=300)
    assert done.returncode != 0
    assert "cannot load the dataset" in done.stderr and message in done.stderr, done.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # stopped before any training


def test_print_command_and_backend_flag(tmp_path, capsys):
    from mralign_plugin.cli import main

    assert main(["train", str(REPO / "recipes" / "mralign-trl.yaml"), "trl.beta=0.05", "--print-command"]) == 0
    out = capsys.readouterr().out
    assert "-m mralign_plugin.adapters.trl.train" in out and "--beta 0.05" in out and "--lora_rank 32" in out
    assert main(["train", str(REPO / "recipes" / "mralign-trl.yaml"), "trl.betta=1", "--print-command"]) == 2
    assert "did you mean beta" in capsys.readouterr().err
    recipe = tmp_path / "r.yaml"  # an OpenRLHF-shaped recipe sent to TRL: refused before launch, naming the section
    recipe.write_text("model: {model_name_or_path: m}\nds: {zero_stage: 2}\n")
    assert main(["train", str(recipe), "--backend", "trl", "--print-command"]) == 2
    assert "'ds'" in capsys.readouterr().err

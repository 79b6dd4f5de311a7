"""What MR-ALIGN's segment weights cost inside TRL's KTOTrainer (target: step with weights ≤ 1.03× without).

    OMP_NUM_THREADS=1 python benchmarks/bench_trl_kto.py                  # CPU: a tiny random Llama
    python benchmarks/bench_trl_kto.py --steps 60 --model runs/tiny-llama

Two ``MRAlignKTOTrainer`` instances on the same model weights, data and seed, one with ``segment_weights=True``
and one with ``False`` (the baseline: TRL's KTO, which test_trl_kto.py holds equal to TRL's stock trainer).
Their ``training_step`` (TRL's: forward of policy, reference and KL pairs, loss, backward) alternates
A B B A on the same collated batches; medians are compared. The optimizer step is left out: it is the same
code for both and only adds noise.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")  # small matmuls: threads only add contention on a shared CPU
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
TARGET = 1.03


def make_trainer(model_path: str, rows: list[dict], out: str, weights: bool, batch: int):
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mralign_plugin.adapters.trl.kto import ROW_JSON, MRAlignKTOConfig, MRAlignKTOTrainer

    config = MRAlignKTOConfig(output_dir=out, per_device_train_batch_size=batch, max_length=512, report_to="none",
                              use_cpu=True, bf16=False, segment_weights=weights, apply_chat_template=True, seed=42)
    model = AutoModelForCausalLM.from_pretrained(model_path, dtype=torch.float32)
    dataset = Dataset.from_dict({ROW_JSON: [json.dumps(r) for r in rows]})
    trainer = MRAlignKTOTrainer(model, args=config, train_dataset=dataset,
                                processing_class=AutoTokenizer.from_pretrained(model_path))
    trainer.model.train()
    trainer.current_gradient_accumulation_steps = 1  # what Trainer.train sets before calling training_step
    return trainer


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", default=None, help="HF model directory (default: a tiny random Llama built now)")
    p.add_argument("--data", default=str(REPO / "tests" / "data" / "kto_tiny.jsonl"))
    p.add_argument("--steps", type=int, default=40, help="timed steps per arm")
    p.add_argument("--batch", type=int, default=4)
    args = p.parse_args(argv)

    from mralign_plugin.core.kto_rows import read_rows

    rows = read_rows(args.data)
    with tempfile.TemporaryDirectory() as tmp:
        model = args.model
        if model is None:
            from mralign_plugin.tiny_model import build_tiny_llama

            model = str(build_tiny_llama(Path(tmp) / "tiny", seed=0))
        arms = {True: make_trainer(model, rows, tmp + "/on", True, args.batch),
                False: make_trainer(model, rows, tmp + "/off", False, args.batch)}
        batches = [arms[True].data_collator([arms[True].train_dataset[j] for j in range(i, i + args.batch)])
                   for i in range(0, len(arms[True].train_dataset) - args.batch + 1, args.batch)]
        times = {True: [], False: []}
        for i in range(args.steps + 4):
            order = (True, False) if i % 2 == 0 else (False, True)  # A B B A ...
            batch = batches[i % len(batches)]
            for weights in order:
                trainer = arms[weights]
                start = time.perf_counter()
                trainer.training_step(trainer.model, batch)
                if i >= 4:  # warm-up steps are not timed
                    times[weights].append(time.perf_counter() - start)
                trainer.model.zero_grad(set_to_none=True)
    on, off = statistics.median(times[True]), statistics.median(times[False])
    ratio = on / off
    print(f"machine: {platform.machine()} {os.cpu_count()} cpus, torch {torch.__version__}, "
          f"OMP_NUM_THREADS={os.environ['OMP_NUM_THREADS']}")
    print(f"TRL KTO training_step, {len(times[True])} steps per arm, batch {args.batch}: "
          f"weights on {on * 1e3:.2f} ms, off {off * 1e3:.2f} ms (medians)")
    print(f"ratio on/off = {ratio:.3f}x (target <= {TARGET}x): {'ok' if ratio <= TARGET else 'ABOVE TARGET'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

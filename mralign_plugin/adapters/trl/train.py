"""Segment-weighted KTO on TRL: the trainer script (``mralign train recipes/mralign-trl.yaml`` launches it).

    # a recipe (sections model / data / kto; every key is a flag of this script)
    mralign train recipes/mralign-trl.yaml kto.beta=0.05 --print-command

    # the script directly (TRL's flags: KTOConfig + TrainingArguments, plus MR-ALIGN's)
    python -m mralign_plugin.adapters.trl.train --model_name_or_path runs/tiny-llama \\
        --dataset tests/data/kto_tiny.jsonl --output_dir runs/trl-kto --per_device_train_batch_size 2 --max_steps 4
    accelerate launch -m mralign_plugin.adapters.trl.train ...          # several GPUs

A dataset that cannot be loaded stops the script before the model is loaded, naming the file and line.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field


@dataclass
class ScriptArguments:
    """What the recipe's ``model`` and ``data`` sections hold."""

    model_name_or_path: str = field(metadata={"help": "policy model (HF id or directory)"})
    dataset: str = field(metadata={"help": "jsonl rows: prompt, response (or completion), label [, steps, "
                                            "step_weights] (`mralign weigh` output)"})
    ref_model_name_or_path: str | None = field(default=None, metadata={"help": "reference; default the policy's"})
    max_samples: int | None = field(default=None, metadata={"help": "read at most this many rows"})
    lora_rank: int = field(default=0, metadata={"help": "0 = full fine-tuning (paper: 32, all linear layers)"})
    lora_alpha: int = field(default=64, metadata={"help": "LoRA alpha (LLaMA-Factory's default 2 x rank)"})
    dtype: str = field(default="float32", metadata={"help": "model dtype: float32, bfloat16 or float16"})


def make_parser():
    """``HfArgumentParser`` over :class:`ScriptArguments` and ``MRAlignKTOConfig`` (TRL's flags plus ours)."""
    from transformers import HfArgumentParser

    from mralign_plugin.adapters.trl.kto import MRAlignKTOConfig

    return HfArgumentParser((ScriptArguments, MRAlignKTOConfig))


def train(script: ScriptArguments, config) -> dict:
    """Load rows (stopping at a bad file), the model and tokenizer, train, save; returns the trainer's metrics."""
    from mralign_plugin.core.formats import FormatError
    from mralign_plugin.core.kto_rows import read_rows

    try:
        rows = read_rows(script.dataset, script.max_samples)
    except (OSError, FormatError) as e:
        raise SystemExit(f"mralign train (trl): cannot load the dataset {script.dataset}: {e}") from None
    if not rows:
        raise SystemExit(f"mralign train (trl): the dataset {script.dataset} has no rows")

    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from mralign_plugin.adapters.trl import check_trl_version
    from mralign_plugin.adapters.trl.kto import ROW_JSON, MRAlignKTOTrainer

    check_trl_version()
    dtype = getattr(torch, script.dtype)
    tokenizer = AutoTokenizer.from_pretrained(script.model_name_or_path)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    model = AutoModelForCausalLM.from_pretrained(script.model_name_or_path, dtype=dtype)
    ref = None
    if script.ref_model_name_or_path:
        ref = AutoModelForCausalLM.from_pretrained(script.ref_model_name_or_path, dtype=dtype)
    peft_config = None
    if script.lora_rank > 0:
        from peft import LoraConfig

        # peft's "all-linear" leaves the output layer out (TRL refuses an adapter on lm_head)
        peft_config = LoraConfig(r=script.lora_rank, lora_alpha=script.lora_alpha, target_modules="all-linear",
                                 task_type="CAUSAL_LM")
    # A datasets column has one schema, and rows mix string and chat prompts: each row travels as JSON text.
    dataset = Dataset.from_dict({ROW_JSON: [json.dumps(row) for row in rows]})
    trainer = MRAlignKTOTrainer(model, ref_model=ref, args=config, train_dataset=dataset, processing_class=tokenizer,
                                peft_config=peft_config)
    print(f"[mralign trl-kto] rows {trainer.row_counts}", flush=True)
    result = trainer.train()
    trainer.save_model(config.output_dir)
    return result.metrics


def main(argv: list[str] | None = None) -> int:
    script, config = make_parser().parse_args_into_dataclasses(args=argv)
    train(script, config)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Segment-weighted KTO (MR-ALIGN, Eqs. 9, 11, 12) on OpenRLHF 0.11: the trainer CLI and `mralign train`.

Flags mirror ``openrlhf.cli.train_dpo`` where the meaning matches (``--model.*``, ``--ref.*``, ``--ds.*``,
``--train.*``, ``--adam.*``, ``--ckpt.*``, ``--logger.*``); KTO adds ``--kto.*`` and MR-ALIGN ``--mralign.weights``.

    # a recipe (YAML -> dotted flags, validated; deepspeed on GPUs, a plain process on CPU)
    mralign train recipes/mralign.yaml kto.beta=0.05 --print-command

    # the trainer directly, on GPUs
    deepspeed --module mralign_plugin.cli.train_kto --model.model_name_or_path Qwen/Qwen3-8B \\
        --data.dataset weighted.jsonl --data.apply_chat_template --ds.lora.rank 32 --ds.zero_stage 2

    # on a CPU (development / CI): the same module as a plain process
    python -m mralign_plugin.cli.train_kto --model.model_name_or_path runs/tiny-llama \\
        --data.dataset tests/data/kto_tiny.jsonl --ds.zero_stage 0 --ds.attn_implementation sdpa
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from datetime import datetime

TRAINER_MODULE = "mralign_plugin.cli.train_kto"
TRL_MODULE = "mralign_plugin.adapters.trl.train"
BACKENDS = ("openrlhf", "trl")
TRL_SECTIONS = ("model", "data", "trl")  # a TRL recipe's sections; their keys are the script's flat flags


def on_off(value: str) -> bool:
    """``on``/``off`` (also true/false, 1/0, yes/no) → bool, for ``--mralign.weights``."""
    lowered = str(value).lower()
    if lowered in ("on", "true", "1", "yes"):
        return True
    if lowered in ("off", "false", "0", "no"):
        return False
    raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")


def make_parser() -> argparse.ArgumentParser:
    """The trainer's flags; ``mralign train`` validates recipes against this parser."""
    p = argparse.ArgumentParser(
        prog="python -m mralign_plugin.cli.train_kto",
        description="Segment-weighted KTO (MR-ALIGN) on OpenRLHF's Actor + DeepspeedStrategy.",
    )
    # Model and reference
    p.add_argument("--model.model_name_or_path", "--actor.model_name_or_path", dest="model.model_name_or_path",
                   type=str, required=True, help="policy model (HF id or path); --actor.* is the PPO spelling")
    p.add_argument("--ref.model_name_or_path", type=str, default=None,
                   help="reference model; default: the policy's. With LoRA and no separate reference, the "
                        "reference is the policy with its adapter disabled (no second copy in memory)")
    p.add_argument("--ref.offload", action="store_true", default=False, help="offload the reference to CPU (ZeRO-3)")
    p.add_argument("--ref.precompute", action="store_true", default=False,
                   help="one reference pass before training, cached in ckpt.output_dir/ref_logps.pt (reused "
                        "when the data and reference match), then the reference model is freed; needs "
                        "kto.kl_mode fixed or none")
    p.add_argument("--model.gradient_checkpointing_enable", action="store_true", default=False)
    p.add_argument("--model.gradient_checkpointing_reentrant", action="store_true", default=False)

    # KTO and MR-ALIGN
    p.add_argument("--kto.beta", type=float, default=0.1, help="beta (paper: 0.1)")
    p.add_argument("--kto.desirable_weight", type=float, default=1.0, help="lambda_c (paper: 1.0)")
    p.add_argument("--kto.undesirable_weight", type=float, default=1.5, help="lambda_r (paper: 1.5)")
    p.add_argument("--kto.kl_mode", choices=("batch", "accumulated", "fixed", "none"), default="batch",
                   help="z0 from mismatched pairs: inside the micro-batch (needs micro_batch_size >= 2), with "
                        "the previous micro-batch's responses, each row once with a fixed other row's response "
                        "(cacheable), or none (z0 = 0, APO-zero style)")
    p.add_argument("--mralign.weights", type=on_off, default=True, metavar="{on,off}",
                   help="segment weights of Eq. 9 from the rows' step_weights; off = plain KTO on the same data")

    # Data
    p.add_argument("--data.dataset", type=str, required=True,
                   help="jsonl rows: prompt, response (or completion), label [, steps, step_weights]")
    p.add_argument("--data.max_samples", type=int, default=1000000)
    p.add_argument("--data.max_len", type=int, default=2048, help="prompt + response tokens")
    p.add_argument("--data.overlength", choices=("drop", "truncate_thinking"), default="drop",
                   help="rows over max_len: drop them, or cut the middle of the thinking (counts are logged)")
    p.add_argument("--data.apply_chat_template", action="store_true", default=False,
                   help="wrap string prompts in the tokenizer's chat template (message lists always are)")

    # Training
    p.add_argument("--train.micro_batch_size", type=int, default=2, help="rows per device per micro-step")
    p.add_argument("--train.batch_size", type=int, default=64, help="global rows per optimizer step")
    p.add_argument("--train.max_epochs", type=int, default=3)
    p.add_argument("--train.seed", type=int, default=42)
    p.add_argument("--train.full_determinism_enable", action="store_true", default=False)
    p.add_argument("--adam.lr", type=float, default=5e-6)
    p.add_argument("--adam.betas", type=float, nargs=2, default=(0.9, 0.95))
    p.add_argument("--adam.eps", type=float, default=1e-8)
    p.add_argument("--adam.weight_decay", type=float, default=0.0)
    p.add_argument("--lr_scheduler", type=str, default="cosine_with_min_lr")
    p.add_argument("--lr_warmup_ratio", type=float, default=0.1,
                   help="note: any value > 0 makes the first optimizer step run at learning rate 0")
    p.add_argument("--min_lr_ratio", type=float, default=0.1)
    p.add_argument("--max_norm", type=float, default=1.0, help="gradient clipping")

    # DeepSpeed, LoRA
    p.add_argument("--ds.zero_stage", type=int, default=2)
    p.add_argument("--ds.param_dtype", choices=("bf16", "fp16"), default="bf16")
    p.add_argument("--ds.attn_implementation", type=str, default="flash_attention_2",
                   help="flash_attention_2, sdpa or eager; without CUDA flash_attention_* becomes sdpa")
    p.add_argument("--ds.adam_offload", action="store_true", default=False)
    p.add_argument("--ds.zpg", type=int, default=1, help="ZeRO++ max partition size")
    p.add_argument("--ds.grad_accum_dtype", type=str, default=None)
    p.add_argument("--ds.overlap_comm", action="store_true", default=False)
    p.add_argument("--ds.tensor_parallel_size", type=int, default=1)
    p.add_argument("--ds.load_in_4bit", action="store_true", default=False)
    p.add_argument("--ds.lora.rank", type=int, default=0, help="0 = full fine-tuning (paper: 32)")
    p.add_argument("--ds.lora.alpha", type=int, default=16)
    p.add_argument("--ds.lora.target_modules", type=str, nargs="*", default="all-linear")
    p.add_argument("--ds.lora.dropout", type=float, default=0.0)
    p.add_argument("--local_rank", type=int, default=-1, help="set by the deepspeed launcher")

    # Checkpoints and logging
    p.add_argument("--ckpt.output_dir", type=str, default="./ckpt/mralign_kto", help="final HF model")
    p.add_argument("--ckpt.path", type=str, default="./ckpt/checkpoints_kto", help="DeepSpeed checkpoints")
    p.add_argument("--ckpt.save_steps", type=int, default=-1, help="-1: only the final model")
    p.add_argument("--ckpt.save_hf", action="store_true", default=False, help="also an HF model per checkpoint")
    p.add_argument("--ckpt.save_merged", action="store_true", default=False,
                   help="LoRA: beside every saved adapter (the final one, and each ckpt.save_hf one) also write "
                        "<dir>/merged, the base with the adapter merged in: a plain HF model that loads without "
                        "peft. Rank 0 merges on the CPU (host RAM for one copy of the base, at the base "
                        "checkpoint's dtype; a 4-bit base is merged unquantized, as openrlhf.cli.lora_combiner does)")
    p.add_argument("--ckpt.disable_ds", action="store_true", default=False)
    p.add_argument("--ckpt.max_num", type=int, default=3)
    p.add_argument("--ckpt.max_mem", type=int, default=int(1e8))
    p.add_argument("--ckpt.load_enable", action="store_true", default=False, help="resume from --ckpt.path")
    p.add_argument("--logger.logging_steps", type=int, default=1)
    p.add_argument("--logger.tensorboard_dir", type=str, default=None)
    p.add_argument("--logger.wandb.key", type=str, default=None)
    p.add_argument("--logger.wandb.org", type=str, default=None)
    p.add_argument("--logger.wandb.group", type=str, default=None)
    p.add_argument("--logger.wandb.project", type=str, default="mralign_kto")
    p.add_argument("--logger.wandb.run_name", type=str, default=f"kto_{datetime.now():%m%dT%H:%M}")
    return p


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)  # before the heavy imports: --help stays instant

    from mralign_plugin.adapters.openrlhf import check_openrlhf_version

    check_openrlhf_version()  # a clear ImportError when OpenRLHF is missing
    from openrlhf.utils.config import hierarchize

    from mralign_plugin.adapters.openrlhf.train import train

    train(hierarchize(args))
    return 0


# ---- `mralign train RECIPE [section.key=value ...]` --------------------------------------------------------


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "train",
        help="segment-weighted KTO from a recipe (OpenRLHF; deepspeed on GPUs, a plain process on CPU)",
        description="Read RECIPE (YAML), apply section.key=value overrides, check every key against the "
                    "trainer's flags and launch it. Example: mralign train recipes/mralign.yaml kto.beta=0.05",
    )
    p.add_argument("recipe", help="YAML recipe, e.g. recipes/mralign.yaml")
    p.add_argument("overrides", nargs="*", metavar="section.key=value", help="torchtune-style overrides")
    p.add_argument("--print-command", action="store_true", help="print the launch command instead of running it")
    p.add_argument("--backend", choices=BACKENDS, default=None,
                   help="openrlhf (this module) or trl (mralign_plugin.adapters.trl.train); default: the recipe's "
                        "top-level backend key, else openrlhf")
    p.set_defaults(func=run_recipe)


def launch_command(argv: list[str], gpus: bool) -> list[str]:
    """``deepspeed --module`` with GPUs; the same module as a plain process without."""
    if gpus:
        return ["deepspeed", "--module", TRAINER_MODULE, *argv]
    return [sys.executable, "-m", TRAINER_MODULE, *argv]


def trl_argv(config: dict) -> list[str]:
    """A TRL recipe (sections model / data / trl of the TRL script's flat flags) → its argv, validated."""
    from mralign_plugin.adapters.trl.train import make_parser as trl_parser
    from mralign_plugin.recipe import RecipeError, parser_flags, to_openrlhf_argv, validate_keys

    flat = {}
    for section, values in config.items():
        if section not in TRL_SECTIONS or not isinstance(values, dict):
            raise RecipeError(f"a TRL recipe has the sections {', '.join(TRL_SECTIONS)}; got {section!r}")
        for key, value in values.items():
            if isinstance(value, dict):
                raise RecipeError(f"{section}.{key}: TRL's flags are flat, not a section")
            flat[key] = value
    try:
        parser = trl_parser()
    except ImportError as e:
        raise RecipeError(f'backend trl needs TRL ({e.name} is missing): pip install "mralign_plugin[trl]"') from None
    valid, switches = parser_flags(parser)
    validate_keys(flat, valid, switches)
    argv = to_openrlhf_argv(flat, switches)
    parser.parse_args(argv)  # type errors stop here; the configs are built (hardware checks) where it runs
    return argv


def run_recipe(args: argparse.Namespace) -> int:
    import torch

    from mralign_plugin.recipe import RecipeError, load_recipe, parser_flags, to_openrlhf_argv, validate_keys

    try:
        config = load_recipe(args.recipe, args.overrides)
        backend = args.backend or config.get("backend", "openrlhf")
        config.pop("backend", None)
        if backend not in BACKENDS:
            raise RecipeError(f"backend: expected one of {', '.join(BACKENDS)}, got {backend!r}")
        if backend == "trl":
            argv = trl_argv(config)
        else:
            parser = make_parser()
            valid, switches = parser_flags(parser)
            validate_keys(config, valid, switches)
    except RecipeError as e:
        print(f"mralign train: {e}", file=sys.stderr)
        return 2
    if backend == "trl":
        gpus = torch.cuda.device_count()
        command = ([sys.executable, "-m", TRL_MODULE, *argv] if not gpus else
                   ["accelerate", "launch", "--num_processes", str(gpus), "-m", TRL_MODULE, *argv])
    else:
        argv = to_openrlhf_argv(config, switches)
        parser.parse_args(argv)  # type errors (e.g. kto.beta=abc) stop here, before anything launches
        command = launch_command(argv, gpus=torch.cuda.is_available())
    if args.print_command:
        print(shlex.join(command))
        return 0
    return subprocess.run(command).returncode


if __name__ == "__main__":
    sys.exit(main())

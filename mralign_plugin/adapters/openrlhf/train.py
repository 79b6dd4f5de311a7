"""``train(args)``: explicit wiring of the segment-weighted KTO run (≈ ``openrlhf/cli/train_dpo.py``).

``args`` is the hierarchical namespace of :func:`mralign_plugin.cli.train_kto.make_parser` after
``openrlhf.utils.config.hierarchize``.
"""

from __future__ import annotations

import gc
import hashlib
import json
import math
import os

import torch

from mralign_plugin.adapters.openrlhf import check_openrlhf_version, cpu


def train(args) -> None:
    """Build everything, train, save the final HF model to ``ckpt.output_dir`` (LoRA: the adapter, and with
    ``ckpt.save_merged`` the merged model in ``ckpt.output_dir/merged``)."""
    trainer, consumed_samples, num_update_steps_per_epoch = build_trainer(args)
    trainer.fit(args, consumed_samples, num_update_steps_per_epoch)
    trainer.save_hf_model(args.ckpt.output_dir)


def build_trainer(args):
    """Strategy, policy, data, reference (or its cached log-probs), optimizer and the trainer, resumed when asked.

    Returns:
        ``(trainer, consumed_samples, num_update_steps_per_epoch)``.
    """
    check_openrlhf_version()
    on_cpu = cpu.apply()  # before the first openrlhf import; a no-op with CUDA
    if on_cpu and args.ds.attn_implementation.startswith("flash_attention"):
        print(f"[mralign] no CUDA: attention {args.ds.attn_implementation} -> sdpa")
        args.ds.attn_implementation = "sdpa"
    if args.ref.model_name_or_path in (None, ""):
        args.ref.model_name_or_path = args.model.model_name_or_path
    if args.ds.lora.target_modules == ["all-linear"]:
        args.ds.lora.target_modules = "all-linear"  # peft's keyword, not a module name
    if args.ref.precompute and args.kto.kl_mode not in ("fixed", "none"):
        raise ValueError(
            "ref.precompute caches each row's reference log-probs once, so z0's mismatched pairs must be fixed "
            f"too: set kto.kl_mode=fixed (or none), not {args.kto.kl_mode}"
        )

    from openrlhf.models import Actor
    from openrlhf.utils import get_strategy, get_tokenizer

    from mralign_plugin.adapters.openrlhf.data import KTODataset, check_micro_batch, class_balance_message
    from mralign_plugin.adapters.openrlhf.kto_trainer import KTOTrainer
    from mralign_plugin.core.kto_rows import read_rows

    check_micro_batch(args.kto.kl_mode, args.train.micro_batch_size)
    strategy = get_strategy(args)
    strategy.setup_distributed()

    model = Actor(
        args.model.model_name_or_path,
        attn_implementation=args.ds.attn_implementation,
        param_dtype=args.ds.param_dtype,
        load_in_4bit=args.ds.load_in_4bit,
        lora_rank=args.ds.lora.rank,
        lora_alpha=args.ds.lora.alpha,
        lora_dropout=args.ds.lora.dropout,
        target_modules=args.ds.lora.target_modules,
        ds_config=strategy.get_ds_train_config(),
    )
    tokenizer = get_tokenizer(args.model.model_name_or_path, model.model, "right", strategy)
    if args.model.gradient_checkpointing_enable:
        model.gradient_checkpointing_enable(
            gradient_checkpointing_kwargs={"use_reentrant": args.model.gradient_checkpointing_reentrant}
        )

    dataset = KTODataset(
        read_rows(args.data.dataset, args.data.max_samples),
        tokenizer,
        args.data.max_len,
        use_weights=args.mralign.weights,
        overlength=args.data.overlength,
        apply_chat_template=args.data.apply_chat_template,
        kl_mode=args.kto.kl_mode,
        seed=args.train.seed,
    )
    c = dataset.counts
    strategy.print(
        f"[mralign] {len(dataset)} rows ({dataset.n_pos} desirable, {dataset.n_neg} undesirable); "
        f"over data.max_len={args.data.max_len}: {c['dropped']} dropped, {c['truncated']} thinking-truncated; "
        f"segment weights {'on' if args.mralign.weights else 'off'}"
        + (f", {c['unweighted']} rows without step_weights (weight 1)" if c["unweighted"] else "")
    )
    if c["dropped"]:
        strategy.print(f"[mralign] WARNING: {c['dropped']} rows longer than data.max_len were dropped "
                       "(data.overlength=truncate_thinking keeps them with a shortened thinking)")
    balance = class_balance_message(dataset.n_pos, dataset.n_neg, args.kto.desirable_weight,
                                    args.kto.undesirable_weight)
    if balance:
        strategy.print(f"[mralign] WARNING: {balance}")
    if args.ckpt.save_merged and args.ds.lora.rank == 0:
        strategy.print("[mralign] ckpt.save_merged only concerns LoRA runs: this run saves the full model anyway")

    # Reference: cached log-probs (ref.precompute, a cache from an earlier run of the same data), a
    # frozen model, or, with LoRA on the same base, the policy with its adapter disabled (as in
    # LLaMA-Factory, which the paper used): no second copy of the weights.
    cache_path = os.path.join(args.ckpt.output_dir, "ref_logps.pt")
    fingerprint = _reference_fingerprint(args, dataset) if args.ref.precompute else None
    ref_cache = _load_reference_cache(cache_path, fingerprint, strategy) if args.ref.precompute else None
    shared_base = args.ds.lora.rank > 0 and args.ref.model_name_or_path == args.model.model_name_or_path
    ref_model = None
    if ref_cache is None and not shared_base:
        ref_model = Actor(
            args.ref.model_name_or_path,
            attn_implementation=args.ds.attn_implementation,
            param_dtype=args.ds.param_dtype,
            load_in_4bit=args.ds.load_in_4bit,
            ds_config=strategy.get_ds_eval_config(offload=args.ref.offload),
        )
        if args.ref.offload:
            ref_model._offload = True

    dataloader = strategy.setup_dataloader(dataset, args.train.micro_batch_size, True, True, dataset.collate_fn)
    num_update_steps_per_epoch = len(dataset) // args.train.batch_size
    max_steps = math.ceil(args.train.max_epochs * num_update_steps_per_epoch)
    cfg = dict(
        optim="adam",
        adam=vars(args.adam),
        muon={},
        lr_scheduler=args.lr_scheduler,
        lr_warmup_ratio=args.lr_warmup_ratio,
        min_lr_ratio=args.min_lr_ratio,
        max_norm=args.max_norm,
        scheduler_steps=max_steps,
    )
    model, optim, scheduler = strategy.prepare((model, cfg))
    if ref_model is not None:
        ref_model = strategy.prepare(ref_model)

    consumed_samples = 0
    if args.ckpt.load_enable and os.path.exists(args.ckpt.path):
        load_path, states = strategy.load_ckpt(model.model, args.ckpt.path)
        if load_path is not None:
            consumed_samples = states["consumed_samples"]
            strategy.print(f"[mralign] resumed from {load_path}, consumed_samples {consumed_samples}")
    os.makedirs(args.ckpt.output_dir, exist_ok=True)

    trainer = KTOTrainer(
        model=model,
        ref_model=ref_model,
        strategy=strategy,
        tokenizer=tokenizer,
        optim=optim,
        train_dataloader=dataloader,
        scheduler=scheduler,
        beta=args.kto.beta,
        desirable_weight=args.kto.desirable_weight,
        undesirable_weight=args.kto.undesirable_weight,
        kl_mode=args.kto.kl_mode,
        use_weights=args.mralign.weights,
        max_len=args.data.max_len,
        max_epochs=args.train.max_epochs,
    )
    if args.ref.precompute:
        if ref_cache is None:
            ref_cache = trainer.precompute_reference(dataset, args.train.micro_batch_size)
            if strategy.is_rank_0():
                torch.save({"fingerprint": fingerprint, **ref_cache}, cache_path)
            strategy.print(f"[mralign] reference log-probs of {len(dataset)} rows cached in {cache_path}")
        trainer.ref_cache = ref_cache
        trainer.ref_model = ref_model = None  # free the reference model
        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return trainer, consumed_samples, num_update_steps_per_epoch


def _reference_fingerprint(args, dataset) -> str:
    """What the cached reference log-probs depend on: reference weights, rows and their z0 partners."""
    digest = hashlib.sha256(json.dumps([args.ref.model_name_or_path, args.kto.kl_mode]).encode())
    for item in dataset.items:
        partner = dataset.partner[item["index"]] if args.kto.kl_mode == "fixed" else -1
        digest.update(json.dumps([item["prompt_ids"], item["response_ids"], partner]).encode())
    return digest.hexdigest()


def _load_reference_cache(path: str, fingerprint: str, strategy) -> dict | None:
    """The cache at ``path`` if it matches ``fingerprint`` on every rank, else None (recompute everywhere)."""
    cache = None
    if os.path.exists(path):
        saved = torch.load(path, weights_only=True)
        if saved.pop("fingerprint", None) == fingerprint:
            cache = saved
    found_everywhere = strategy.all_reduce(torch.tensor(float(cache is not None)), op="mean").item() == 1.0
    if found_everywhere:
        strategy.print(f"[mralign] reference log-probs loaded from {path}; no reference model is loaded")
    return cache if found_everywhere else None

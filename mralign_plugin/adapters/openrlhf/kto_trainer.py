"""Segment-weighted KTO loop on OpenRLHF 0.11's Actor + DeepspeedStrategy (MR-ALIGN Eqs. 9, 11, 12).

The shape follows ``openrlhf/trainer/dpo_trainer.py``; the math lives in :mod:`mralign_plugin.core.loss`.
Per micro-batch: policy log-probs of the rows (with gradient), reference log-probs (a frozen Actor, with
LoRA and no separate reference the policy with its adapter disabled, or cached by
:meth:`KTOTrainer.precompute_reference`), z0 from mismatched pairs
(detached, all-reduced over ranks, then clamped), the loss, DeepSpeed backward and step (DeepSpeed
accumulates gradients and only really steps at the end of each accumulation window).
"""

from __future__ import annotations

import json
import os
import time

import torch
from tqdm import tqdm

from mralign_plugin.adapters.openrlhf.data import mismatched_rows
from mralign_plugin.core.loss import kto_loss, kto_reference_point

# Indices of the per-micro-batch statistics vector that is summed over ranks and micro-steps.
_STATS = ("loss", "kl", "mean_token_weight", "chosen_sum", "n_chosen", "rejected_sum", "n_rejected")


class KTOTrainer:
    """Trainer for (segment-weighted) KTO.

    Args:
        model: the policy ``openrlhf.models.Actor``, prepared by the strategy.
        ref_model: the reference Actor (prepared for eval), or None to use ``model`` with its LoRA
            adapter disabled.
        strategy: OpenRLHF ``DeepspeedStrategy`` (its ``args`` are the hierarchical CLI namespace).
        tokenizer: saved with HF checkpoints.
        optim, scheduler: from ``strategy.prepare``.
        train_dataloader: yields :meth:`KTODataset.collate_fn` batches.
        beta, desirable_weight, undesirable_weight: β, λ_c, λ_r.
        kl_mode: "batch", "accumulated", "fixed" or "none" (see :mod:`data`).
        use_weights: False trains plain KTO on identical data and code (the baseline).
        max_len: cap for the mismatched rows built in "accumulated" mode.
        max_epochs: epochs over the data.
    """

    def __init__(
        self,
        model,
        ref_model,
        strategy,
        tokenizer,
        optim,
        train_dataloader,
        scheduler,
        beta: float = 0.1,
        desirable_weight: float = 1.0,
        undesirable_weight: float = 1.5,
        kl_mode: str = "batch",
        use_weights: bool = True,
        max_len: int = 2048,
        max_epochs: int = 1,
    ) -> None:
        self.model = model
        self.ref_model = ref_model
        self.strategy = strategy
        self.tokenizer = tokenizer
        self.optimizer = optim
        self.train_dataloader = train_dataloader
        self.scheduler = scheduler
        self.beta = beta
        self.desirable_weight = desirable_weight
        self.undesirable_weight = undesirable_weight
        self.kl_mode = kl_mode
        self.use_weights = use_weights
        self.max_len = max_len
        self.epochs = max_epochs
        self.args = strategy.args
        self.device = next(model.parameters()).device
        self._previous_responses: list[list[int]] | None = None  # kl_mode="accumulated"
        self.ref_cache: dict | None = None  # {"rows": [...], "kl": [...] | None}, per dataset index

        self._logger = None
        if strategy.is_rank_0():
            from openrlhf.utils.logging_utils import TensorboardLogger, WandbLogger

            if self.args.logger.wandb.key:
                self._logger = WandbLogger(self.args)
            elif self.args.logger.tensorboard_dir:
                self._logger = TensorboardLogger(self.args)

    # ---- one micro-batch -------------------------------------------------------------------------

    def _logps(self, model, rows: dict) -> torch.Tensor:
        """Per-token log-probs (B, L−1) of ``rows`` under ``model`` (position t = log p(token t+1))."""
        return model(
            rows["input_ids"].to(self.device),
            attention_mask=rows["attention_mask"].to(self.device),
            return_logprobs=True,
        )

    def _ref_logps(self, rows: dict) -> torch.Tensor:
        with torch.no_grad():
            if self.ref_model is not None:
                return self._logps(self.ref_model, rows)
            peft_model = self.strategy._unwrap_model(self.model)  # LoRA: reference = base weights
            with peft_model.disable_adapter():
                return self._logps(self.model, rows)

    def _reference(self, rows: dict, indices: list[int], key: str) -> torch.Tensor:
        """Reference log-probs (B, L−1) of ``rows``, from the cache when there is one (0 off the response)."""
        if self.ref_cache is None:
            return self._ref_logps(rows)
        mask = rows["response_mask"]  # (B, L-1)
        out = torch.zeros(mask.shape)  # (B, L-1)
        out[mask] = torch.cat([self.ref_cache[key][i] for i in indices])  # row-major, as cached
        return out.to(self.device)

    def precompute_reference(self, dataset, micro_batch_size: int) -> dict:
        """One pass over every row in order (on every rank, in lockstep for ZeRO-3): the reference log-probs
        of each row's response tokens and, with kl_mode="fixed", of its mismatched pair.

        Returns:
            {"rows": [(n_i,) float32 per row], "kl": [... per row] or None}.
        """
        from tqdm import tqdm

        cache = {"rows": [None] * len(dataset), "kl": [None] * len(dataset) if self.kl_mode == "fixed" else None}
        starts = range(0, len(dataset), micro_batch_size)
        for start in tqdm(starts, desc="reference log-probs", disable=not self.strategy.is_rank_0()):
            batch = dataset.collate_fn([dataset[i] for i in range(start, min(start + micro_batch_size, len(dataset)))])
            for key, rows in (("rows", batch), ("kl", batch.get("kl"))):
                if cache[key] is None:
                    continue
                ref = self._ref_logps(rows).float().cpu()  # (B, L-1)
                for i, index in enumerate(batch["index"]):
                    cache[key][index] = ref[i][rows["response_mask"][i]].clone()  # (n_i,)
        return cache

    def _kl_rows(self, batch: dict) -> dict | None:
        if self.kl_mode in ("batch", "fixed"):
            return batch["kl"]
        if self.kl_mode == "none":
            return None
        # "accumulated": pair this micro-batch's prompts with the previous micro-batch's responses.
        prompts, previous = batch["prompts"], self._previous_responses
        self._previous_responses = batch["responses"]
        if previous is None:
            if len(prompts) < 2:
                return None  # very first micro-batch at size 1: no pair yet, z0 = 0 once
            previous = batch["responses"][1:] + batch["responses"][:1]
        responses = [previous[i % len(previous)] for i in range(len(prompts))]
        return mismatched_rows(prompts, responses, self.tokenizer.pad_token_id, self.max_len)

    def _reference_point(self, batch: dict) -> torch.Tensor:
        """z0 (Eq. 2): mean over ranks of the mismatched-pair log-ratio, then clamped at 0; detached."""
        kl_rows = self._kl_rows(batch)
        if kl_rows is None:
            return torch.zeros((), device=self.device)
        with torch.no_grad():
            policy = self._logps(self.model, kl_rows)  # (B, L'-1)
        ref = self._reference(kl_rows, batch["index"], "kl")  # (B, L'-1)
        kl = kto_reference_point(policy, ref, kl_rows["response_mask"].to(self.device), clamp=False)  # ()
        return self.strategy.all_reduce(kl.clone()).clamp(min=0)  # all_reduce works in place

    def training_step(self, batch: dict) -> torch.Tensor:
        """Forward, loss, backward and (at the end of an accumulation window) optimizer step.

        Returns:
            the statistics vector of this micro-batch on this rank, in the order of ``_STATS``.
        """
        z0 = self._reference_point(batch)
        policy_logps = self._logps(self.model, batch)  # (B, L-1)
        ref_logps = self._reference(batch, batch["index"], "rows")  # (B, L-1)
        mask = batch["response_mask"].to(self.device)  # (B, L-1)
        desirable = batch["desirable"].to(self.device)  # (B,)
        weights = batch["token_weights"].to(self.device) if self.use_weights else None  # (B, L-1)
        loss, metrics = kto_loss(
            policy_logps, ref_logps, mask, desirable, z0, token_weights=weights, beta=self.beta,
            desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight,
            weights_masked=True,  # pad_rows writes ω on response tokens only, 0 elsewhere
        )
        self.strategy.backward(loss, self.model, self.optimizer)
        self.strategy.optimizer_step(self.optimizer, self.model, self.scheduler)

        n_chosen = desirable.sum().float()
        n_rejected = (~desirable).sum().float()
        return torch.stack([
            loss.detach(), metrics["kl"], metrics["mean_token_weight"],
            metrics["rewards/chosen"] * n_chosen, n_chosen, metrics["rewards/rejected"] * n_rejected, n_rejected,
        ]).float()

    # ---- the loop ------------------------------------------------------------------------------

    def fit(self, args, consumed_samples: int = 0, num_update_steps_per_epoch: int | None = None) -> None:
        from openrlhf.utils.distributed_sampler import DistributedSampler

        accumulation = self.strategy.accumulated_gradient
        num_update_steps_per_epoch = num_update_steps_per_epoch or len(self.train_dataloader) // accumulation
        if num_update_steps_per_epoch <= 0:
            raise ValueError("the data holds fewer rows than one optimizer step needs (train.batch_size)")
        save_steps = args.ckpt.save_steps if args.ckpt.save_steps > 0 else float("inf")

        # Restore the position as DPOTrainer does: micro-step counter and epoch from consumed samples.
        step = consumed_samples // args.train.batch_size * accumulation + 1
        start_epoch = consumed_samples // args.train.batch_size // num_update_steps_per_epoch
        consumed_samples = consumed_samples % (num_update_steps_per_epoch * args.train.batch_size)
        total_steps = num_update_steps_per_epoch * self.epochs

        log_path = os.path.join(args.ckpt.output_dir, "train_log.jsonl")
        window = torch.zeros(len(_STATS), device=self.device)
        step_start = time.perf_counter()
        for epoch in range(start_epoch, self.epochs):
            if isinstance(self.train_dataloader.sampler, DistributedSampler):
                self.train_dataloader.sampler.set_epoch(
                    epoch, consumed_samples=0 if epoch > start_epoch else consumed_samples
                )
            bar = tqdm(self.train_dataloader, desc=f"KTO epoch {epoch}", disable=not self.strategy.is_rank_0())
            self.model.train()
            if self.ref_model is not None:
                self.ref_model.eval()
            for batch in bar:
                stats = self.training_step(batch)
                window += self.strategy.all_reduce(stats, op="sum")  # sums over ranks
                if step % accumulation == 0:
                    global_step = step // accumulation
                    logs = self._window_logs(window, accumulation)
                    logs["step_time"] = time.perf_counter() - step_start
                    bar.set_postfix(loss=f"{logs['loss']:.4f}", kl=f"{logs['kl']:.3f}")
                    self._log(global_step, total_steps, epoch, logs, log_path, args)
                    if global_step % save_steps == 0:
                        self._save_checkpoint(args, global_step)
                    window.zero_()
                    step_start = time.perf_counter()
                step += 1

        if self._logger is not None:
            self._logger.close()

    def _window_logs(self, window: torch.Tensor, accumulation: int) -> dict:
        s = dict(zip(_STATS, window.tolist(), strict=True))
        n_micro = accumulation * self.strategy.world_size  # micro-batch statistics summed into the window
        chosen = s["chosen_sum"] / s["n_chosen"] if s["n_chosen"] else 0.0
        rejected = s["rejected_sum"] / s["n_rejected"] if s["n_rejected"] else 0.0
        return {
            "loss": s["loss"] / n_micro,
            "kl": s["kl"] / n_micro,
            "rewards/chosen": chosen,
            "rewards/rejected": rejected,
            "margin": chosen - rejected if s["n_chosen"] and s["n_rejected"] else 0.0,
            "mean_token_weight": s["mean_token_weight"] / n_micro,
            "grad_norm": self.strategy.get_grad_norm(self.model),
            "lr": self.scheduler.get_last_lr()[0],
        }

    def _log(self, global_step: int, total_steps: int, epoch: int, logs: dict, log_path: str, args) -> None:
        if not self.strategy.is_rank_0():
            return
        if global_step % args.logger.logging_steps == 0 and self._logger is not None:
            self._logger.log_train(global_step, logs)
        with open(log_path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"global_step": global_step, "epoch": epoch, **logs}) + "\n")
        shown = " ".join(f"{k} {v:.4g}" for k, v in logs.items())
        tqdm.write(f"[mralign kto] step {global_step}/{total_steps} {shown}")

    def _save_checkpoint(self, args, global_step: int) -> None:
        tag = f"global_step{global_step}"
        client_states = {"consumed_samples": global_step * args.train.batch_size}
        if not args.ckpt.disable_ds:
            self.strategy.save_ckpt(
                self.model.model, args.ckpt.path, tag, args.ckpt.max_num, args.ckpt.max_mem, client_states
            )
        if args.ckpt.save_hf:
            self.save_hf_model(os.path.join(args.ckpt.path, f"{tag}_hf"))

    def save_hf_model(self, output_dir: str) -> None:
        """The HF model (LoRA: the adapter) in ``output_dir``; with ``ckpt.save_merged`` on a LoRA run, also the
        base with that adapter merged in, in ``output_dir/merged``."""
        self.strategy.save_model(self.model, self.tokenizer, output_dir)
        if self.args.ckpt.save_merged and self.args.ds.lora.rank > 0:
            self._save_merged(output_dir, os.path.join(output_dir, "merged"))

    def _save_merged(self, adapter_dir: str, merged_dir: str) -> None:
        """Rank 0 loads the base and the adapter just saved in ``adapter_dir`` on the CPU and merges them with peft's
        ``merge_and_unload``, as ``openrlhf.cli.lora_combiner`` does. Reading the adapter back from disk leaves the
        training model untouched and is right under every ZeRO stage: ``save_model`` gathered ZeRO-3's partitions
        into that file."""
        if self.strategy.is_rank_0():
            from peft import PeftModel
            from transformers import AutoModelForCausalLM

            base = AutoModelForCausalLM.from_pretrained(
                self.args.model.model_name_or_path, dtype="auto", trust_remote_code=True  # the checkpoint's dtype
            )
            merged = PeftModel.from_pretrained(base, adapter_dir).merge_and_unload()
            merged.save_pretrained(merged_dir)
            self.tokenizer.save_pretrained(merged_dir)
            del base, merged
        torch.distributed.barrier()

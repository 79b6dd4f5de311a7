"""Segment-weighted KTO on TRL (MR-ALIGN Eqs. 9, 11, 12): a ``trl.KTOTrainer`` subclass.

TRL 1.16's ``KTOTrainer._compute_loss`` sums per-token log-probs inside one 200-line method, which is exactly
where Eq. 9 multiplies by ω. This subclass keeps TRL's model handling, collation, optimiser, logging and
checkpoints, and replaces two things:

* the dataset: rows are encoded by :func:`mralign_plugin.core.kto_rows.encode_row`, the encoding the OpenRLHF
  path uses (verbatim responses, chat template on the prompt only, ω from ``step_weights``), plus TRL's own
  mismatched KL completions (each per-device batch rotated by one, as TRL does);
* the loss: per-token log-probs (TRL's fused LM head) of policy and reference go through
  :func:`mralign_plugin.core.loss.kto_loss`, z0 through :func:`~mralign_plugin.core.loss.kto_reference_point`
  (averaged over ranks, then clamped, as TRL does). With ``segment_weights=False`` this is TRL's KTO.

    mralign train recipes/mralign-trl.yaml                       # or: mralign train RECIPE --backend trl
    python -m mralign_plugin.adapters.trl.kto --help

Not supported (refused at start): ``precompute_ref_log_probs`` (TRL caches summed reference log-probs; ω needs
them per token) and vision datasets.
"""

from __future__ import annotations

import contextlib
import json
from dataclasses import dataclass, field

import torch
from trl import KTOConfig, KTOTrainer
from trl.models.utils import disable_gradient_checkpointing
from trl.trainer.kto_trainer import DataCollatorForUnpairedPreference
from trl.trainer.utils import pad, use_adapter

from mralign_plugin.core.kto_rows import OVERLENGTH, encode_row
from mralign_plugin.core.loss import kto_loss, kto_reference_point

ROW_JSON = "row_json"  # a dataset column holding whole rows as JSON text (rows mix string and chat prompts)


@dataclass
class MRAlignKTOConfig(KTOConfig):
    """TRL's ``KTOConfig`` plus MR-ALIGN's switches (``beta``, ``desirable_weight``, ``undesirable_weight``: TRL's)."""

    segment_weights: bool = field(
        default=True, metadata={"help": "Eq. 9 weights from the rows' step_weights; False trains TRL's plain KTO"}
    )
    overlength: str = field(
        default="drop", metadata={"help": "rows over max_length: drop, or truncate_thinking (cut its middle)"}
    )
    apply_chat_template: bool = field(
        default=False, metadata={"help": "wrap string prompts in the chat template (message lists always are)"}
    )
    train_sampling_strategy: str = field(
        default="sequential", metadata={"help": "TRL's KL pairing needs the fixed order (TRL refuses others)"}
    )

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.overlength not in OVERLENGTH:
            raise ValueError(f"overlength must be one of {OVERLENGTH}; got {self.overlength!r}")


@dataclass
class WeightedUnpairedCollator(DataCollatorForUnpairedPreference):
    """TRL's collator, plus ``completion_weights`` (B, L): ω on completion tokens, 0 on prompt and padding."""

    def torch_call(self, examples: list[dict]) -> dict:
        output = super().torch_call(examples)
        if "completion_weights" in examples[0]:
            rows = []
            for example in examples:
                weights = [0.0] * len(example["prompt_ids"]) + list(example["completion_weights"])
                rows.append(torch.tensor(weights[: self.max_length], dtype=torch.float32))
            output["completion_weights"] = pad(
                rows, padding_value=0.0, padding_side="right", pad_to_multiple_of=self.pad_to_multiple_of
            )  # (B, L), the same width as completion_mask
        return output


class MRAlignKTOTrainer(KTOTrainer):
    """``trl.KTOTrainer`` with MR-ALIGN's row encoding and segment-weighted loss (see the module docstring).

    Args: as ``trl.KTOTrainer``; ``args`` is an :class:`MRAlignKTOConfig`. ``train_dataset`` holds the rows of
    ``mralign weigh`` (prompt, response, label, steps, step_weights) or any unpaired KTO rows (prompt, completion,
    label), as columns or as JSON text in a ``row_json`` column. ``row_counts`` reports how many rows were "ok",
    "truncated", "dropped" (over ``max_length``) or "unweighted" (no ``step_weights``: weight 1).
    """

    def __init__(self, model, ref_model=None, args: MRAlignKTOConfig | None = None, data_collator=None,
                 train_dataset=None, eval_dataset=None, processing_class=None, **kwargs) -> None:
        if args is None or not isinstance(args, MRAlignKTOConfig):
            raise TypeError("MRAlignKTOTrainer needs args=MRAlignKTOConfig(...)")
        if args.precompute_ref_log_probs:
            raise ValueError("precompute_ref_log_probs is not supported: TRL caches summed reference log-probs, "
                             "and the segment weights of Eq. 9 need them per token")
        self.row_counts = {"ok": 0, "truncated": 0, "dropped": 0, "unweighted": 0}
        if data_collator is None and processing_class is not None:
            data_collator = WeightedUnpairedCollator(
                pad_token_id=processing_class.pad_token_id, max_length=args.max_length,
                pad_to_multiple_of=args.pad_to_multiple_of if args.pad_to_multiple_of != "auto" else None,
            )
        super().__init__(model, ref_model=ref_model, args=args, data_collator=data_collator,
                         train_dataset=train_dataset, eval_dataset=eval_dataset, processing_class=processing_class,
                         **kwargs)

    # ---- data -------------------------------------------------------------------------------------------------

    def _prepare_dataset(self, dataset, processing_class, args: MRAlignKTOConfig, dataset_name: str):
        from datasets import Dataset

        max_len = args.max_length if args.max_length is not None else 1 << 62
        items = []
        for i, row in enumerate(dataset):
            row = json.loads(row[ROW_JSON]) if ROW_JSON in row else dict(row)
            row.setdefault("_line", f"{dataset_name} row {i}")
            item, status = encode_row(row, processing_class, max_len, args.segment_weights, args.overlength,
                                      args.apply_chat_template)
            if dataset_name == "train":
                self.row_counts[status] += 1
            if item is not None:
                items.append({"prompt_ids": item["prompt_ids"], "completion_ids": item["response_ids"],
                              "completion_weights": item["weights"].tolist(), "label": item["desirable"]})
        if not items:
            raise ValueError(f"the {dataset_name} dataset has no row within max_length={args.max_length}")
        if args.loss_type != "apo_zero_unpaired":  # TRL's pairing: (x_i, y_{i-1}) inside each per-device batch
            size = args.per_device_train_batch_size
            for start in range(0, len(items), size):
                chunk = items[start : start + size]
                kl = [chunk[-1]["completion_ids"]] + [item["completion_ids"] for item in chunk[:-1]]
                for item, ids in zip(chunk, kl, strict=True):
                    item["KL_completion_ids"] = ids
        return Dataset.from_list(items)

    def _set_signature_columns_if_needed(self) -> None:
        if self._signature_columns is None:
            self._signature_columns = ["prompt_ids", "completion_ids", "KL_completion_ids", "completion_weights",
                                       "label"]

    # ---- loss -------------------------------------------------------------------------------------------------

    def _token_logps(self, model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                     completion_mask: torch.Tensor) -> torch.Tensor:
        """Per-token log-probs (B, L−1) of the completion tokens (position t = log p(token t+1)), 0 elsewhere."""
        labels = input_ids.masked_fill(completion_mask == 0, -100)  # (B, L)
        out = model(input_ids=input_ids, attention_mask=attention_mask, labels=labels, fused_lm_head=True,
                    use_cache=False)
        return out.log_probs[:, -(input_ids.size(1) - 1):]  # (B, L-1); PEFT prompt tuning prepends positions

    def _reference_context(self):
        """The reference: ``ref_model``, or with PEFT and none the policy with its adapter off (as TRL does)."""
        if self.ref_model is None:
            unwrapped = self.accelerator.unwrap_model(self.model)
            return self.model, use_adapter(unwrapped, adapter_name="ref" if "ref" in unwrapped.peft_config else None)
        return self.ref_model, contextlib.nullcontext()

    def _compute_loss(self, model, inputs: dict, return_outputs: bool):
        mode = "train" if self.model.training else "eval"
        batch = {k: (v.to(self.accelerator.device) if isinstance(v, torch.Tensor) else v) for k, v in inputs.items()}
        mask = batch["completion_mask"][:, 1:]  # (B, L-1)
        desirable = batch["label"].bool()  # (B,)
        weights = batch["completion_weights"][:, 1:] if self.args.segment_weights else None  # (B, L-1)
        kl_keys = ("KL_input_ids", "KL_attention_mask", "KL_completion_mask")

        policy = self._token_logps(model, batch["input_ids"], batch["attention_mask"], batch["completion_mask"])
        ref_model, adapter_off = self._reference_context()
        with torch.no_grad(), disable_gradient_checkpointing(self.model, self.args.gradient_checkpointing_kwargs):
            if self.calculate_KL:
                kl_policy = self._token_logps(model, *(batch[k] for k in kl_keys))  # (B, L'-1)
            with adapter_off:
                ref = self._token_logps(ref_model, batch["input_ids"], batch["attention_mask"],
                                        batch["completion_mask"])  # (B, L-1)
                if self.calculate_KL:
                    kl_ref = self._token_logps(ref_model, *(batch[k] for k in kl_keys))  # (B, L'-1)
        if self.calculate_KL:
            kl = kto_reference_point(kl_policy, kl_ref, batch["KL_completion_mask"][:, 1:], clamp=False)  # ()
            z0 = self.accelerator.gather_for_metrics(kl).mean().clamp(min=0)  # Eq. 2 over ranks, then clamped
        else:
            z0 = torch.zeros((), device=policy.device)  # apo_zero_unpaired: z0 = 0 gives its two losses
        loss, metrics = kto_loss(policy, ref, mask, desirable, z0, token_weights=weights, beta=self.beta,
                                 desirable_weight=self.desirable_weight, undesirable_weight=self.undesirable_weight,
                                 weights_masked=True)  # the collator writes ω on completion tokens only
        self._log_metrics(mode, metrics, desirable)
        return (loss, None) if return_outputs else loss

    def _log_metrics(self, mode: str, metrics: dict[str, torch.Tensor], desirable: torch.Tensor) -> None:
        """TRL's metric names; class means weighted by each rank's class counts (every rank gathers alike)."""
        gather = self.accelerator.gather_for_metrics
        self._metrics[mode]["kl"].append(metrics["kl"].item())
        self._metrics[mode]["mean_token_weight"].append(gather(metrics["mean_token_weight"]).mean().item())
        means = {}
        for name, count in (("rewards/chosen", desirable.sum()), ("rewards/rejected", (~desirable).sum())):
            total, n = gather(metrics[name] * count).sum().item(), gather(count).sum().item()
            if n:
                means[name] = total / n
                self._metrics[mode][name].append(means[name])
        if len(means) == 2:
            self._metrics[mode]["rewards/margins"].append(means["rewards/chosen"] - means["rewards/rejected"])

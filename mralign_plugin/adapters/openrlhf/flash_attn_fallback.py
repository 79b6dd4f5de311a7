"""Pure-torch versions of the flash_attn helpers OpenRLHF 0.11 imports at module level.

``openrlhf.models.ring_attn_utils`` does ``from flash_attn.bert_padding import index_first_axis,
pad_input, rearrange, unpad_input`` and ``from flash_attn.utils.distributed import all_gather``; only
sample packing and ring attention call them. flash-attn cannot be built without CUDA, so
:mod:`cpu` serves these under the flash_attn module names when the real package is absent
(the idea of upstream PR https://github.com/OpenRLHF/OpenRLHF/pull/1302). Written from the
functions' documented contracts; shapes use B batch, S padded length, N = B·S, n real tokens.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from einops import rearrange  # noqa: F401  (re-exported, as flash_attn.bert_padding does)


def index_first_axis(x: torch.Tensor, indices: torch.Tensor) -> torch.Tensor:
    """(N, ...) rows at ``indices`` → (n, ...); differentiable."""
    return x[indices]


def unpad_input(
    hidden_states: torch.Tensor, attention_mask: torch.Tensor, unused_mask: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, int, torch.Tensor]:
    """Drop padding: (B, S, ...) with a (B, S) 0/1 mask → (n, ...), indices (n,), cu_seqlens (B+1,),
    max_seqlen, used_seqlens (B,). ``unused_mask`` marks tokens kept but not counted as used."""
    all_masks = attention_mask + unused_mask if unused_mask is not None else attention_mask  # (B, S)
    seqlens = all_masks.sum(dim=-1, dtype=torch.int32)  # (B,)
    used_seqlens = attention_mask.sum(dim=-1, dtype=torch.int32)  # (B,)
    indices = torch.nonzero(all_masks.flatten(), as_tuple=False).flatten()  # (n,)
    cu_seqlens = F.pad(torch.cumsum(seqlens, dim=0, dtype=torch.int32), (1, 0))  # (B+1,)
    flat = hidden_states.reshape(-1, *hidden_states.shape[2:])  # (N, ...)
    return index_first_axis(flat, indices), indices, cu_seqlens, int(seqlens.max().item()), used_seqlens


def pad_input(hidden_states: torch.Tensor, indices: torch.Tensor, batch: int, seqlen: int) -> torch.Tensor:
    """Inverse of :func:`unpad_input`: (n, ...) → (B, S, ...), zeros at padding; differentiable."""
    out = hidden_states.new_zeros(batch * seqlen, *hidden_states.shape[1:])  # (N, ...)
    out = out.index_put((indices,), hidden_states)  # (N, ...)
    return out.view(batch, seqlen, *hidden_states.shape[1:])  # (B, S, ...)


def all_gather(x: torch.Tensor, process_group: dist.ProcessGroup | None) -> torch.Tensor:
    """Concatenate ``x`` from every rank of ``process_group`` along dim 0; gradients flow back per rank."""
    import torch.distributed.nn.functional as dist_fn

    return torch.cat(dist_fn.all_gather(x.contiguous(), group=process_group or dist.group.WORLD), dim=0)

"""The pure-torch flash_attn helpers served on CPU: unpad / pad round trip, gradients, shapes."""

import pytest
import torch

pytest.importorskip("einops")

from mralign_plugin.adapters.openrlhf.flash_attn_fallback import (  # noqa: E402
    index_first_axis,
    pad_input,
    rearrange,
    unpad_input,
)


def test_unpad_pad_round_trip():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)  # (B, S, H)
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 0, 0]])
    flat, indices, cu_seqlens, max_seqlen, used = unpad_input(hidden, mask)
    assert flat.shape == (5, 3)
    assert indices.tolist() == [0, 1, 2, 4, 5]
    assert cu_seqlens.tolist() == [0, 3, 5] and cu_seqlens.dtype == torch.int32
    assert max_seqlen == 3 and used.tolist() == [3, 2]
    back = pad_input(flat, indices, 2, 4)
    assert torch.equal(back, hidden * mask.unsqueeze(-1))


def test_openrlhf_style_token_ids():
    """As openrlhf.models.ring_attn_utils.unpad_and_slice_tensor uses them: (B, S, 1) ids -> (1, n)."""
    ids = torch.tensor([[1, 2, 3, 0], [4, 5, 0, 0]])
    mask = (ids > 0).long()
    flat, indices, *_ = unpad_input(ids.unsqueeze(-1), mask)
    assert flat.transpose(0, 1).tolist() == [[1, 2, 3, 4, 5]]
    rolled = index_first_axis(rearrange(ids.unsqueeze(-1), "b s ... -> (b s) ..."), indices)
    assert rolled.squeeze(-1).tolist() == [1, 2, 3, 4, 5]


def test_gradients_flow_through_pad_and_index():
    x = torch.randn(5, 2, requires_grad=True)
    indices = torch.tensor([0, 1, 2, 4, 5])
    pad_input(x, indices, 2, 4).sum().backward()
    assert torch.equal(x.grad, torch.ones(5, 2))
    y = torch.randn(8, 2, requires_grad=True)
    index_first_axis(y, indices).sum().backward()
    assert y.grad.sum().item() == 10 and y.grad[3].abs().sum() == 0

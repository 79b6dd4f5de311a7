"""Tests for mralign_plugin.core.loss (Eqs. 2, 9, 11, 12)."""

import math

import pytest
import torch

from mralign_plugin.core.loss import kto_loss, kto_reference_point


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def plain_kto(policy, ref, mask, desirable, kl_policy, kl_ref, kl_mask, beta, lam_c, lam_r):
    """Independent restatement of OpenRLHF 0.9.5's KTOLoss on summed log-probs (the baseline)."""
    logratio = ((policy - ref) * mask).sum(-1)
    kl = ((kl_policy - kl_ref) * kl_mask).sum(-1).mean().clamp(min=0).detach()
    chosen = 1 - torch.sigmoid(beta * (logratio[desirable] - kl))
    rejected = 1 - torch.sigmoid(beta * (kl - logratio[~desirable]))
    return torch.cat([lam_c * chosen, lam_r * rejected]).mean(), kl


def random_batch(seed: int, b: int = 6, t: int = 9):
    g = torch.Generator().manual_seed(seed)
    policy = -torch.rand(b, t, generator=g) * 5
    ref = -torch.rand(b, t, generator=g) * 5
    mask = torch.rand(b, t, generator=g) > 0.3
    mask[:, 0] = True  # every row keeps at least one response token
    desirable = torch.arange(b) % 3 != 0
    return policy, ref, mask, desirable


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize("weights", ["none", "ones"])
def test_equals_plain_kto(seed, weights):
    policy, ref, mask, desirable = random_batch(seed)
    kl_policy, kl_ref, kl_mask, _ = random_batch(seed + 100)
    expected, kl = plain_kto(policy, ref, mask.float(), desirable, kl_policy, kl_ref, kl_mask.float(), 0.1, 1.0, 1.5)
    z0 = kto_reference_point(kl_policy, kl_ref, kl_mask)
    assert torch.allclose(z0, kl, atol=1e-6)
    token_weights = None if weights == "none" else torch.ones_like(policy)
    loss, metrics = kto_loss(policy, ref, mask, desirable, z0, token_weights=token_weights)
    assert torch.allclose(loss, expected, atol=1e-6)
    assert metrics["mean_token_weight"].item() == pytest.approx(1.0)


def test_hand_computed_2x3():
    """β = 1, λ_c = 1, λ_r = 1.5, z0 = 0.25.

    policy − ref = [[0.5, 0, −1], [1, 0.5, −1]]; mask = [[1, 1, 0], [0, 1, 1]]; row 0 desirable, row 1 not.
    Unweighted: r = [0.5, −0.5]
        ℓ0 = 1 − σ(0.5 − 0.25) = 1 − σ(0.25) = 0.437823
        ℓ1 = 1.5 (1 − σ(0.25 + 0.5)) = 1.5 (1 − σ(0.75)) = 0.481231      loss = 0.459527
    Weighted, ω = [[2, 1, 1], [9, 2, 0.5]] (ω on masked tokens is ignored): r = [1.0, 0.5]
        ℓ0 = 1 − σ(0.75) = 0.320821
        ℓ1 = 1.5 (1 − σ(0.25 − 0.5)) = 1.5 σ(0.25) = 0.843265             loss = 0.582043
    mean ω over response tokens = (2 + 1 + 2 + 0.5) / 4 = 1.375.
    """
    policy = torch.tensor([[-1.0, -2.0, -3.0], [-1.0, -1.0, -2.0]])
    ref = torch.tensor([[-1.5, -2.0, -2.0], [-2.0, -1.5, -1.0]])
    mask = torch.tensor([[1, 1, 0], [0, 1, 1]])
    desirable = torch.tensor([True, False])

    loss, m = kto_loss(policy, ref, mask, desirable, z0=0.25, beta=1.0)
    expected = ((1 - sigmoid(0.25)) + 1.5 * (1 - sigmoid(0.75))) / 2
    assert loss.item() == pytest.approx(expected, abs=1e-6)
    assert loss.item() == pytest.approx(0.459527, abs=1e-6)
    assert m["rewards/chosen"].item() == pytest.approx(0.5)
    assert m["rewards/rejected"].item() == pytest.approx(-0.5)
    assert m["margin"].item() == pytest.approx(1.0)
    assert m["kl"].item() == pytest.approx(0.25)

    weights = torch.tensor([[2.0, 1.0, 1.0], [9.0, 2.0, 0.5]])
    loss_w, m_w = kto_loss(policy, ref, mask, desirable, z0=0.25, token_weights=weights, beta=1.0)
    expected_w = ((1 - sigmoid(0.75)) + 1.5 * sigmoid(0.25)) / 2
    assert loss_w.item() == pytest.approx(expected_w, abs=1e-6)
    assert loss_w.item() == pytest.approx(0.582043, abs=1e-6)
    assert m_w["mean_token_weight"].item() == pytest.approx(1.375)


def test_token_gradient_scales_with_weight():
    policy, ref, mask, desirable = random_batch(7)
    weights = torch.rand_like(policy) * 2.35 + 0.368  # within [1/e, e]
    policy_w = policy.clone().requires_grad_()
    policy_1 = policy.clone().requires_grad_()
    z0 = torch.tensor(0.3)
    kto_loss(policy_w, ref, mask, desirable, z0, token_weights=weights)[0].backward()
    kto_loss(policy_1, ref, mask, desirable, z0)[0].backward()

    # d loss / d policy_t = (1/B) dℓ/dr · ω_t · mask_t: within a row every token's gradient divided by
    # its weight is the same number, and padding gets exactly zero.
    assert (policy_w.grad[~mask] == 0).all() and (policy_1.grad[~mask] == 0).all()
    for i in range(policy.shape[0]):
        per_weight = policy_w.grad[i][mask[i]] / weights[i][mask[i]]
        assert torch.allclose(per_weight, per_weight[0].expand_as(per_weight), rtol=1e-5)
        unweighted = policy_1.grad[i][mask[i]]
        assert torch.allclose(unweighted, unweighted[0].expand_as(unweighted), rtol=1e-5)
        # sign: desirable rows push the log-ratio up (negative gradient of the loss), undesirable down
        assert (per_weight[0] < 0) == bool(desirable[i])


def test_reference_logps_get_no_gradient():
    policy, ref, mask, desirable = random_batch(3)
    ref = ref.clone().requires_grad_()
    loss, _ = kto_loss(policy.requires_grad_(), ref, mask, desirable, 0.0)
    loss.backward()
    assert ref.grad is None


def test_reference_point_clamped_and_detached():
    policy = torch.tensor([[-3.0, -3.0], [-2.0, -9.0]], requires_grad=True)
    ref = torch.tensor([[-1.0, -1.0], [-1.0, -1.0]])
    mask = torch.tensor([[True, True], [True, False]])
    z0 = kto_reference_point(policy, ref, mask)  # mean(-4, -1) = -2.5 -> clamped to 0
    assert z0.item() == 0.0 and not z0.requires_grad
    z0 = kto_reference_point(ref, policy.detach(), mask)  # mean(4, 1) = 2.5
    assert z0.item() == pytest.approx(2.5)
    # a multi-rank trainer all-reduces the unclamped mean, then clamps
    assert kto_reference_point(policy, ref, mask, clamp=False).item() == pytest.approx(-2.5)


def test_single_class_batches():
    policy, ref, mask, _ = random_batch(1)
    for desirable, absent in [(torch.ones(6, dtype=torch.bool), "rewards/rejected"),
                              (torch.zeros(6, dtype=torch.bool), "rewards/chosen")]:
        loss, m = kto_loss(policy, ref, mask, desirable, 0.1)
        assert torch.isfinite(loss)
        assert m[absent].item() == 0.0 and m["margin"].item() == 0.0


def test_per_class_weights():
    """λ_c scales desirable rows only and λ_r undesirable rows only."""
    policy, ref, mask, desirable = random_batch(2)
    base, _ = kto_loss(policy, ref, mask, desirable, 0.2, desirable_weight=1.0, undesirable_weight=0.0)
    double, _ = kto_loss(policy, ref, mask, desirable, 0.2, desirable_weight=2.0, undesirable_weight=0.0)
    assert double.item() == pytest.approx(2 * base.item(), rel=1e-6)
    neg, _ = kto_loss(policy, ref, mask, desirable, 0.2, desirable_weight=0.0, undesirable_weight=1.5)
    both, _ = kto_loss(policy, ref, mask, desirable, 0.2, desirable_weight=1.0, undesirable_weight=1.5)
    assert both.item() == pytest.approx(base.item() + neg.item(), rel=1e-6)


def test_shards_average_to_global():
    """With z0 shared (all-reduced), the mean of equal-size shard losses equals the global loss."""
    policy, ref, mask, desirable = random_batch(4, b=8)
    full, _ = kto_loss(policy, ref, mask, desirable, 0.4)
    halves = [kto_loss(policy[s], ref[s], mask[s], desirable[s], 0.4)[0] for s in (slice(0, 4), slice(4, 8))]
    assert torch.allclose(full, torch.stack(halves).mean(), atol=1e-7)


def test_nonfinite_padding_is_ignored():
    policy, ref, mask, desirable = random_batch(5)
    clean, _ = kto_loss(policy, ref, mask, desirable, 0.1)
    dirty_policy = policy.masked_fill(~mask, float("nan")).requires_grad_()
    dirty, _ = kto_loss(dirty_policy, ref.masked_fill(~mask, float("-inf")), mask, desirable, 0.1)
    assert torch.allclose(clean, dirty)
    dirty.backward()
    assert torch.isfinite(dirty_policy.grad).all() and (dirty_policy.grad[~mask] == 0).all()


def test_nonfinite_weight_padding_is_ignored():
    """ω off the response (padding, prompt) never reaches the loss or mean_token_weight, even as nan / inf."""
    policy, ref, mask, desirable = random_batch(8)
    weights = torch.rand_like(policy) * 2.35 + 0.368
    clean, m_clean = kto_loss(policy, ref, mask, desirable, 0.1, token_weights=weights)
    dirty_weights = weights.masked_fill(~mask, float("inf"))
    dirty_weights[~mask & (torch.arange(policy.shape[1]) % 2 == 0)] = float("nan")
    dirty, m_dirty = kto_loss(policy, ref, mask, desirable, 0.1, token_weights=dirty_weights)
    assert torch.allclose(clean, dirty)
    assert m_dirty["mean_token_weight"].item() == pytest.approx(m_clean["mean_token_weight"].item())
    assert m_clean["mean_token_weight"].item() == pytest.approx(weights[mask].mean().item(), rel=1e-6)


def test_weights_in_another_dtype():
    """float64 (or integer) weights are cast to the log-probs' dtype, so the loss stays float32."""
    policy, ref, mask, desirable = random_batch(9)
    weights = torch.rand_like(policy) * 2.35 + 0.368
    loss32, m32 = kto_loss(policy, ref, mask, desirable, 0.1, token_weights=weights)
    loss64, m64 = kto_loss(policy, ref, mask, desirable, 0.1, token_weights=weights.double())
    assert loss64.dtype == torch.float32 and torch.allclose(loss32, loss64)
    assert m64["mean_token_weight"].item() == pytest.approx(m32["mean_token_weight"].item())
    loss_int, _ = kto_loss(policy, ref, mask, desirable, 0.1, token_weights=torch.ones_like(policy, dtype=torch.long))
    assert torch.allclose(loss_int, kto_loss(policy, ref, mask, desirable, 0.1)[0])


def test_premasked_weights_skip_the_product():
    """weights_masked=True (ω already 0 off the response, as the collate builds it) gives the same loss,
    gradient and metrics as the general path."""
    policy, ref, mask, desirable = random_batch(10)
    weights = (torch.rand_like(policy) * 2.35 + 0.368) * mask
    results = []
    for premasked in (False, True):
        x = policy.clone().requires_grad_()
        loss, metrics = kto_loss(x, ref, mask, desirable, 0.1, token_weights=weights, weights_masked=premasked)
        loss.backward()
        results.append((loss.detach(), x.grad, metrics["mean_token_weight"]))
    (loss_a, grad_a, mean_a), (loss_b, grad_b, mean_b) = results
    assert torch.allclose(loss_a, loss_b) and torch.allclose(grad_a, grad_b) and torch.allclose(mean_a, mean_b)
    assert mean_b.item() == pytest.approx(weights[mask].mean().item(), rel=1e-6)


@pytest.mark.parametrize(
    "case, message",
    [
        ("nan_response", r"non-finite values on response tokens \(mask = 1\) in policy_logps"),
        ("all_masked_row", "no response token"),
        ("inf_z0", "z0 must be finite"),
        ("nan_weight", "non-finite values .* in token_weights"),
        ("shape", "must all be"),
        ("empty", "empty batch"),
    ],
)
def test_clear_errors(case, message):
    policy, ref, mask, desirable = random_batch(6)
    z0, weights = torch.tensor(0.1), None
    if case == "nan_response":
        policy[0, 0] = float("nan")
    elif case == "all_masked_row":
        mask[2] = False
    elif case == "inf_z0":
        z0 = torch.tensor(float("inf"))
    elif case == "nan_weight":
        weights = torch.ones_like(policy)
        weights[1, 0] = float("nan")
    elif case == "shape":
        ref = ref[:, :-1]
    elif case == "empty":
        policy, ref, mask, desirable = policy[:0], ref[:0], mask[:0], desirable[:0]
    with pytest.raises(ValueError, match=message):
        kto_loss(policy, ref, mask, desirable, z0, token_weights=weights)


def test_reference_point_rejects_empty_and_nan():
    with pytest.raises(ValueError, match="at least one"):
        kto_reference_point(torch.zeros(0, 3), torch.zeros(0, 3), torch.zeros(0, 3))
    with pytest.raises(ValueError, match="non-finite"):
        kto_reference_point(torch.tensor([[float("nan")]]), torch.zeros(1, 1), torch.ones(1, 1))

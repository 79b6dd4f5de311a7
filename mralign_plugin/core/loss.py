"""KTO with a transition-weighted implicit reward: MR-ALIGN Eqs. 2, 9, 11, 12 (method/MRALIGN.md §5.1, §5.5).

Pure torch: no collectives, no device moves, no logging. The trainer computes log-probs, all-reduces the
reference point across ranks and reduces nothing else.

Notation: B rows in a micro-batch, T response positions (after the causal shift: position t holds
log p(token t+1 | tokens ≤ t)); ``mask`` is 1 on response tokens, 0 on prompt and padding.

* Eq. 9:  r = Σ_t ω_t · mask_t · (log π_θ − log π_ref)_t, with ω = 1 where no weights are given.
* Eq. 2:  z0 = max(0, mean over mismatched pairs (x_i, y_j) of Σ_t mask_t · (log π_θ − log π_ref)_t),
  detached (the batch estimate LLaMA-Factory / TRL use; the paper mentions a moving average).
* Eqs. 11–12: loss = mean_i λ_c (1 − σ(β (r_i − z0))) for desirable rows, λ_r (1 − σ(β (z0 − r_i)))
  for undesirable rows. With ω ≡ 1 this is plain KTO as OpenRLHF 0.9.5's ``KTOLoss`` computed it.
"""

from __future__ import annotations

import torch
from torch import Tensor


def _check_shapes(policy_logps: Tensor, ref_logps: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
    """Shape checks shared by both functions; returns the mask (B, T) as bool and as 0/1 in the log-probs' dtype."""
    if policy_logps.dim() != 2 or policy_logps.shape != ref_logps.shape or policy_logps.shape != mask.shape:
        raise ValueError(
            "policy_logps, ref_logps and mask must all be (B, T); got "
            f"{tuple(policy_logps.shape)}, {tuple(ref_logps.shape)}, {tuple(mask.shape)}"
        )
    mask = mask.bool()
    return mask, mask.view(torch.uint8).to(policy_logps.dtype)  # (B, T) each; uint8 view: bool->float is slow on CPU


def _masked_logratio(
    policy_logps: Tensor, ref_logps: Tensor, mask: Tensor, scale: Tensor, weights: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Σ_t scale_t (policy_t − ref_t) → (B,), checked finite; scale (B, T) is ω·mask (mask alone if no ω).

    A non-finite log-prob or weight on a response token makes its row's sum non-finite, so one check on
    the (B,) result covers every input. Padding may hold -inf / nan (0 · inf = nan in the fast product):
    then the sum is redone with ``where``, which ignores masked positions, and the error names the input
    only if a response token is at fault. Returns the reward and the scale actually used (rebuilt with
    ``where`` in that case, so a caller summing it never sees padding's nan).
    """
    reward = ((policy_logps - ref_logps) * scale).sum(-1)  # (B,)
    if not torch.isfinite(reward.detach()).all():
        diff = torch.where(mask, policy_logps - ref_logps, torch.zeros_like(policy_logps))  # (B, T)
        if weights is not None:
            scale = torch.where(mask, weights.detach(), torch.zeros_like(weights)).to(scale.dtype)  # (B, T)
            diff = diff * scale  # (B, T)
        reward = diff.sum(-1)  # (B,)
        if not torch.isfinite(reward.detach()).all():
            culprits = [name for name, x in (("policy_logps", policy_logps), ("ref_logps", ref_logps),
                                             ("token_weights", weights))
                        if x is not None and not torch.isfinite(x.detach()[mask]).all()]
            raise ValueError(
                f"non-finite values on response tokens (mask = 1) in {', '.join(culprits) or 'the sum'}"
            )
    return reward, scale


def kto_reference_point(policy_logps: Tensor, ref_logps: Tensor, mask: Tensor, *, clamp: bool = True) -> Tensor:
    """Reference point z0 of Eq. 2 from mismatched (prompt_i, response_j) pairs, before cross-rank averaging.

    Args:
        policy_logps (Tensor): (B, T) policy log-probs of the mismatched pairs' response tokens.
        ref_logps (Tensor): (B, T) reference log-probs, same positions.
        mask (Tensor): (B, T) bool or 0/1, 1 on response tokens.
        clamp (bool): clamp at 0. A trainer averaging over ranks passes False, all-reduces the mean,
            then clamps (the clamp of a mean is not the mean of clamps). Default True.

    Returns:
        Tensor: scalar z0 = max(0, mean_i Σ_t mask (policy − ref)), detached.

    Raises:
        ValueError: on shape mismatch, B = 0, or non-finite log-probs on masked-in tokens.

    Example:
        >>> p = torch.tensor([[-1.0, -2.0], [-1.0, -1.0]]); r = torch.tensor([[-1.5, -2.0], [-2.0, -3.0]])
        >>> kto_reference_point(p, r, torch.ones(2, 2))  # mean(0.5, 3.0)
        tensor(1.7500)
    """
    mask, scale = _check_shapes(policy_logps, ref_logps, mask)
    if policy_logps.shape[0] == 0:
        raise ValueError("kto_reference_point needs at least one mismatched pair")
    # Interpretation: z0 unweighted (paper silent, method/MRALIGN.md §9 item 5).
    kl = _masked_logratio(policy_logps.detach(), ref_logps.detach(), mask, scale, None)[0].mean()  # ()
    return kl.clamp(min=0) if clamp else kl


def kto_loss(
    policy_logps: Tensor,
    ref_logps: Tensor,
    mask: Tensor,
    desirable: Tensor,
    z0: Tensor | float,
    token_weights: Tensor | None = None,
    beta: float = 0.1,
    desirable_weight: float = 1.0,
    undesirable_weight: float = 1.5,
    weights_masked: bool = False,
) -> tuple[Tensor, dict[str, Tensor]]:
    """MR-ALIGN loss, Eqs. 9, 11, 12 (plain KTO, Eqs. 1–4, when ``token_weights`` is None or all ones).

    Args:
        policy_logps (Tensor): (B, T) per-token policy log-probs (gradient flows through these).
        ref_logps (Tensor): (B, T) per-token reference log-probs (treated as constants).
        mask (Tensor): (B, T) bool or 0/1, 1 on response tokens.
        desirable (Tensor): (B,) bool, True for D⁺ rows (label true), False for D⁻.
        z0 (Tensor | float): detached reference point, e.g. from :func:`kto_reference_point`.
        token_weights (Tensor | None): (B, T) ω_t of Eq. 9 (w_t inside segment t, 1 on answer tokens).
            Default None: ω ≡ 1.
        beta (float): β. Default 0.1 (paper, Table 13).
        desirable_weight (float): λ_c. Default 1.0.
        undesirable_weight (float): λ_r. Default 1.5 (paper, Table 13).
        weights_masked (bool): the caller guarantees ``token_weights`` is 0 wherever ``mask`` is 0 (as
            the trainer's collate builds it), so ω·mask = ω and the product is skipped. Default False.

    Returns:
        tuple[Tensor, dict[str, Tensor]]: the scalar loss (mean over all B rows of Eq. 11's summand) and
        detached metrics: ``kl`` (z0), ``rewards/chosen`` and ``rewards/rejected`` (mean β·r per class,
        0 when the class is absent), ``margin`` (their difference, 0 unless both are present),
        ``mean_token_weight`` (mean ω over response tokens).

    Raises:
        ValueError: on shape mismatch, an empty batch, a row with no response token, non-finite
            log-probs on response tokens, non-finite weights or z0.

    Example:
        >>> p = torch.tensor([[-1.0, -1.0]]); r = torch.tensor([[-2.0, -1.0]])
        >>> loss, m = kto_loss(p, r, torch.ones(1, 2), torch.tensor([True]), z0=0.0, beta=1.0)
        >>> round(loss.item(), 4)  # 1 - sigmoid(1.0)
        0.2689
    """
    mask, scale = _check_shapes(policy_logps, ref_logps, mask)
    batch = policy_logps.shape[0]
    if batch == 0:
        raise ValueError("kto_loss got an empty batch")
    if desirable.shape != (batch,):
        raise ValueError(f"desirable must be (B,) = ({batch},); got {tuple(desirable.shape)}")
    # Counted on the 0/1 float mask (a bool sum is slower on CPU); one host copy serves the check below and
    # mean_token_weight's denominator.
    tokens_per_row = scale.sum(-1).tolist()  # B floats
    if not all(tokens_per_row):
        raise ValueError("a row has no response token (all masked): drop it before the loss")
    if token_weights is not None:
        if token_weights.shape != policy_logps.shape:
            raise ValueError(f"token_weights must be (B, T); got {tuple(token_weights.shape)}")
        if weights_masked:
            scale = token_weights.detach().to(policy_logps.dtype)  # (B, T) ω = ω·mask already: no product
        else:
            scale.mul_(token_weights.detach())  # (B, T) ω·mask, in place (ω cast): the weighting's one extra product
    z0 = torch.as_tensor(z0, dtype=policy_logps.dtype, device=policy_logps.device).detach()
    if not torch.isfinite(z0):
        raise ValueError(f"z0 must be finite; got {z0.item()}")
    desirable = desirable.bool()

    reward, scale = _masked_logratio(policy_logps, ref_logps.detach(), mask, scale, token_weights)  # (B,)  Eq. 9
    chosen = desirable_weight * (1 - torch.sigmoid(beta * (reward - z0)))  # (B,)  Eq. 12, D⁺
    rejected = undesirable_weight * (1 - torch.sigmoid(beta * (z0 - reward)))  # (B,)  Eq. 12, D⁻
    loss = torch.where(desirable, chosen, rejected).mean()  # ()  Eq. 11

    with torch.no_grad():
        scaled = beta * reward  # (B,)
        n_pos, n_neg = desirable.sum(), (~desirable).sum()
        zero = scaled.new_zeros(())
        reward_chosen = scaled[desirable].mean() if n_pos > 0 else zero
        reward_rejected = scaled[~desirable].mean() if n_neg > 0 else zero
        margin = reward_chosen - reward_rejected if (n_pos > 0 and n_neg > 0) else zero
        if token_weights is None:
            mean_weight = scaled.new_ones(())
        else:
            mean_weight = scale.sum() / sum(tokens_per_row)
    metrics = {
        "kl": z0,
        "rewards/chosen": reward_chosen,
        "rewards/rejected": reward_rejected,
        "margin": margin,
        "mean_token_weight": mean_weight,
    }
    return loss, metrics

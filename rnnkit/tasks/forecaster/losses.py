"""The forecaster's training losses: the masked mean, the pinball (quantile) loss and the Gaussian NLL."""

from __future__ import annotations

import math

import torch
from torch import Tensor


# ---------------------------------------------------------------------------------------------
# Losses
# ---------------------------------------------------------------------------------------------
def _masked_mean(loss: Tensor, mask: Tensor) -> Tensor:
    mask = mask.to(loss.dtype)
    return (loss * mask).sum() / mask.sum().clamp_min(1.0)


def quantile_loss(pred: Tensor, target: Tensor, quantiles: Tensor | list[float]) -> Tensor:
    """Pinball loss per element, averaged over the levels: ``pred (..., Q)``, ``target (...)``.

    ρ_τ(u) = max(τ·u, (τ − 1)·u) with u = y − q̂_τ: under-prediction costs τ per unit,
    over-prediction 1 − τ, so the minimiser is the τ-quantile. Returns shape ``target.shape``.
    """
    tau = torch.as_tensor(quantiles, dtype=pred.dtype, device=pred.device)
    u = target.unsqueeze(-1) - pred  # (..., Q)
    return torch.maximum(tau * u, (tau - 1) * u).mean(-1)


def gaussian_nll(mean: Tensor, sigma: Tensor, target: Tensor) -> Tensor:
    """−log N(y; μ, σ²) = ½ log 2π + log σ + (y − μ)² / (2σ²), per element."""
    return 0.5 * math.log(2 * math.pi) + torch.log(sigma) + 0.5 * ((target - mean) / sigma) ** 2

"""Activation regularisers for recurrent networks, as loss terms added to a task's loss.

Owns :func:`norm_stabilizer`, the norm-stabiliser penalty of Krueger & Memisevic (2016),
"Regularizing RNNs by Stabilizing Activations" (ICLR 2016):

    R = β · (1/T) Σ_{t=1}^{T} (‖h_t‖₂ − ‖h_{t−1}‖₂)²

It asks the norm of the hidden state to stay roughly constant from step to step, which keeps the
activations from growing or collapsing over time (the failure that makes ReLU/IRNN and tanh RNNs
unstable on long sequences) while leaving their direction free. The penalty is a function of the
layer's outputs ``(B, T, H)``, so it works with every rnnkit layer and needs no change to the cells;
the lectures' other stabiliser, layer normalisation, lives in the cells (``layer_norm=True``).
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["norm_stabilizer"]


def norm_stabilizer(
    outputs: Tensor,
    beta: float,
    initial: Tensor | None = None,
    lengths: Tensor | None = None,
    batch_first: bool = True,
) -> Tensor:
    r"""Norm-stabiliser penalty β·(1/T)·Σ_t (‖h_t‖ − ‖h_{t−1}‖)², averaged over the batch.

    Args:
        outputs: hidden states h_1 … h_T, ``(B, T, H)`` (``(T, B, H)`` if not ``batch_first``);
            for an LSTM pass the layer output h (Krueger & Memisevic found penalising h works
            better than the cell c).
        beta: weight β of the penalty (the paper uses 50–500 for character-level models).
        initial: h_0 ``(B, H)``, e.g. the state carried in from the previous truncated-BPTT window.
            With it the sum runs over t = 1 … T (T differences); without it over t = 2 … T and is
            divided by the T − 1 differences there are (zero when T = 1).
        lengths: optional ``(B,)`` valid lengths of padded sequences; differences past a
            sequence's end are left out and its mean is over its own differences.
        batch_first: layout of ``outputs``.

    Returns:
        a scalar tensor: β · mean over sequences b of (1/n_b) Σ_t (‖h_t⁽ᵇ⁾‖ − ‖h_{t−1}⁽ᵇ⁾‖)²,
        differentiable with respect to ``outputs`` (and ``initial``).

    Note that ‖·‖ is the Euclidean norm, whose gradient h/‖h‖ is undefined at h = 0; torch
    returns 0 there, so all-zero states (e.g. padding) contribute no gradient.
    """
    if outputs.dim() != 3:
        raise ValueError(
            f"norm_stabilizer expects hidden states of shape (batch, seq_len, hidden); "
            f"got {tuple(outputs.shape)}"
        )
    h = outputs if batch_first else outputs.transpose(0, 1)
    B, T, H = h.shape
    norms = h.norm(dim=-1)  # (B, T)
    if initial is not None:
        if tuple(initial.shape) != (B, H):
            raise ValueError(
                f"initial state must have shape (batch, hidden) = {(B, H)}; "
                f"got {tuple(initial.shape)}"
            )
        norms = torch.cat([initial.norm(dim=-1).unsqueeze(1), norms], 1)  # (B, T+1)
    diffs = (norms[:, 1:] - norms[:, :-1]).pow(2)  # (B, n): n = T or T − 1
    if diffs.shape[1] == 0:
        return outputs.new_zeros(())
    if lengths is None:
        per_sequence = diffs.mean(1)
    else:
        lengths = torch.as_tensor(lengths, device=diffs.device)
        if lengths.shape != (B,):
            raise ValueError(f"lengths must have shape ({B},); got {tuple(lengths.shape)}")
        # difference k compares norms k+1 and k of `norms`; it is valid while k+1 is a real step
        valid = lengths - (0 if initial is not None else 1)  # differences per sequence
        steps = torch.arange(diffs.shape[1], device=diffs.device)
        mask = (steps.unsqueeze(0) < valid.unsqueeze(1)).to(diffs.dtype)  # (B, n)
        per_sequence = (diffs * mask).sum(1) / valid.clamp(min=1).to(diffs.dtype)
    return beta * per_sequence.mean()

"""The norm-stabiliser penalty against hand-computed values, masks, layouts and autograd."""

import pytest
import torch

from rnnkit.regularizers import norm_stabilizer

DT = torch.float64

# one sequence whose state norms are 5, 1, 10 (3-4-5 and 6-8-10 triangles)
H3 = torch.tensor([[[3.0, 4.0], [0.0, 1.0], [6.0, 8.0]]], dtype=DT)  # (1, 3, 2)


def test_hand_computed_value_without_initial_state():
    # differences of norms: 1 − 5 = −4, 10 − 1 = 9 → mean of squares (16 + 81) / 2 = 48.5
    assert float(norm_stabilizer(H3, beta=2.0)) == pytest.approx(2.0 * 48.5)


def test_hand_computed_value_with_initial_state():
    # h_0 = (0, 0): differences 5, −4, 9 → (25 + 16 + 81) / 3
    initial = torch.zeros(1, 2, dtype=DT)
    assert float(norm_stabilizer(H3, beta=1.0, initial=initial)) == pytest.approx(122 / 3)


def test_batch_mean_layout_and_lengths():
    other = torch.tensor([[[0.0, 2.0], [0.0, 2.0], [0.0, 0.0]]], dtype=DT)  # norms 2, 2, 0
    both = torch.cat([H3, other])  # (2, 3, 2)
    full = float(norm_stabilizer(both, beta=1.0))
    assert full == pytest.approx((48.5 + (0 + 4) / 2) / 2)
    # time-major input gives the same number
    assert float(norm_stabilizer(both.transpose(0, 1), 1.0, batch_first=False)) == full
    # the second sequence has length 2: its padded third step is ignored → its penalty is 0
    masked = float(norm_stabilizer(both, beta=1.0, lengths=torch.tensor([3, 2])))
    assert masked == pytest.approx(48.5 / 2)


def test_single_step_without_initial_is_zero_and_shapes_are_checked():
    assert float(norm_stabilizer(torch.ones(4, 1, 3), beta=10.0)) == 0.0
    with pytest.raises(ValueError, match="batch, seq_len, hidden"):
        norm_stabilizer(torch.ones(4, 3), beta=1.0)
    with pytest.raises(ValueError, match="initial state"):
        norm_stabilizer(torch.ones(2, 3, 4), beta=1.0, initial=torch.ones(2, 5))


def test_gradient_matches_finite_differences_and_pulls_norms_together():
    torch.manual_seed(0)
    h = torch.randn(2, 5, 3, dtype=DT, requires_grad=True)
    h0 = torch.randn(2, 3, dtype=DT, requires_grad=True)
    assert torch.autograd.gradcheck(lambda a, b: norm_stabilizer(a, 0.7, initial=b), (h, h0))
    # one step of gradient descent makes consecutive norms closer
    before = norm_stabilizer(h, 1.0)
    before.backward()
    with torch.no_grad():
        after = norm_stabilizer(h - 0.05 * h.grad, 1.0)
    assert after < before

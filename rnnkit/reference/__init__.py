"""Pure-NumPy reference implementations of RNN, LSTM and GRU with hand-written backprop.

This package owns the "by hand" versions of the recurrent models: each module caches its
forward pass and walks time backwards carrying ``dh_next`` (and ``dc_next`` for the LSTM),
in the style of Karpathy's min-char-rnn. They exist to be read and to be checked against:
the tests compare their gradients with PyTorch autograd on ``rnnkit.cells`` and with
finite differences (``gradcheck``). Parameter names and gate orders match PyTorch's cells.

Every model exposes ``init_params``, ``forward(xs, ys, state0, p) -> (loss, cache)``,
``backward(cache, p) -> grads`` and ``loss_and_grads``. The loss is the softmax
cross-entropy summed over time and batch. This package imports NumPy only, never torch.
"""

from . import gradcheck, gru, lstm, rnn
from .gradcheck import GradCheckReport, check_gradients, numerical_gradient

__all__ = [
    "GradCheckReport",
    "check_gradients",
    "gradcheck",
    "gru",
    "lstm",
    "numerical_gradient",
    "rnn",
]

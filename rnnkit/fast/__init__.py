r"""Fast path of the recurrent layers: hand-written BPTT for the cells torch's fused kernels lack.

This module owns the time loop for layer-norm and peephole LSTMs, both GRU forms, the Elman RNN
(tanh, ReLU / identity init) and the extras zoneout, ``lengths`` and weight drop, as one
``torch.autograd.Function`` per cell family. Autograd would record every step's ops and replay them
one by one; here

* the forward loop runs without autograd and keeps only what the backward needs (activated gates,
  cell states, layer-norm statistics), written into preallocated ``(T, B, ·)`` buffers;
* everything off the recurrent chain is batched over all T steps: the gate derivatives
  σ' = σ(1 − σ), tanh' = 1 − tanh² and their products are computed as ``(T, B, ·)`` tensors
  before the backward loop, so each backward step is a handful of elementwise ops plus one
  recurrent GEMM  ∂L/∂h_{t−1} = ∂L/∂a_t · W_hh  (a_t = W_hh h_{t−1} + b_hh);
* the weight gradients are single large GEMMs over every step,
  ∂L/∂W_hh = Σ_t ∂a_tᵀ h_{t−1} = (T·B × G)ᵀ · (T·B × H), and likewise for the input projection
  W_ih x_t + b_ih, which is hoisted out of the loop (one GEMM forward, two backward);
* on fp32 CPU the step and projection GEMMs run on oneDNN (``torch.ops.mkldnn._linear_pointwise``,
  the recurrent weight reordered once per sequence into oneDNN's blocked layout), about twice the
  rate of ``torch.mm`` where MKL takes a slow path (AMD CPUs); the weight gradients, long
  reductions over T·B rows, run on rnnkit's own kernel where its tile GEMM is compiled
  (``rnnkit/native/weight_grad.cpp``, 3–15% faster than ``torch.mm`` here and summing the bias
  gradient in the same pass), else on ``torch.mm``, which reads the transposed operand in place;
  float64 and CUDA use ``torch.mm``;
* the time loops themselves are TorchScript functions (Python fallback where TorchScript is
  unavailable), which takes the Python interpreter out of the per-step overhead;
* on CPU the GRU, LSTM and Elman RNN run in rnnkit's native kernels (:mod:`rnnkit.native`, C++
  built on first use where a compiler is present; :data:`NATIVE`). Where their tile GEMM is
  compiled (AVX-512; :data:`FUSED`) a whole sequence is one call: one OpenMP team whose threads
  each run a share of the batch rows (or of the hidden units) through every step, the recurrent
  product computed by rnnkit's own register-tiled GEMM on weights packed into 16-unit panels
  (:func:`_panels`) and each tile's gate arithmetic done while it is in cache — a oneDNN call
  through torch costs ~15 µs per step before any arithmetic. Elsewhere the C++ loop calls the
  GEMMs above each step and does the gate arithmetic in one vectorised pass per step, where torch
  ops need five to fifteen passes. The TorchScript loops below remain the fallback and the path
  on GPUs;
* on CPU, tanh is computed as 2σ(2x) − 1: torch's CPU tanh measured ~9× slower per element than
  its sigmoid, and the factor 2 is folded into the weights: the g rows of the LSTM's W_hh (or of
  its LN gain and shift), so a single sigmoid over all four gate blocks yields i, f, o and
  σ(2 z_g), and the n rows of the GRU's (with x̂_n doubled once for the whole sequence).

State updates with ``lengths`` and zoneout share one form: with a per-step, per-unit coefficient
α_t the state is s_t = s_{t−1} + α_t ⊙ (s̃_t − s_{t−1}) (``torch.lerp``), where s̃_t is the cell's
new state; α = m_t (1 if step t is inside the sequence, else 0) for lengths, α = m_t (1 − d_t) for
zoneout in training (d ~ Bernoulli(p), one mask per step and state, drawn in the reference loop's
order so both paths see the same masks) and α = m_t (1 − p) in evaluation. The output is
y_t = m_t ⊙ s^h_t. Backward: ∂L/∂s̃_t = α_t ⊙ ∂L/∂s_t and s_{t−1} receives (1 − α_t) ⊙ ∂L/∂s_t
besides its path through the cell.

The package is split by idea: :mod:`~rnnkit.fast.switches` (the backend switches),
:mod:`~rnnkit.fast.gemm` (oneDNN / GEMM / weight-gradient helpers, native-kernel gating),
:mod:`~rnnkit.fast.pieces` (layer-norm, elementwise and backward-step pieces, TorchScript),
:mod:`~rnnkit.fast.rnn`, :mod:`~rnnkit.fast.lstm`, :mod:`~rnnkit.fast.gru` and
:mod:`~rnnkit.fast.gru_reset_before` (one cell family each) and :mod:`~rnnkit.fast.dispatch`
(which cells the fast path covers, and the layer-level entry point).

:func:`run_direction` is the drop-in for :func:`rnnkit.layers.run_direction`; the layers call it
when :func:`supports` says the cell is covered. Backward through a fast-path forward works once
per graph or repeatedly with ``retain_graph=True``, but not twice-differentiably.
"""

from __future__ import annotations

import sys
import types

from rnnkit.fast import gemm, switches
from rnnkit.fast.dispatch import layer_supported, prefers_fast, run_direction, supports

# Private helpers re-exported for the tests and benchmarks that reach them here.
from rnnkit.fast.gemm import (
    _ROWS_PER_THREAD,  # noqa: F401
    PANEL,  # noqa: F401
    _grad_weight_prev,  # noqa: F401
    _native_ok,  # noqa: F401
    _onednn_works,  # noqa: F401
    _pack,  # noqa: F401
    _panels,  # noqa: F401
    _use_fused,  # noqa: F401
    _use_native,  # noqa: F401
    _weight_grads,  # noqa: F401
    linear,
)
from rnnkit.fast.gru import gru_sequence
from rnnkit.fast.lstm import lstm_sequence
from rnnkit.fast.rnn import rnn_sequence

__all__ = [
    "GEMM_BACKEND",
    "WGRAD_BACKEND",
    "NATIVE",
    "FUSED",
    "SCRIPT",
    "supports",
    "prefers_fast",
    "layer_supported",
    "run_direction",
    "rnn_sequence",
    "lstm_sequence",
    "gru_sequence",
    "linear",
]

# Module state that lives in a submodule but is read and set as ``rnnkit.fast.NAME``: the package
# forwards both reads and assignments (``monkeypatch.setattr(fast, "NATIVE", False)`` included)
# to the module whose functions read the value at call time.
_FORWARDED = {
    "GEMM_BACKEND": switches,
    "SCRIPT": switches,
    "NATIVE": switches,
    "WGRAD_BACKEND": switches,
    "FUSED": switches,
    "_ONEDNN_STRIDED": gemm,
}


def _forward(name: str, module: types.ModuleType) -> property:
    """A read/write property that reads and sets ``module.name``."""
    return property(
        lambda self: getattr(module, name),
        lambda self, value: setattr(module, name, value),
        doc=f"``rnnkit.fast.{name}``, kept in :mod:`{module.__name__}`",
    )


class _FastPackage(types.ModuleType):
    """The package's module type: its forwarded names are properties (data descriptors)."""


for _name, _module in _FORWARDED.items():
    setattr(_FastPackage, _name, _forward(_name, _module))

sys.modules[__name__].__class__ = _FastPackage

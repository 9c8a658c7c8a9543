"""Centred finite-difference gradient checking for the NumPy reference models.

This module owns the numerical side of a gradient check: it perturbs parameter arrays in
place, re-evaluates a scalar loss, restores the arrays, and compares the resulting slopes
with analytic gradients using the relative error

    rel(a, n) = |a − n| / max(|a| + |n|, floor)

(``floor`` keeps entries whose true gradient is zero from dividing 0 by 0).

How small that error can get is limited by floating point, not only by the backward pass. A
centred difference has truncation error ≈ eps²·|f‴|/6 and rounding error ≈ ε_mach·|L|/eps, so
for a float64 loss of size |L| ≈ 25 the numerical slope carries about 1e-10 of noise at
eps = 1e-5 (about 1e-9 at eps = 1e-6). An entry whose true gradient is 1e-4 then cannot agree
to better than ~1e-6 relatively, even when the backward pass is exact. Raise ``floor`` to the
smallest gradient magnitude that should be judged relatively (1e-3 works for the small test
models): entries below it are judged by their absolute error divided by ``floor``. A wrong
backward pass gives relative errors far above 1e-4 on the entries it gets wrong.

The loss is passed as a zero-argument callable that reads the very arrays being perturbed,
e.g. ``lambda: rnn.forward(xs, ys, params["h0"], params)[0]``.
"""

from dataclasses import dataclass, field

import numpy as np


def _partial(f, array, index, eps):
    """(f(θ + eps e_i) − f(θ − eps e_i)) / (2 eps) for one entry, leaving ``array`` unchanged."""
    old = array[index]
    array[index] = old + eps
    f_plus = f()
    array[index] = old - eps
    f_minus = f()
    array[index] = old  # restore exactly the original value, not old + eps − eps
    return (f_plus - f_minus) / (2.0 * eps)  # centred: error O(eps²) instead of O(eps)


def numerical_gradient(f, array, eps=1e-6):
    """Centred finite-difference gradient of the scalar ``f()`` with respect to ``array``.

    ∂f/∂θ_i ≈ (f(θ + eps e_i) − f(θ − eps e_i)) / (2 eps) for every entry i. ``array`` must be
    a float ndarray that ``f`` reads; it is perturbed in place one entry at a time and
    restored afterwards. Costs two evaluations of ``f`` per entry.
    """
    grad = np.zeros(array.shape)
    for index in np.ndindex(array.shape):
        grad[index] = _partial(f, array, index, eps)
    return grad


def relative_error(analytic, numeric, floor=1e-12):
    """Element-wise |a − n| / max(|a| + |n|, floor)."""
    return np.abs(analytic - numeric) / np.maximum(np.abs(analytic) + np.abs(numeric), floor)


@dataclass
class GradCheckReport:
    """Outcome of ``check_gradients``: worst errors overall and per parameter."""

    max_rel_error: float  # largest relative error over all checked entries
    max_abs_error: float  # largest |analytic − numeric| over all checked entries
    n_checked: int  # number of entries compared
    per_key: dict = field(default_factory=dict)  # name -> max relative error for that array

    def __str__(self):
        worst = ", ".join(f"{k}={v:.1e}" for k, v in self.per_key.items())
        return (
            f"gradcheck: {self.n_checked} entries, max rel {self.max_rel_error:.2e}, "
            f"max abs {self.max_abs_error:.2e} ({worst})"
        )


def check_gradients(loss_fn, params, grads, eps=1e-6, n_samples=None, rng=None, floor=1e-12):
    """Compare analytic ``grads`` with centred differences of ``loss_fn()``.

    params: dict name -> float ndarray, read by ``loss_fn`` and perturbed in place (then
        restored). Every name in ``params`` that also appears in ``grads`` is checked, so
        initial states can be included by putting them in ``params``.
    grads: dict name -> analytic gradient, same shape as ``params[name]``.
    n_samples: if given, check this many entries per array, drawn uniformly at random
        (with replacement) using ``rng``; otherwise check every entry.
    floor: lower bound on the denominator of the relative error (see the module docstring).
    Returns a ``GradCheckReport``; ``report.max_rel_error`` is the number to threshold.
    """
    rng = np.random.default_rng(0) if rng is None else rng
    max_rel, max_abs, n_checked, per_key = 0.0, 0.0, 0, {}
    for name, array in params.items():
        if name not in grads:
            continue  # e.g. the caller has no analytic gradient for this array
        if grads[name].shape != array.shape:
            raise ValueError(f"{name}: gradient shape {grads[name].shape} != {array.shape}")
        if n_samples is None:
            indices = list(np.ndindex(array.shape))  # exhaustive: fine for small test models
        else:
            flat = rng.integers(array.size, size=n_samples)  # random flat positions
            indices = [np.unravel_index(i, array.shape) for i in flat]
        if not indices:
            continue  # an empty array or n_samples=0: nothing to compare
        numeric = np.array([_partial(loss_fn, array, idx, eps) for idx in indices])
        analytic = np.array([grads[name][idx] for idx in indices])
        rel = relative_error(analytic, numeric, floor)
        per_key[name] = float(rel.max())
        max_rel = max(max_rel, per_key[name])
        max_abs = max(max_abs, float(np.abs(analytic - numeric).max()))
        n_checked += len(indices)
    return GradCheckReport(max_rel, max_abs, n_checked, per_key)

"""The fast path (rnnkit.fast) against the reference time loop, in float64.

Every supported cell option runs through a stacked bidirectional layer twice, once on the fast path
and once on the reference loop (``allow_fast = False``), with and without lengths; outputs, final
states and the gradients of every parameter, the input and the initial state must agree. The
autograd Functions also pass ``gradcheck`` on their own, and the fp32 (oneDNN) GEMMs are checked
at fp32 precision. Where rnnkit's native step kernels are built (a C++ compiler is present) the
fast path runs on them; the torch-op loops they replace are checked too.
"""

import itertools

import pytest
import torch

import rnnkit
from rnnkit import fast

DT = torch.float64
I, H, B, T = 3, 5, 4, 6
LENGTHS = [6, 2, 4, 1]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny shapes gain nothing from threads, and a busy machine makes idle threads costly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


CONFIGS = {
    "rnn_tanh": (rnnkit.RNN, {}),
    "rnn_relu_identity": (rnnkit.RNN, {"nonlinearity": "relu", "init": "identity"}),
    "rnn_layer_norm": (rnnkit.RNN, {"layer_norm": True}),
    "lstm": (rnnkit.LSTM, {}),
    "lstm_peephole": (rnnkit.LSTM, {"peephole": True}),
    "lstm_layer_norm": (rnnkit.LSTM, {"layer_norm": True}),
    "lstm_both": (rnnkit.LSTM, {"peephole": True, "layer_norm": True}),
    "lstm_peephole_no_bias": (rnnkit.LSTM, {"peephole": True, "bias": False}),
    "gru": (rnnkit.GRU, {}),
    "gru_layer_norm": (rnnkit.GRU, {"layer_norm": True}),
    "gru_reset_before": (rnnkit.GRU, {"reset_after": False}),
    "gru_reset_before_layer_norm": (rnnkit.GRU, {"reset_after": False, "layer_norm": True}),
    "gru_reset_before_no_bias": (rnnkit.GRU, {"reset_after": False, "bias": False}),
}


def _layer(name, fast_on, dtype=DT, **extra):
    cls, kw = CONFIGS[name]
    torch.manual_seed(0)
    layer = cls(
        I, H, num_layers=2, bidirectional=True, batch_first=True, dtype=dtype, **kw, **extra
    )
    with torch.no_grad():  # move LN gains/shifts and peepholes off their initial values
        for p in layer.parameters():
            p.add_(0.3 * torch.randn_like(p))
    layer.allow_fused = False
    layer.allow_fast = fast_on
    return layer


def _run(layer, lengths=None, training=False, dtype=DT):
    """Outputs (y, final state(s)[, cell states]) and the gradients of a random linear loss."""
    layer.train(training)
    torch.manual_seed(1)
    x = torch.randn(B, T, I, dtype=dtype, requires_grad=True)
    h0 = torch.randn(4, B, H, dtype=dtype, requires_grad=True)
    c0 = torch.randn(4, B, H, dtype=dtype, requires_grad=True)
    is_lstm = isinstance(layer, rnnkit.LSTM)
    inputs = [x, h0, c0] if is_lstm else [x, h0]
    torch.manual_seed(2)  # zoneout / weight-drop masks: the same draws on both paths
    out = layer(x, (h0, c0) if is_lstm else h0, lengths=lengths)
    tensors = [out[0], *(out[1] if is_lstm else [out[1]]), *out[2:]]
    torch.manual_seed(3)
    loss = sum((torch.randn_like(t) * t).sum() for t in tensors)
    loss.backward()
    grads = [t.grad for t in inputs] + [p.grad for p in layer.parameters()]
    return tensors, grads


def _assert_same(a, b, rtol=1e-10, atol=1e-10):
    assert len(a) == len(b)
    for k, (u, v) in enumerate(zip(a, b)):
        torch.testing.assert_close(u, v, rtol=rtol, atol=atol, msg=f"tensor {k}")


@pytest.mark.parametrize("name,use_lengths", list(itertools.product(CONFIGS, [False, True])))
def test_fast_path_equals_reference_loop(name, use_lengths):
    lengths = LENGTHS if use_lengths else None
    out_f, grads_f = _run(_layer(name, True), lengths)
    out_r, grads_r = _run(_layer(name, False), lengths)
    _assert_same(out_f, out_r)
    _assert_same(grads_f, grads_r)


@pytest.mark.parametrize(
    "name,extra,training",
    [
        ("gru", {"zoneout": 0.3}, True),
        ("gru", {"zoneout": 0.3}, False),
        ("rnn_relu_identity", {"zoneout": 0.2}, True),
        ("lstm_layer_norm", {"zoneout": 0.3}, True),
        ("lstm_peephole", {"zoneout": 0.3}, False),
        ("lstm_both", {"weight_drop": 0.4}, True),
        ("gru_reset_before", {"weight_drop": 0.4, "zoneout": 0.1}, True),
        ("lstm_layer_norm", {"return_cell_states": True}, False),
        ("lstm_peephole", {"learn_init_state": True, "zoneout": 0.2}, True),
    ],
)
def test_fast_path_extras_equal_reference_loop(name, extra, training):
    for lengths in (None, LENGTHS):
        out_f, grads_f = _run(_layer(name, True, **extra), lengths, training)
        out_r, grads_r = _run(_layer(name, False, **extra), lengths, training)
        _assert_same(out_f, out_r)
        _assert_same(grads_f, grads_r)


def test_recurrent_module_uses_fast_path_and_matches_reference():
    cell = rnnkit.LSTMCell(I, H, layer_norm=True, peephole=True, dtype=DT)
    x = torch.randn(B, T, I, dtype=DT)
    lengths = torch.tensor(LENGTHS)
    state = cell.init_state(B)
    for reverse in (False, True):
        y_f, s_f, _ = rnnkit.layers.run_direction(cell, x, state, lengths, reverse, fast=True)
        y_r, s_r, _ = rnnkit.layers.run_direction(cell, x, state, lengths, reverse, fast=False)
        _assert_same([y_f, *s_f], [y_r, *s_r])


@pytest.mark.parametrize("name", ["lstm_both", "gru_layer_norm", "gru_reset_before", "rnn_tanh"])
def test_backward_twice_with_retained_graph_gives_the_same_gradients(name):
    """The backward must not consume what the forward saved (retain_graph, diagnostics)."""
    layer = _layer(name, True)
    x = torch.randn(B, T, I, dtype=DT, requires_grad=True)
    loss = layer(x, lengths=LENGTHS)[0].square().sum()
    first = torch.autograd.grad(loss, [x, *layer.parameters()], retain_graph=True)
    second = torch.autograd.grad(loss, [x, *layer.parameters()])
    _assert_same(first, second, rtol=0, atol=0)


def test_dispatch_prefers_fast_path_on_cpu_for_gru_and_rnn_only():
    assert not rnnkit.GRU(I, H)._fusable
    assert not rnnkit.RNN(I, H, nonlinearity="relu")._fusable
    assert rnnkit.LSTM(I, H)._fusable  # oneDNN's fused LSTM stays
    layer = rnnkit.GRU(I, H)
    layer.allow_fast = False
    assert layer._fusable
    assert fast.layer_supported(rnnkit.LSTM(I, H, layer_norm=True))


@pytest.mark.parametrize("strided", [True, False])
@pytest.mark.parametrize("x_rows", ["contiguous", "strided"])
def test_linear_matches_functional_linear(strided, x_rows, monkeypatch):
    """rnnkit.fast.linear (oneDNN on fp32 CPU, ∂x from the transposed weight in place or from a
    copy; ∂W on the native kernel where built) gives F.linear's output and gradients to fp32
    rounding, also for an input whose features are not contiguous."""
    fast._onednn_works()
    if strided and not fast._ONEDNN_STRIDED:
        pytest.skip("this torch's oneDNN linear wants a contiguous weight")
    monkeypatch.setattr(fast, "_ONEDNN_STRIDED", strided)
    torch.manual_seed(0)
    x = torch.randn(4, 9, 33) if x_rows == "contiguous" else torch.randn(4, 9, 66)[..., ::2]
    w, b = torch.randn(70, 33), torch.randn(70)
    grads = []
    for fn in (fast.linear, torch.nn.functional.linear):
        args = [t.clone().requires_grad_() for t in (x, w, b)]
        y = fn(*args)
        y.backward(torch.cos(y.detach()))
        grads.append([y.detach()] + [t.grad for t in args])
    for ours, ref in zip(*grads):
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize(
    "name",
    [
        "rnn_tanh",
        "lstm_both",
        "lstm_peephole",
        "gru",
        "gru_reset_before",
        "gru_reset_before_layer_norm",
    ],
)
def test_float32_fast_path_matches_reference(name):
    """fp32 runs the oneDNN GEMMs (where available): equal to fp32 rounding."""
    out_f, grads_f = _run(_layer(name, True, dtype=torch.float32), LENGTHS, dtype=torch.float32)
    out_r, grads_r = _run(_layer(name, False, dtype=torch.float32), LENGTHS, dtype=torch.float32)
    _assert_same(out_f, out_r, rtol=1e-4, atol=1e-5)
    _assert_same(grads_f, grads_r, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------------------------
# gradcheck of the autograd Functions on their own
# ---------------------------------------------------------------------------------------------
def _params(names_sizes):
    return {
        name: (torch.randn(*size, dtype=DT) * 0.5).requires_grad_() for name, size in names_sizes
    }


def _alpha(kind, shape):
    if kind is None:
        return None
    if kind == "mask":
        return (torch.arange(shape[0]).view(-1, 1, 1) < torch.tensor([3, 1]).view(1, -1, 1)).to(DT)
    return torch.rand(shape, dtype=DT)  # any blend coefficients in [0, 1]


GRAD_T, GRAD_B, GRAD_H = 3, 2, 3


@pytest.mark.parametrize(
    "family,options,alpha",
    [
        ("rnn", {"nonlinearity": "tanh"}, None),
        ("rnn", {"nonlinearity": "relu"}, "mask"),
        ("rnn", {"nonlinearity": "tanh", "layer_norm": True}, "rand"),
        ("lstm", {}, None),
        ("lstm", {"peephole": True}, "rand"),
        ("lstm", {"layer_norm": True}, "mask"),
        ("lstm", {"peephole": True, "layer_norm": True}, "rand"),
        ("gru", {"reset_after": True}, None),
        ("gru", {"reset_after": True, "layer_norm": True}, "rand"),
        ("gru", {"reset_after": False}, "mask"),
        ("gru", {"reset_after": False, "layer_norm": True}, "rand"),
    ],
)
@pytest.mark.parametrize("native", [True, False], ids=["native", "torch-ops"])
def test_functions_pass_gradcheck(family, options, alpha, native, monkeypatch):
    monkeypatch.setattr(fast, "NATIVE", native)
    torch.manual_seed(7)
    Tn, Bn, Hn = GRAD_T, GRAD_B, GRAD_H
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[family] * Hn
    sizes = [("weight_hh", (gates, Hn)), ("bias_hh", (gates,))]
    if options.get("layer_norm"):
        sizes += [("ln_hh_weight", (gates,)), ("ln_hh_bias", (gates,))]
        if family == "lstm":
            sizes += [("ln_c_weight", (Hn,)), ("ln_c_bias", (Hn,))]
    if options.get("peephole"):
        sizes += [(f"weight_c{g}", (Hn,)) for g in "ifo"]
    params = _params(sizes)
    names = list(params)
    xp = torch.randn(Tn, Bn, gates, dtype=DT, requires_grad=True)
    h0 = torch.randn(Bn, Hn, dtype=DT, requires_grad=True)
    c0 = torch.randn(Bn, Hn, dtype=DT, requires_grad=True)
    a_h, a_c = _alpha(alpha, (Tn, Bn, Hn)), _alpha(alpha, (Tn, Bn, Hn))

    def f(xp, h0, c0, *values):
        p = dict(zip(names, values))
        if family == "lstm":
            return fast.lstm_sequence(xp, h0, c0, p, alpha_h=a_h, alpha_c=a_c, **options)
        if family == "gru":
            return fast.gru_sequence(xp, h0, p, alpha=a_h, **options)
        return fast.rnn_sequence(xp, h0, p, alpha=a_h, **options)

    inputs = (xp, h0, c0, *params.values())
    assert torch.autograd.gradcheck(f, inputs)


# ---------------------------------------------------------------------------------------------
# The native step kernels (rnnkit/native) against the torch-op loops (the main tests above run
# the native kernels wherever they are built)
# ---------------------------------------------------------------------------------------------
# the configurations with native kernels: LSTM variants (the fused-kernel-free ones) and GRU
NATIVE_CONFIGS = [
    n for n in CONFIGS if n.startswith("lstm") or (n.startswith("gru") and "layer_norm" not in n)
]


@pytest.fixture
def torch_op_loops(monkeypatch):
    monkeypatch.setattr(fast, "NATIVE", False)


@pytest.fixture
def native_kernels():
    from rnnkit import native

    if not native.available():
        pytest.skip("the native kernels could not be built here (no C++ compiler?)")


@pytest.mark.parametrize("name,use_lengths", list(itertools.product(NATIVE_CONFIGS, [False, True])))
def test_torch_op_loops_equal_reference_loop(name, use_lengths, torch_op_loops):
    """The pure-torch fast path stays correct where the native kernels are not built."""
    lengths = LENGTHS if use_lengths else None
    out_f, grads_f = _run(_layer(name, True), lengths)
    out_r, grads_r = _run(_layer(name, False), lengths)
    _assert_same(out_f, out_r)
    _assert_same(grads_f, grads_r)


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("alpha", [None, "mask", "rand"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step-loops"])
def test_native_gru_is_used_and_passes_gradcheck(
    reset_after, alpha, fused, native_kernels, monkeypatch
):
    monkeypatch.setattr(fast, "FUSED", fused)
    xp = torch.randn(GRAD_T, GRAD_B, 3 * GRAD_H, dtype=DT, requires_grad=True)
    assert fast._use_fused(xp) == fused
    assert fast._use_native(xp, None) and not fast._use_native(xp, torch.ones(1))
    torch.manual_seed(8)
    w = (torch.randn(3 * GRAD_H, GRAD_H, dtype=DT) * 0.5).requires_grad_()
    b = (torch.randn(3 * GRAD_H, dtype=DT) * 0.5).requires_grad_()
    h0 = torch.randn(GRAD_B, GRAD_H, dtype=DT, requires_grad=True)
    a = _alpha(alpha, (GRAD_T, GRAD_B, GRAD_H))

    def f(xp, h0, w, b):
        p = {"weight_hh": w, "bias_hh": b}
        return fast.gru_sequence(xp, h0, p, reset_after=reset_after, alpha=a)

    assert torch.autograd.gradcheck(f, (xp, h0, w, b))


@pytest.mark.parametrize("reset_after", [True, False])
def test_native_gru_float32_matches_torch_op_loops(reset_after, native_kernels, monkeypatch):
    """fp32 uses the kernels' own exp: equal to fp32 rounding, saturating without inf/NaN for
    huge pre-activations, and still propagating a NaN."""
    torch.manual_seed(9)
    Hn = 37  # not a multiple of the vector width: the loops' remainders run too
    w = torch.randn(3 * Hn, Hn) * 0.3
    b = torch.randn(3 * Hn)
    xp = torch.randn(7, 5, 3 * Hn) * 3
    xp[0, 0, :5] = torch.tensor([200.0, -200.0, 90.0, -90.0, 0.0])
    h0 = torch.randn(5, Hn)
    a = _alpha("rand", (7, 5, Hn)).float()
    outs = []
    for use_native in (True, False):
        monkeypatch.setattr(fast, "NATIVE", use_native)
        leaves = [t.clone().requires_grad_() for t in (xp, h0, w, b)]
        p = {"weight_hh": leaves[2], "bias_hh": leaves[3]}
        hs = fast.gru_sequence(leaves[0], leaves[1], p, reset_after=reset_after, alpha=a)
        hs.backward(torch.linspace(-1, 1, hs.numel()).view_as(hs))
        outs.append([hs.detach(), *(t.grad for t in leaves)])
    assert all(torch.isfinite(t).all() for t in outs[0])
    _assert_same(outs[0], outs[1], rtol=1e-4, atol=1e-5)

    monkeypatch.setattr(fast, "NATIVE", True)
    xp[3, 1, 0] = float("nan")
    hs = fast.gru_sequence(xp, h0, {"weight_hh": w, "bias_hh": b}, reset_after=reset_after)
    assert torch.isnan(hs[3:, 1]).any() and torch.isfinite(hs[:3]).all()


@pytest.mark.parametrize("name", ["lstm_layer_norm", "lstm_both"])
def test_native_lstm_float32_matches_torch_op_loops(name, native_kernels, monkeypatch):
    """fp32 LN/peephole LSTM on the native kernel: equal to the torch-op loop to fp32 rounding."""
    outs = []
    for use_native in (True, False):
        monkeypatch.setattr(fast, "NATIVE", use_native)
        outs.append(_run(_layer(name, True, dtype=torch.float32), LENGTHS, dtype=torch.float32))
    _assert_same(outs[0][0], outs[1][0], rtol=1e-4, atol=1e-5)
    _assert_same(outs[0][1], outs[1][1], rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("name", ["gru", "gru_reset_before", "lstm_layer_norm", "lstm_both"])
@pytest.mark.parametrize("fused", [True, False], ids=["fused", "step-loops"])
def test_native_loops_with_onednn_step_gemms(name, fused, native_kernels, monkeypatch):
    """At sizes where the step GEMMs run on oneDNN (called from the native time loop), the native
    path still equals the torch-op loops to fp32 rounding, and so do the fused sequences."""
    monkeypatch.setattr(fast, "FUSED", fused)
    cls, kw = CONFIGS[name]
    Hn, Bn = 256, 16
    torch.manual_seed(10)
    layer = cls(Hn, Hn, batch_first=True, **kw)
    x = torch.randn(Bn, 5, Hn)
    lengths = torch.tensor([5, 3] * (Bn // 2))
    if not fast._pack(layer.weight_hh_l0, Bn)[1]:
        pytest.skip("no oneDNN step GEMMs here")
    results = []
    for use_native in (True, False):
        monkeypatch.setattr(fast, "NATIVE", use_native)
        xi = x.clone().requires_grad_()
        out = layer(xi, lengths=lengths)
        y = out[0]
        loss = (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum()
        results.append([y.detach(), *torch.autograd.grad(loss, [xi, *layer.parameters()])])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-4 * float(b.abs().max()) + 1e-6)


# ---------------------------------------------------------------------------------------------
# The fused GRU sequences (rnnkit/native/gru_fused.cpp) and their tile GEMM, on two threads so that
# the thread team splits the hidden units and the barriers between steps matter
# ---------------------------------------------------------------------------------------------
@pytest.fixture
def two_threads():
    threads = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(threads)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (13, 37, 50), (32, 128, 384), (40, 7, 100)])
def test_tile_gemm_matches_mm(dtype, m, k, n, native_kernels, two_threads):
    """Tiles of every width (1–3 panels) and height (1–12 rows), units past n ignored."""
    if not torch.ops.rnnkit_native.tile_gemm_supported(torch.zeros(1, dtype=dtype)):
        pytest.skip("no tile GEMM for this dtype on this CPU")
    torch.manual_seed(11)
    a, b = torch.randn(m, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
    c = torch.ops.rnnkit_native.panel_mm(a, fast._panels(b), n)
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(c, a @ b, rtol=tol, atol=tol * k)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "k,m,n,k0",
    [(1, 1, 1, 0), (37, 13, 50, 0), (300, 20, 37, 5), (600, 8, 16, 0), (513, 17, 100, 513),
     (700, 130, 48, 32), (0, 5, 7, 0)],
)  # fmt: skip
def test_weight_grad_matches_mm(dtype, k, m, n, k0, native_kernels, two_threads):
    """dyᵀ [x0; x] and the column sums of dy: k blocks of 256 rows split at the x0 boundary,
    partial row tiles (m not a multiple of 8), 1–3 vector column tiles with tails, a dy that is a
    column slice of a wider buffer and a result written into a row slice."""
    torch.manual_seed(13)
    wide = torch.randn(k, m + 5, dtype=dtype)
    dy = wide[:, 2 : 2 + m]  # row stride m + 5
    x = torch.randn(k + 3, n, dtype=dtype)  # rows past k − k0 are not read
    x0 = torch.randn(k0, n, dtype=dtype) if k0 else None
    out = torch.full((m + 2, n), float("nan"), dtype=dtype)[1 : m + 1]
    db = torch.ops.rnnkit_native.weight_grad(dy, x, x0, out, True)
    rhs = x[:k] if x0 is None else torch.cat([x0, x[: k - k0]])
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, dy.t() @ rhs, rtol=tol, atol=tol * max(k, 1))
    torch.testing.assert_close(db, dy.sum(0), rtol=tol, atol=tol * max(k, 1))
    assert torch.ops.rnnkit_native.weight_grad(dy, x, x0, out, False) is None


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
@pytest.mark.parametrize(
    "k,m1,m2,n,k0",
    [(1, 8, 1, 1, 0), (37, 16, 13, 50, 0), (300, 24, 20, 37, 5), (700, 128, 64, 48, 32),
     (5, 0, 9, 7, 0)],
)  # fmt: skip
def test_weight_grad_two_dy_operands(dtype, k, m1, m2, n, k0, native_kernels, two_threads):
    """[dy dy2]ᵀ [x0; x] and its column sums, ∂y's columns read from two tensors (dy2 after dy's
    m1, a multiple of 8, columns): tiles on both sides of the boundary, a thread's slab that spans
    it, dy2 a column slice, a partial last tile in dy2."""
    torch.manual_seed(15)
    dy = torch.randn(k, m1 + 3, dtype=dtype)[:, :m1]
    dy2 = torch.randn(k, m2 + 4, dtype=dtype)[:, 1 : 1 + m2]
    x = torch.randn(k + 1, n, dtype=dtype)
    x0 = torch.randn(k0, n, dtype=dtype) if k0 else None
    out = torch.full((m1 + m2, n), float("nan"), dtype=dtype)
    db = torch.ops.rnnkit_native.weight_grad(dy, x, x0, out, True, dy2)
    both = torch.cat([dy, dy2], 1)
    rhs = x[:k] if x0 is None else torch.cat([x0, x[: k - k0]])
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    torch.testing.assert_close(out, both.t() @ rhs, rtol=tol, atol=tol * k)
    torch.testing.assert_close(db, both.sum(0), rtol=tol, atol=tol * k)
    if m2 % 8:  # dy2 first: a tile would straddle the two tensors
        with pytest.raises(RuntimeError, match="multiple of 8"):
            torch.ops.rnnkit_native.weight_grad(dy2, x, x0, out, False, dy)


@pytest.mark.parametrize("backend", ["native", "mm"])
@pytest.mark.parametrize("n2", [24, 13])
def test_weight_grads_helper_two_dy_operands(backend, n2, native_kernels, monkeypatch):
    """_grad_weight_prev with ∂y split in two tensors equals the product of their concatenation,
    on either backend and whether or not the first width suits the kernel's tiles."""
    monkeypatch.setattr(fast, "WGRAD_BACKEND", backend)
    torch.manual_seed(16)
    T, B, H = 6, 10, 21
    dy, dy2 = torch.randn(T, B, n2), torch.randn(T, B, 11)
    h0, hs = torch.randn(B, H), torch.randn(T, B, H)
    g, db = fast._grad_weight_prev(dy, h0, hs, bias=True, dy2=dy2)
    both = torch.cat([dy, dy2], 2).reshape(T * B, -1)
    h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).reshape(T * B, H)
    torch.testing.assert_close(g, both.t() @ h_prev, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(db, both.sum(0), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("backend", ["native", "mm"])
def test_weight_grads_helper_backends_agree(backend, native_kernels, monkeypatch):
    """rnnkit.fast._weight_grads gives the same product and bias sum on either backend, with and
    without the h_0 rows (float32, where the native kernel runs)."""
    monkeypatch.setattr(fast, "WGRAD_BACKEND", backend)
    torch.manual_seed(14)
    T, B, N, H = 9, 12, 70, 33
    dy, h0, hs = torch.randn(T, B, N), torch.randn(B, H), torch.randn(T, B, H)
    g, db = fast._grad_weight_prev(dy, h0, hs, bias=True)
    h_prev = torch.cat([h0.unsqueeze(0), hs[:-1]]).reshape(T * B, H)
    torch.testing.assert_close(g, dy.reshape(T * B, N).t() @ h_prev, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(db, dy.sum((0, 1)), rtol=1e-5, atol=1e-4)
    assert fast._grad_weight_prev(dy, h0, hs)[1] is None


def _gru_grads(reset_after, xp, h0, w, b, alpha, g_hs):
    leaves = [t.clone().requires_grad_() for t in (xp, h0, w, b)]
    hs = fast.gru_sequence(
        leaves[0],
        leaves[1],
        {"weight_hh": leaves[2], "bias_hh": leaves[3]},
        reset_after=reset_after,
        alpha=alpha,
    )
    grads = torch.autograd.grad(hs, leaves, g_hs)
    return [hs.detach(), *grads]


@pytest.mark.parametrize("reset_after", [True, False])
@pytest.mark.parametrize("alpha", [None, "mask", "rand"])
@pytest.mark.parametrize(
    "t,b,h",
    [(1, 1, 5), (4, 13, 16), (3, 27, 37), (5, 4, 100)],
    ids=["one-step", "one-panel", "tails", "many-panels"],
)
def test_fused_gru_equals_step_loops(
    reset_after, alpha, t, b, h, native_kernels, two_threads, monkeypatch
):
    """float64: the fused sequences equal the native step-by-step loops (every gradient), for
    batch and unit counts that leave partial tiles and panels, and with a gradient on the last
    state only (``g_hs`` zero elsewhere) as well as on every step, and with the gradient of a
    batch-first output (a transposed view, which the fused backward reads in place)."""
    torch.manual_seed(12)
    xp = torch.randn(t, b, 3 * h, dtype=DT)
    h0 = torch.randn(b, h, dtype=DT)
    w = torch.randn(3 * h, h, dtype=DT) * 0.4
    bias = torch.randn(3 * h, dtype=DT)
    a = None if alpha is None else torch.rand(t, b, h, dtype=DT)
    if alpha == "mask":  # lengths: (T, B, 1) step masks
        a = (torch.arange(t).view(-1, 1, 1) < torch.randint(1, t + 1, (1, b, 1))).to(DT)
    batch_first = torch.randn(b, t, h, dtype=DT).transpose(0, 1)
    for g_hs in (torch.randn(t, b, h, dtype=DT), torch.zeros(t, b, h, dtype=DT), batch_first):
        g_hs[-1] = 1.0
        results = []
        for fused in (True, False):
            monkeypatch.setattr(fast, "FUSED", fused)
            results.append(_gru_grads(reset_after, xp, h0, w, bias, a, g_hs))
        _assert_same(results[0], results[1])


@pytest.mark.parametrize(
    "options",
    [{"peephole": True}, {"layer_norm": True}, {"peephole": True, "layer_norm": True}],
    ids=["peephole", "layer_norm", "both"],
)
@pytest.mark.parametrize("alpha", [None, "rand"])
@pytest.mark.parametrize("t,b,h", [(1, 16, 5), (4, 19, 37)], ids=["one-step", "tails"])
def test_fused_lstm_equals_step_loops(
    options, alpha, t, b, h, native_kernels, two_threads, monkeypatch
):
    """float64: the fused LSTM sequence (batch rows split between threads) equals the native
    step-by-step loop, every gradient included, with gradients on every h_t and the last c."""
    torch.manual_seed(13)
    shapes = {"weight_hh": (4 * h, h), "bias_hh": (4 * h,)}
    if options.get("peephole"):
        shapes.update({f"weight_c{g}": (h,) for g in "ifo"})
    if options.get("layer_norm"):
        shapes.update(
            {
                "ln_hh_weight": (4 * h,),
                "ln_hh_bias": (4 * h,),
                "ln_c_weight": (h,),
                "ln_c_bias": (h,),
            }
        )
    values = {k: torch.randn(s, dtype=DT) * 0.4 for k, s in shapes.items()}
    xp, h0, c0 = torch.randn(t, b, 4 * h, dtype=DT), *torch.randn(2, b, h, dtype=DT)
    a_h = a_c = None if alpha is None else torch.rand(t, b, h, dtype=DT)
    # batch-first layouts (transposed views), which the fused backward reads in place
    g_hs, g_cs = torch.randn(b, t, h, dtype=DT), torch.zeros(b, t, h, dtype=DT)
    g_hs, g_cs = g_hs.transpose(0, 1), g_cs.transpose(0, 1)
    g_cs[-1] = torch.randn(b, h, dtype=DT)
    results = []
    for fused in (True, False):
        monkeypatch.setattr(fast, "FUSED", fused)
        leaves = [v.clone().requires_grad_() for v in (xp, h0, c0, *values.values())]
        params = dict(zip(values, leaves[3:]))
        hs, cs = fast.lstm_sequence(*leaves[:3], params, alpha_h=a_h, alpha_c=a_c, **options)
        grads = torch.autograd.grad((hs, cs), leaves, (g_hs, g_cs))
        results.append([hs.detach(), cs.detach(), *grads])
    _assert_same(results[0], results[1])


@pytest.mark.parametrize("relu", [False, True], ids=["tanh", "relu"])
@pytest.mark.parametrize("alpha", [None, "mask", "rand"])
@pytest.mark.parametrize("t,b,h", [(1, 16, 5), (4, 19, 37)], ids=["one-step", "tails"])
def test_fused_rnn_equals_torch_op_loop(
    relu, alpha, t, b, h, native_kernels, two_threads, monkeypatch
):
    """float64: the fused Elman RNN (batch rows split between threads) equals the TorchScript
    loop, every gradient included."""
    torch.manual_seed(14)
    xp, h0 = torch.randn(t, b, h, dtype=DT), torch.randn(b, h, dtype=DT)
    w, bias = torch.randn(h, h, dtype=DT) * 0.4, torch.randn(h, dtype=DT)
    a = None if alpha is None else torch.rand(t, b, h, dtype=DT)
    if alpha == "mask":
        a = (torch.arange(t).view(-1, 1, 1) < torch.randint(1, t + 1, (1, b, 1))).to(DT)
    g_hs = torch.randn(b, t, h, dtype=DT).transpose(0, 1)  # a batch-first output's gradient
    results = []
    for fused in (True, False):
        monkeypatch.setattr(fast, "FUSED", fused)
        leaves = [v.clone().requires_grad_() for v in (xp, h0, w, bias)]
        params = {"weight_hh": leaves[2], "bias_hh": leaves[3]}
        hs = fast.rnn_sequence(leaves[0], leaves[1], params, "relu" if relu else "tanh", alpha=a)
        results.append([hs.detach(), *torch.autograd.grad(hs, leaves, g_hs)])
    _assert_same(results[0], results[1])

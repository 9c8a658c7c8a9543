"""rnnkit.modern: every parallel path equals the step path, autograd equals the NumPy references.

In float64, for minGRU, minLSTM, QRNN (windows 1 and 2), SRU and mLSTM:
1. each ``sequence`` path (native loop, log-space scan, chunked scan, mLSTM parallel/chunkwise)
   gives the step path's outputs, final state and gradients (parameters, input, initial state),
   with mixed lengths, a carried non-zero state, reversed and stacked-bidirectional layers;
2. the layers' autograd gradients equal the hand-written NumPy backward passes of
   ``rnnkit.reference`` (which themselves pass a finite-difference check and import no torch);
3. the native QRNN/SRU/minGRU/minLSTM loops pass ``torch.autograd.gradcheck``;
4. the chunked log-space scan equals the unchunked one and the sequential loop.
"""

import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.modern import MLSTM, QRNN, SRU, MinGRU, MinGRUCell, MinLSTM, native
from rnnkit.modern.base import select_state
from rnnkit.modern.scan import chunked_log_scan, linear_scan_loop, log_scan
from rnnkit.reference import gradcheck as ref_gradcheck
from rnnkit.reference import mingru as ref_mingru
from rnnkit.reference import minlstm as ref_minlstm
from rnnkit.reference import mlstm as ref_mlstm
from rnnkit.reference import qrnn as ref_qrnn
from rnnkit.reference import sru as ref_sru

DT = torch.float64
B, T, I, H = 4, 6, 4, 4
LENGTHS = [6, 2, 5, 1]
NATIVE = native.available()

# name -> (layer class, cell options, parallel paths to check against "loop")
CELLS = {
    "mingru": (MinGRU, {}, ["native", "log"]),
    "mingru-chunked": (MinGRU, {"chunk_size": 4}, ["log"]),
    "minlstm": (MinLSTM, {"chunk_size": 5}, ["native", "log"]),
    "qrnn": (QRNN, {}, ["native"]),
    "qrnn-window2": (QRNN, {"window": 2}, ["native"]),
    "sru": (SRU, {}, ["native"]),
    "mlstm": (MLSTM, {"num_heads": 2, "chunk_size": 4}, ["parallel", "chunkwise"]),
}
LAYOUTS = {
    "forward": {},
    "reverse": {"reverse": True},
    "stacked-bidirectional": {"num_layers": 2, "bidirectional": True},
}
CASES = [
    (cell, path, layout)
    for cell, (_, _, paths) in CELLS.items()
    for path in paths
    for layout in LAYOUTS
]


def _fields(state):
    return [state] if isinstance(state, torch.Tensor) else list(state)


def _layer(name, **kw):
    cls, options, _ = CELLS[name]
    torch.manual_seed(0)
    layer = cls(I, H, batch_first=True, dtype=DT, **options, **kw)
    with torch.no_grad():  # gates of both signs and sizes, not just the initial ranges
        for p in layer.parameters():
            p.normal_(0.0, 0.7)
    return layer


def _random_state(layer, generator):
    state = layer.init_state(B)
    return (
        type(state)(*[torch.randn(t.shape, dtype=DT, generator=generator) for t in state])
        if (not isinstance(state, torch.Tensor))
        else torch.randn(state.shape, dtype=DT, generator=generator)
    )


def _run(layer, path, x, state, lengths):
    """Outputs, final state and every gradient of a random linear functional of them."""
    layer.path = path
    layer.zero_grad()
    x = x.clone().requires_grad_()
    state = (
        type(state)(*[t.clone().requires_grad_() for t in _fields(state)])
        if (not isinstance(state, torch.Tensor))
        else state.clone().requires_grad_()
    )
    y, final = layer(x, state, lengths)
    gen = torch.Generator().manual_seed(1)
    outs = [y, *_fields(final)]
    loss = sum((torch.randn(o.shape, dtype=DT, generator=gen) * o).sum() for o in outs)
    loss.backward()
    grads = [p.grad for p in layer.parameters()] + [x.grad] + [t.grad for t in _fields(state)]
    return outs, grads


@pytest.mark.parametrize("name,path,layout", CASES)
def test_parallel_path_equals_step_path(name, path, layout):
    if path == "native" and not NATIVE:
        pytest.skip("native loops not built on this machine")
    layer = _layer(name, **LAYOUTS[layout])
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(B, T, I, dtype=DT, generator=gen)
    state = _random_state(layer, gen)
    for lengths in (None, LENGTHS):
        outs_p, grads_p = _run(layer, path, x, state, lengths)
        outs_s, grads_s = _run(layer, "loop", x, state, lengths)
        for a, b in zip(outs_p + grads_p, outs_s + grads_s):
            torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
        if lengths is not None:  # outputs past each sequence's end are zero
            y = outs_p[0]
            for b, L in enumerate(lengths):
                assert torch.all(y[b, L:] == 0)


@pytest.mark.parametrize("name", list(CELLS))
def test_carried_state_equals_one_pass(name):
    """Truncated BPTT: two windows with the state carried give the one-pass outputs."""
    layer = _layer(name, num_layers=2)
    x = torch.randn(B, T, I, dtype=DT, generator=torch.Generator().manual_seed(3))
    y, final = layer(x)
    y1, s1 = layer(x[:, :2])
    y2, s2 = layer(x[:, 2:], s1)
    torch.testing.assert_close(torch.cat([y1, y2], 1), y, rtol=1e-10, atol=1e-12)
    for a, b in zip(_fields(s2), _fields(final)):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", list(CELLS))
def test_step_cell_contract(name):
    """``cell(x_t, state)`` one step at a time (generation) equals the layer; time-major default."""
    layer = _layer(name)
    cell = layer.cells[0]
    x = torch.randn(T, B, I, dtype=DT, generator=torch.Generator().manual_seed(4))
    layer.batch_first = False
    y, final = layer(x)
    state = cell.init_state(B)
    for t in range(T):
        h, state = cell(x[t], state)
        torch.testing.assert_close(h, y[t], rtol=1e-10, atol=1e-12)
    for a, b in zip(_fields(state), _fields(select_state(final, 0))):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match="expected a state"):
        cell(x[0], torch.zeros(B, H + 1, dtype=DT))


def test_fallback_without_native(monkeypatch):
    """Where the native build is unavailable the torch paths run and give the same numbers."""
    x = torch.randn(B, T, I, dtype=DT, generator=torch.Generator().manual_seed(5))
    layers = {name: _layer(name) for name in ("mingru", "qrnn-window2", "sru")}
    before = {name: layer(x, lengths=LENGTHS)[0] for name, layer in layers.items()}
    monkeypatch.setattr(native, "usable", lambda u: False)
    assert layers["mingru"].cells[0].default_path(x) == "log"
    assert layers["sru"].cells[0].default_path(x) == "loop"
    for name, layer in layers.items():
        torch.testing.assert_close(layer(x, lengths=LENGTHS)[0], before[name])


def test_bad_arguments():
    with pytest.raises(ValueError, match="path must be"):
        MinGRU(I, H, path="fast")(torch.zeros(T, B, I))
    with pytest.raises(ValueError, match="window must be 1 or 2"):
        QRNN(I, H, window=3)
    with pytest.raises(ValueError, match="multiple of num_heads"):
        MLSTM(I, 6, num_heads=4)
    with pytest.raises(ValueError, match="reverse=True is for a unidirectional"):
        SRU(I, H, reverse=True, bidirectional=True)
    with pytest.raises(ValueError, match="input features"):
        MinLSTM(I, H)(torch.zeros(T, B, I + 1))


# ---------------------------------------------------------------------------------------------
# The NumPy references
# ---------------------------------------------------------------------------------------------
def _to_np(t):
    return t.detach().numpy()


def _torch_cell_run(cell, x_tb, state, path):
    """Run one cell's sequence path on time-major NumPy input; outputs, state and gradients."""
    cell.zero_grad()
    x = torch.tensor(x_tb.transpose(1, 0, 2)).requires_grad_()  # (B, T, I)
    state = [torch.tensor(s).requires_grad_() for s in state]
    s0 = state[0] if len(state) == 1 else type(cell.init_state(1))(*state)
    y, final = cell.sequence(x, s0, None, path)
    gen = np.random.default_rng(7)
    dy = gen.standard_normal(y.shape)
    dfinal = [gen.standard_normal(f.shape) for f in _fields(final)]
    loss = (torch.tensor(dy) * y).sum() + sum(
        (torch.tensor(d) * f).sum() for d, f in zip(dfinal, _fields(final))
    )
    loss.backward()
    grads = {name: _to_np(p.grad) for name, p in cell.named_parameters()}
    grads["xs"] = _to_np(x.grad).transpose(1, 0, 2)
    return (
        _to_np(y).transpose(1, 0, 2),
        [_to_np(f) for f in _fields(final)],
        grads,
        [_to_np(s.grad) for s in state],
        dy.transpose(1, 0, 2),
        dfinal,
    )


def _load(cell, params):
    with torch.no_grad():
        for name, p in cell.named_parameters():
            p.copy_(torch.tensor(params[name]))


# name -> (reference module, torch cell factory, params factory, state names)
def _ref_cases():
    rng = np.random.default_rng(0)
    return {
        "mingru": (ref_mingru, MinGRU, {}, ref_mingru.init_params(3, H, rng), ["h0"]),
        "minlstm": (ref_minlstm, MinLSTM, {}, ref_minlstm.init_params(3, H, rng), ["h0"]),
        "qrnn": (ref_qrnn, QRNN, {}, ref_qrnn.init_params(3, H, 1, rng), ["c0"]),
        "qrnn-window2": (
            ref_qrnn,
            QRNN,
            {"window": 2},
            ref_qrnn.init_params(3, H, 2, rng),
            ["c0", "prev0"],
        ),
        "sru-identity-highway": (ref_sru, SRU, {}, ref_sru.init_params(H, H, rng), ["c0"]),
        "sru-projected-highway": (ref_sru, SRU, {}, ref_sru.init_params(3, H, rng), ["c0"]),
        "mlstm": (
            ref_mlstm,
            MLSTM,
            {"num_heads": 2, "chunk_size": 2},
            ref_mlstm.init_params(3, H, 2, rng),
            ["C0", "n0", "m0"],
        ),
    }


def _ref_run(module, name, xs, state, params, dy=None, dfinal=None):
    if module is ref_mlstm:
        ys, cache = module.forward(xs, state, params, num_heads=2)
        final = list(cache["state"])
        grads = module.backward(cache, params, dy, dfinal) if dy is not None else None
    elif module is ref_qrnn:
        ys, cache = module.forward(xs, state[0], params, *state[1:])
        final = [cache["cs"][-1]] + ([cache["prev"]] if cache["window"] == 2 else [])
        grads = module.backward(cache, params, dy, *dfinal) if dy is not None else None
    else:
        ys, cache = module.forward(xs, state[0], params)
        final = [cache["hs"][-1] if "hs" in cache else cache["cs"][-1]]
        grads = module.backward(cache, params, dy, dfinal[0]) if dy is not None else None
    return ys, final, grads


@pytest.mark.parametrize("name", list(_ref_cases()))
def test_autograd_equals_numpy_reference(name):
    module, cls, options, params, state_names = _ref_cases()[name]
    rng = np.random.default_rng(1)
    input_size = params["weight_ih"].shape[1]
    xs = rng.standard_normal((5, 3, input_size))
    layer = cls(input_size, H, dtype=DT, **options)
    cell = layer.cells[0]
    _load(cell, params)
    state = [rng.standard_normal(t.shape) for t in _fields(cell.init_state(3))]
    for path in [*cell.paths, "loop"]:
        if path == "native" and not NATIVE:
            continue
        ys, final, grads, state_grads, dy, dfinal = _torch_cell_run(cell, xs, state, path)
        ref_ys, ref_final, ref_grads = _ref_run(module, name, xs, state, params, dy, dfinal)
        np.testing.assert_allclose(ys, ref_ys, rtol=1e-10, atol=1e-12)
        for a, b in zip(final, ref_final):
            np.testing.assert_allclose(a, b, rtol=1e-10, atol=1e-12)
        for key, value in grads.items():
            np.testing.assert_allclose(value, ref_grads[key], rtol=1e-9, atol=1e-11, err_msg=key)
        for key, value in zip(state_names, state_grads):
            np.testing.assert_allclose(value, ref_grads[key], rtol=1e-9, atol=1e-11, err_msg=key)


@pytest.mark.parametrize("name", list(_ref_cases()))
def test_numpy_reference_finite_differences(name):
    """The hand-written backward passes agree with centred differences of their forward."""
    module, _, _, params, state_names = _ref_cases()[name]
    rng = np.random.default_rng(2)
    xs = rng.standard_normal((4, 2, params["weight_ih"].shape[1]))
    probe = _ref_run(module, name, xs, _zero_like_state(module, params), params)
    state = [rng.standard_normal(s.shape) for s in probe[1]]
    dy = rng.standard_normal(probe[0].shape)
    dfinal = [rng.standard_normal(s.shape) for s in probe[1]]
    arrays = dict(params, xs=xs, **dict(zip(state_names, state)))

    def loss():
        ys, final, _ = _ref_run(
            module, name, arrays["xs"], [arrays[k] for k in state_names], arrays
        )
        return float((dy * ys).sum() + sum((d * f).sum() for d, f in zip(dfinal, final)))

    _, _, grads = _ref_run(module, name, xs, state, params, dy, dfinal)
    report = ref_gradcheck.check_gradients(loss, arrays, grads, eps=1e-6, floor=1e-3)
    assert report.n_checked > 0
    assert report.max_rel_error < 1e-6, str(report)


def _zero_like_state(module, params):
    B_ = 2
    if module is ref_mlstm:
        d = H // 2
        return [np.zeros((B_, 2, d, d)), np.zeros((B_, 2, d)), np.zeros((B_, 2))]
    if module is ref_qrnn and params["weight_ih"].shape[0] == 6 * H:
        return [np.zeros((B_, H)), np.zeros((B_, 3 * H))]
    return [np.zeros((B_, H))]


def test_new_references_import_no_torch():
    ref_dir = Path(__file__).resolve().parents[1] / "rnnkit" / "reference"
    script = textwrap.dedent(
        f"""
        import importlib.util, sys
        sys.modules["torch"] = None  # any "import torch" now raises ImportError
        import numpy as np
        ref_dir = {str(ref_dir)!r}
        spec = importlib.util.spec_from_file_location(
            "reference_isolated", ref_dir + "/__init__.py", submodule_search_locations=[ref_dir]
        )
        pkg = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = pkg
        spec.loader.exec_module(pkg)
        import importlib
        rng = np.random.default_rng(0)
        xs, h = rng.standard_normal((2, 1, 4)), np.zeros((1, 4))
        for name in ("mingru", "minlstm", "sru"):
            m = importlib.import_module("reference_isolated." + name)
            ys, cache = m.forward(xs, h, m.init_params(4, 4, rng=rng))
            m.backward(cache, m.init_params(4, 4, rng=rng), ys)
        q = importlib.import_module("reference_isolated.qrnn")
        p = q.init_params(4, 4, 1, rng)
        q.backward(q.forward(xs, h, p)[1], p, xs)
        ml = importlib.import_module("reference_isolated.mlstm")
        p = ml.init_params(4, 4, 2, rng)
        s = (np.zeros((1, 2, 2, 2)), np.zeros((1, 2, 2)), np.zeros((1, 2)))
        ml.backward(ml.forward(xs, s, p, 2)[1], p, xs)
        loaded = [m for m, mod in sys.modules.items() if mod is not None]
        assert not [m for m in loaded if m == "torch" or m.startswith("torch.")]
        print("ok")
        """
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "ok"


# ---------------------------------------------------------------------------------------------
# The native loops and the scan
# ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(not NATIVE, reason="native loops not built on this machine")
@pytest.mark.parametrize("cell", list(native.CELL_IDS))
@pytest.mark.parametrize("lengths", [None, [4, 2]])
def test_native_loop_gradcheck(cell, lengths):
    _, G, V = native.CELL_IDS[cell]
    gen = torch.Generator().manual_seed(6)
    u = torch.randn(2, 4, G * 3, dtype=DT, generator=gen, requires_grad=True)
    s0 = torch.randn(2, 3, dtype=DT, generator=gen, requires_grad=True)
    v = torch.randn(V * 3, dtype=DT, generator=gen, requires_grad=True) if V else None
    lengths = None if lengths is None else torch.tensor(lengths)

    def fn(u, s0, *v):
        return native.elementwise_scan(cell, u, s0, v[0] if v else None, lengths)

    inputs = (u, s0) + ((v,) if V else ())
    assert torch.autograd.gradcheck(fn, inputs, eps=1e-6, atol=1e-8, rtol=1e-6)


@pytest.mark.parametrize("chunk_size", [1, 3, 7, 16, None])
def test_chunked_scan_equals_unchunked_and_loop(chunk_size):
    gen = torch.Generator().manual_seed(8)
    log_a = -torch.rand(2, 16, 3, dtype=DT, generator=gen) * 2
    log_b = torch.randn(2, 16, 3, dtype=DT, generator=gen)
    h0 = torch.randn(2, 3, dtype=DT, generator=gen)
    expected = linear_scan_loop(log_a.exp(), log_b.exp(), h0)
    torch.testing.assert_close(log_scan(log_a, log_b, h0), expected, rtol=1e-12, atol=1e-12)
    chunked = chunked_log_scan(log_a, log_b, h0, chunk_size)
    torch.testing.assert_close(chunked, expected, rtol=1e-12, atol=1e-12)


def test_chunked_scan_bounds_float32_error_on_long_sequences():
    """Over T = 4096 strongly decaying steps the cumulative log sum reaches ~ −2·10³: the
    unchunked float32 scan loses digits to cancellation, chunks of 64 keep them."""
    gen = torch.Generator().manual_seed(9)
    log_a = -torch.rand(1, 4096, 8, dtype=DT, generator=gen)
    log_b = torch.randn(1, 4096, 8, dtype=DT, generator=gen)
    exact = log_scan(log_a, log_b)  # float64
    f32 = (log_a.float(), log_b.float())
    err_whole = ((log_scan(*f32).double() - exact).abs() / exact).max()
    err_chunked = ((chunked_log_scan(*f32, chunk_size=64).double() - exact).abs() / exact).max()
    assert torch.isfinite(err_whole)
    assert err_chunked < 1e-5
    assert err_chunked < err_whole


def test_mingru_cell_with_zero_state_in_log_space():
    """The log scan never takes log h0, so a zero (or negative) state needs no special case."""
    cell = MinGRUCell(I, H, dtype=DT)
    x = torch.randn(B, T, I, dtype=DT, requires_grad=True)
    for h0 in (cell.init_state(B), -torch.rand(B, H, dtype=DT)):
        y_log, _ = cell.sequence(x, h0, None, "log")
        y_loop, _ = cell.sequence(x, h0, None, "loop")
        torch.testing.assert_close(y_log, y_loop, rtol=1e-10, atol=1e-12)
        (g_log,) = torch.autograd.grad(y_log.sum(), x)
        assert torch.isfinite(g_log).all()


def test_modern_cells_benchmark_quick_prints_a_table():
    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "modern_cells.py"), "--quick"]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=300, cwd=root)
    assert done.returncode == 0, done.stderr
    header = next(line for line in done.stdout.splitlines() if line.startswith("| T | H |"))
    for column in ("LSTM", "GRU", "MinGRU", "MinLSTM", "QRNN", "SRU", "MLSTM"):
        assert f"| {column} |" in header, column
    rows = [line for line in done.stdout.splitlines() if line.startswith("| 16 | 32 |")]
    assert len(rows) == 1


@pytest.mark.parametrize("mode", ["standard", "variational"])
def test_dropout_between_layers(mode):
    """Training applies dropout between layers (variational: one mask over time); eval none."""
    layer = MinGRU(I, H, num_layers=2, dropout=0.5, dropout_mode=mode, batch_first=True)
    x = torch.randn(B, T, I)
    layer.eval()
    y_eval = layer(x)[0]
    torch.testing.assert_close(layer(x)[0], y_eval)
    layer.train()
    torch.manual_seed(0)
    assert not torch.allclose(layer(x)[0], y_eval)
    with pytest.raises(ValueError, match="dropout_mode"):
        MinGRU(I, H, dropout_mode="zoneout")


def test_common_layer_options_accepted_at_their_defaults():
    """A shared factory passes layer_norm/weight_drop/zoneout; only their defaults are valid."""
    MinGRU(I, H, layer_norm=False, weight_drop=0.0, zoneout=0.0)
    with pytest.raises(ValueError, match="does not support zoneout"):
        QRNN(I, H, zoneout=0.1)

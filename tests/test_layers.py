"""Layers against torch.nn (float64): outputs, final states and every parameter gradient.

Both of rnnkit's paths are checked: the fused-kernel dispatch and the reference time loop
(``allow_fused = False``), over layers, directions, layouts and padded / packed inputs.
"""

import itertools

import pytest
import torch
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

import rnnkit
from rnnkit.cells import GRUCell, LSTMCell, RNNCell
from rnnkit.layers import GRU, LSTM, RNN, Bidirectional, Recurrent, reverse_padded

DT = torch.float64
I, H, B, T = 3, 5, 4, 6
LENGTHS = [6, 2, 4, 1]

MODES = {
    "rnn_tanh": (RNN, torch.nn.RNN, {}),
    "rnn_relu": (RNN, torch.nn.RNN, {"nonlinearity": "relu"}),
    "lstm": (LSTM, torch.nn.LSTM, {}),
    "gru": (GRU, torch.nn.GRU, {}),
}


def _pair(mode, num_layers, bidirectional, batch_first, fused):
    ours_cls, theirs_cls, kw = MODES[mode]
    torch.manual_seed(0)
    theirs = theirs_cls(
        I,
        H,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dtype=DT,
        **kw,
    )
    ours = ours_cls(
        I,
        H,
        num_layers=num_layers,
        bidirectional=bidirectional,
        batch_first=batch_first,
        dtype=DT,
        **kw,
    )
    assert sorted(ours.state_dict()) == sorted(theirs.state_dict())
    ours.load_state_dict(theirs.state_dict())
    ours.allow_fused = fused
    return ours, theirs


def _flat(out):
    """Tensors of an (output, state) result, in a fixed order."""
    y, state = out
    if hasattr(y, "data") and not isinstance(y, torch.Tensor):
        y = y.data  # PackedSequence
    states = list(state) if isinstance(state, tuple) else [state]
    return [y, *states]


def _compare(ours, theirs, run_ours, run_theirs):
    a, b = _flat(run_ours(ours)), _flat(run_theirs(theirs))
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)
    weights = [torch.randn_like(t) for t in a]  # a random linear functional of every output
    sum(w.mul(x).sum() for w, x in zip(weights, a)).backward()
    sum(w.mul(y).sum() for w, y in zip(weights, b)).backward()
    named = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        torch.testing.assert_close(p.grad, named[name].grad, rtol=1e-10, atol=1e-12, msg=name)


GRID = list(itertools.product(MODES, [1, 2, 3], [False, True], [False, True], [True, False]))


@pytest.mark.parametrize("mode,num_layers,bidirectional,batch_first,fused", GRID)
def test_dense_input_matches_torch(mode, num_layers, bidirectional, batch_first, fused):
    ours, theirs = _pair(mode, num_layers, bidirectional, batch_first, fused)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=DT)
    D = 2 if bidirectional else 1
    h0 = torch.randn(num_layers * D, B, H, dtype=DT)
    hx = (h0, torch.randn_like(h0)) if mode == "lstm" else h0
    _compare(ours, theirs, lambda m: m(x, hx), lambda m: m(x, hx))


@pytest.mark.parametrize("mode,num_layers,bidirectional,batch_first,fused", GRID)
def test_lengths_and_packed_match_torch(mode, num_layers, bidirectional, batch_first, fused):
    ours, theirs = _pair(mode, num_layers, bidirectional, batch_first, fused)
    x = torch.randn((B, T, I) if batch_first else (T, B, I), dtype=DT)
    packed = pack_padded_sequence(
        x, torch.tensor(LENGTHS), batch_first=batch_first, enforce_sorted=False
    )

    def torch_padded(m):
        y, s = m(packed)
        y, _ = pad_packed_sequence(y, batch_first=batch_first, total_length=T)
        return y, s

    # padded tensor + lengths= gives the padded outputs torch gives for the packed input
    _compare(ours, theirs, lambda m: m(x, lengths=LENGTHS), torch_padded)
    ours.zero_grad()
    theirs.zero_grad()
    # a PackedSequence in gives the very same PackedSequence out
    _compare(ours, theirs, lambda m: m(packed), lambda m: m(packed))
    y, _ = ours(packed)
    assert torch.equal(y.batch_sizes, packed.batch_sizes)
    assert torch.equal(y.unsorted_indices, packed.unsorted_indices)


def test_padded_outputs_are_zero_past_each_end():
    layer = LSTM(I, H, batch_first=True, bidirectional=True, dtype=DT, peephole=True)
    y, _ = layer(torch.randn(B, T, I, dtype=DT), lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        assert torch.all(y[b, n:] == 0)
        assert torch.all(y[b, :n].abs() > 0)


def test_state_dict_moves_both_ways():
    ours = LSTM(I, H, num_layers=2, bidirectional=True, dtype=DT)
    theirs = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, dtype=DT)
    theirs.load_state_dict(ours.state_dict())
    x = torch.randn(T, B, I, dtype=DT)
    torch.testing.assert_close(ours(x)[0], theirs(x)[0])
    assert ours.weight_hh_l1_reverse.shape == (4 * H, H)


def test_unbatched_input_like_torch():
    ours, theirs = _pair("gru", 2, True, False, fused=False)
    x = torch.randn(T, I, dtype=DT)
    yo, ho = ours(x)
    yt, ht = theirs(x)
    torch.testing.assert_close(yo, yt)
    torch.testing.assert_close(ho, ht)


# ---------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------
CELL_PAIRS = [
    (lambda: RNNCell(I, H, dtype=DT), lambda: torch.nn.RNNCell(I, H, dtype=DT)),
    (
        lambda: RNNCell(I, H, nonlinearity="relu", dtype=DT),
        lambda: torch.nn.RNNCell(I, H, nonlinearity="relu", dtype=DT),
    ),
    (lambda: LSTMCell(I, H, dtype=DT), lambda: torch.nn.LSTMCell(I, H, dtype=DT)),
    (lambda: GRUCell(I, H, dtype=DT), lambda: torch.nn.GRUCell(I, H, dtype=DT)),
    (
        lambda: RNNCell(I, H, bias=False, dtype=DT),
        lambda: torch.nn.RNNCell(I, H, bias=False, dtype=DT),
    ),
]


@pytest.mark.parametrize("make_ours,make_theirs", CELL_PAIRS)
def test_cell_matches_torch_cell(make_ours, make_theirs):
    theirs = make_theirs()
    ours = make_ours()
    ours.load_state_dict(theirs.state_dict())
    x = torch.randn(B, I, dtype=DT)
    state = ours.init_state(B)
    state = tuple(s + torch.randn_like(s) for s in state) if isinstance(state, tuple) else state + 1
    h, new_state = ours(x, state)
    out_t = theirs(x, state)
    h_t = out_t[0] if isinstance(out_t, tuple) else out_t
    torch.testing.assert_close(h, h_t, rtol=1e-12, atol=1e-12)
    if isinstance(out_t, tuple):
        torch.testing.assert_close(new_state.c, out_t[1], rtol=1e-12, atol=1e-12)
    (h.sum() + (new_state.c.sum() if isinstance(out_t, tuple) else 0)).backward()
    (h_t.sum() + (out_t[1].sum() if isinstance(out_t, tuple) else 0)).backward()
    for (name, p), (_, q) in zip(ours.named_parameters(), theirs.named_parameters()):
        torch.testing.assert_close(p.grad, q.grad, rtol=1e-12, atol=1e-12, msg=name)


EXTRA_CELLS = {
    "lstm_peephole": lambda: LSTMCell(I, H, peephole=True, dtype=DT),
    "lstm_layer_norm": lambda: LSTMCell(I, H, layer_norm=True, dtype=DT),
    "lstm_both": lambda: LSTMCell(I, H, peephole=True, layer_norm=True, dtype=DT),
    "gru_reset_before": lambda: GRUCell(I, H, reset_after=False, dtype=DT),
    "gru_layer_norm": lambda: GRUCell(I, H, layer_norm=True, dtype=DT),
    "gru_layer_norm_reset_before": lambda: GRUCell(
        I, H, reset_after=False, layer_norm=True, dtype=DT
    ),
    "rnn_layer_norm": lambda: RNNCell(I, H, layer_norm=True, dtype=DT),
}


def _perturb_params(cell):
    with torch.no_grad():  # move LN gains/shifts off 1/0 so their gradients are exercised
        for p in cell.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("name", list(EXTRA_CELLS))
def test_extra_cells_pass_gradcheck(name):
    torch.manual_seed(1)
    cell = EXTRA_CELLS[name]()
    _perturb_params(cell)
    x = torch.randn(2, I, dtype=DT, requires_grad=True)
    s = cell.init_state(2)
    if isinstance(s, tuple):
        h0 = torch.randn(2, H, dtype=DT, requires_grad=True)
        c0 = torch.randn(2, H, dtype=DT, requires_grad=True)

        def f(x, h0, c0, *params):
            h, st = cell(x, (h0, c0))
            return h, st.c

        args = (x, h0, c0)
    else:
        h0 = torch.randn(2, H, dtype=DT, requires_grad=True)

        def f(x, h0, *params):
            return cell(x, h0)[0]

        args = (x, h0)
    assert torch.autograd.gradcheck(f, (*args, *cell.parameters()))


def test_identity_init_and_forget_bias():
    cell = RNNCell(I, H, nonlinearity="relu", init="identity")
    assert torch.equal(cell.weight_hh, torch.eye(H))
    assert torch.all(cell.bias_ih == 0) and torch.all(cell.bias_hh == 0)
    lstm = LSTMCell(I, H, forget_bias=1.0)
    assert torch.all(lstm.bias_ih[H : 2 * H] == 1.0) and torch.all(lstm.bias_hh[H : 2 * H] == 0)
    layer = LSTM(I, H, num_layers=2, forget_bias=1.0)
    assert torch.all(layer.bias_ih_l1[H : 2 * H] == 1.0)
    layer.reset_parameters()
    assert torch.all(layer.bias_ih_l1[H : 2 * H] == 1.0)


def test_gru_forms_relate_through_update_gate():
    """reset_after=False equals torch's form exactly when r = 1 (reset irrelevant)."""
    a = GRUCell(I, H, reset_after=True, dtype=DT)
    b = GRUCell(I, H, reset_after=False, dtype=DT)
    b.load_state_dict(a.state_dict())
    with torch.no_grad():  # force r ≈ 1 so both forms compute the same n
        for c in (a, b):
            c.bias_ih[:H].fill_(50.0)
    x, h = torch.randn(B, I, dtype=DT), torch.randn(B, H, dtype=DT)
    torch.testing.assert_close(a(x, h)[0], b(x, h)[0])


# ---------------------------------------------------------------------------------------------
# Recurrent == a manual loop over the cell
# ---------------------------------------------------------------------------------------------
ALL_CELLS = {
    **{k: v for k, v in EXTRA_CELLS.items()},
    "rnn": lambda: RNNCell(I, H, dtype=DT),
    "lstm": lambda: LSTMCell(I, H, dtype=DT),
    "gru": lambda: GRUCell(I, H, dtype=DT),
}


def _manual_loop(cell, x, lengths=None, reverse=False):
    outs, finals = [], []
    for b in range(x.shape[0]):
        n = x.shape[1] if lengths is None else lengths[b]
        seq = x[b, :n]
        if reverse:
            seq = seq.flip(0)
        state = cell.init_state(1)
        ys = []
        for t in range(n):
            h, state = cell(seq[t : t + 1], state)
            ys.append(h)
        y = torch.cat(ys, 0)
        if reverse:
            y = y.flip(0)
        outs.append(torch.cat([y, y.new_zeros(x.shape[1] - n, H)], 0))
        finals.append(state)
    return torch.stack(outs, 0), finals


@pytest.mark.parametrize("name", list(ALL_CELLS))
@pytest.mark.parametrize("use_lengths", [False, True])
@pytest.mark.parametrize("reverse", [False, True])
def test_recurrent_equals_manual_loop(name, use_lengths, reverse):
    torch.manual_seed(2)
    cell = ALL_CELLS[name]()
    x = torch.randn(B, T, I, dtype=DT)
    lengths = LENGTHS if use_lengths else None
    y, final = Recurrent(cell, reverse=reverse)(x, lengths=lengths)
    y_ref, finals = _manual_loop(cell, x, lengths, reverse)
    torch.testing.assert_close(y, y_ref, rtol=1e-12, atol=1e-12)
    for b, s in enumerate(finals):
        if isinstance(s, tuple):
            torch.testing.assert_close(final.h[b], s.h[0])
            torch.testing.assert_close(final.c[b], s.c[0])
        else:
            torch.testing.assert_close(final[b], s[0])


def test_bidirectional_module_matches_layer():
    layer = GRU(I, H, batch_first=True, bidirectional=True, dtype=DT, reset_after=False)
    fw, bw = GRUCell(I, H, reset_after=False, dtype=DT), GRUCell(I, H, reset_after=False, dtype=DT)
    fw.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items() if k.endswith("_l0")})
    bw.load_state_dict(
        {k[:-11]: v for k, v in layer.state_dict().items() if k.endswith("_reverse")}
    )
    x = torch.randn(B, T, I, dtype=DT)
    y, (sf, sb) = Bidirectional(fw, bw)(x, lengths=LENGTHS)
    y2, h_n = layer(x, lengths=LENGTHS)
    torch.testing.assert_close(y, y2)
    torch.testing.assert_close(torch.stack([sf, sb]), h_n)


def test_reverse_padded_is_an_involution():
    x = torch.arange(B * T).view(B, T)
    lengths = torch.tensor(LENGTHS)
    r = reverse_padded(x, lengths)
    assert r[1].tolist()[:2] == [x[1, 1].item(), x[1, 0].item()]
    assert r[1].tolist()[2:] == x[1, 2:].tolist()  # padding stays put
    assert torch.equal(reverse_padded(r, lengths), x)


# ---------------------------------------------------------------------------------------------
# extras of the layers
# ---------------------------------------------------------------------------------------------
def test_extra_layer_options_run_the_loop_and_match_cells():
    torch.manual_seed(3)
    layer = LSTM(I, H, num_layers=2, batch_first=True, peephole=True, layer_norm=True, dtype=DT)
    assert not layer._fusable
    x = torch.randn(B, T, I, dtype=DT)
    y, (h_n, c_n) = layer(x)
    cell0 = LSTMCell(I, H, peephole=True, layer_norm=True, dtype=DT)
    cell1 = LSTMCell(H, H, peephole=True, layer_norm=True, dtype=DT)
    cell0.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items() if k.endswith("_l0")})
    cell1.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items() if k.endswith("_l1")})
    y0, s0 = Recurrent(cell0)(x)
    y1, s1 = Recurrent(cell1)(y0)
    torch.testing.assert_close(y, y1)
    torch.testing.assert_close(c_n, torch.stack([s0.c, s1.c]))


def test_variational_dropout_shares_one_mask_across_time():
    torch.manual_seed(4)
    layer = RNN(I, H, num_layers=2, dropout=0.5, dropout_mode="variational", batch_first=True)
    seen = {}
    original = layer._dropout_between_layers

    def spy(y):
        out = original(y)
        seen["ratio"] = out / y
        return out

    layer._dropout_between_layers = spy
    layer.train()
    layer(torch.randn(B, T, I))
    ratio = seen["ratio"]  # (B, T, H): the mask, scaled
    assert torch.allclose(ratio, ratio[:, :1].expand_as(ratio))
    assert set(ratio.unique().tolist()) <= {0.0, 2.0}
    layer.eval()
    layer._dropout_between_layers = original
    a, b = layer(torch.ones(B, T, I))[0], layer(torch.ones(B, T, I))[0]
    assert torch.equal(a, b)


@pytest.mark.parametrize("fused", [True, False])
def test_weight_drop_masks_recurrent_weights_in_training_only(fused):
    torch.manual_seed(5)
    layer = LSTM(I, H, batch_first=True, weight_drop=0.5, dtype=DT)
    layer.allow_fused = fused
    plain = torch.nn.LSTM(I, H, batch_first=True, dtype=DT)
    plain.load_state_dict(layer.state_dict())
    x = torch.randn(B, T, I, dtype=DT)
    layer.eval()
    torch.testing.assert_close(layer(x)[0], plain(x)[0])
    layer.train()
    assert not torch.allclose(layer(x)[0], plain(x)[0])
    assert layer.weight_hh_l0.grad is None  # the mask did not touch the stored weights


def test_zoneout_eval_is_the_expectation_and_train_is_stochastic():
    torch.manual_seed(6)
    layer = GRU(I, H, batch_first=True, zoneout=0.3, dtype=DT).eval()
    cell = GRUCell(I, H, dtype=DT)
    cell.load_state_dict({k[:-3]: v for k, v in layer.state_dict().items()})
    x = torch.randn(B, T, I, dtype=DT)
    h = cell.init_state(B)
    for t in range(T):
        h = 0.3 * h + 0.7 * cell(x[:, t], h)[0]
    torch.testing.assert_close(layer(x)[1][0], h)
    layer.train()
    assert not torch.allclose(layer(x)[1][0], h)


def test_learned_initial_state_and_cell_states():
    layer = LSTM(I, H, batch_first=True, learn_init_state=True, return_cell_states=True)
    y, (h_n, c_n), cs = layer(torch.randn(B, T, I), lengths=LENGTHS)
    assert cs.shape == (B, T, H)
    for b, n in enumerate(LENGTHS):
        torch.testing.assert_close(cs[b, n - 1], c_n[0, b])
    y.sum().backward()
    assert layer.init_h.grad is not None and layer.init_c.grad.abs().sum() > 0


def test_public_api_exports_layers():
    assert rnnkit.LSTM is LSTM and rnnkit.Recurrent is Recurrent


# ---------------------------------------------------------------------------------------------
# bad input
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "call,match",
    [
        (lambda m: m(torch.randn(B, T, I, 1)), r"3-D input .* got 4-D"),
        (
            lambda m: m(torch.randn(B, T, I + 1)),
            rf"\(batch, seq_len, {I}\); got \({B}, {T}, {I + 1}\)",
        ),
        (lambda m: m(torch.randn(B, T, I, dtype=torch.float64)), "dtype torch.float32"),
        (lambda m: m(torch.randn(B, T, I), torch.zeros(1, B + 1, H)), r"h_0 of shape \(1, 4, 5\)"),
        (lambda m: m(torch.randn(B, T, I), lengths=[7, 1, 1, 1]), r"lengths must lie in 1..6"),
        (lambda m: m(torch.randn(B, T, I), lengths=[0, 1, 1, 1]), r"lengths must lie in 1..6"),
        (lambda m: m(torch.randn(B, T, I), lengths=[1, 1]), r"expected shape \(4,\); got \(2,\)"),
        (lambda m: m(torch.randn(B, T, I), lengths=torch.ones(B)), "must be integers"),
    ],
)
def test_layer_bad_input_errors(call, match):
    layer = GRU(I, H, batch_first=True)
    with pytest.raises(ValueError, match=match):
        call(layer)


def test_cell_bad_input_errors():
    cell = LSTMCell(I, H)
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, 3\); got \(2, 4\)"):
        cell(torch.randn(2, 4))
    with pytest.raises(ValueError, match=r"expected c of shape \(2, 5\); got \(2, 6\)"):
        cell(torch.randn(2, I), (torch.zeros(2, H), torch.zeros(2, H + 1)))
    with pytest.raises(ValueError, match=r"expected input of shape \(batch, seq_len, 3\)"):
        Recurrent(cell)(torch.randn(2, 5))
    with pytest.raises(ValueError, match="nonlinearity"):
        RNNCell(I, H, nonlinearity="sigmoid")

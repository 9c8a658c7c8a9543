"""Attention: weights are a distribution over the real positions only (padding gets exactly 0),
the context is their average of the keys, padding never changes a result, and the heatmap."""

import pytest
import torch

from rnnkit.attention import (
    AdditiveAttention,
    DotAttention,
    GeneralAttention,
    build_attention,
    plot_attention,
)

KINDS = ["additive", "dot", "general"]


def make(kind: str, size: int = 6) -> torch.nn.Module:
    torch.manual_seed(0)
    return build_attention(kind, size, size, attention_size=5).double()


@pytest.mark.parametrize("kind", KINDS)
def test_weights_sum_to_one_and_padding_gets_exactly_zero(kind):
    att = make(kind)
    B, S = 4, 7
    query = torch.randn(B, 6, dtype=torch.float64)
    keys = torch.randn(B, S, 6, dtype=torch.float64) * 3
    lengths = torch.tensor([7, 1, 4, 2])
    mask = torch.arange(S) < lengths.unsqueeze(1)
    context, weights = att(query, keys, mask)
    assert weights.shape == (B, S) and context.shape == (B, 6)
    torch.testing.assert_close(weights.sum(1), torch.ones(B, dtype=torch.float64))
    assert (weights[~mask] == 0).all()  # exactly zero, not merely small
    assert (weights[mask] > 0).all()
    torch.testing.assert_close(context, torch.einsum("bs,bsd->bd", weights, keys))


@pytest.mark.parametrize("kind", KINDS)
def test_padding_content_never_matters_and_prepared_keys_give_the_same(kind):
    att = make(kind)
    query = torch.randn(2, 6, dtype=torch.float64)
    keys = torch.randn(2, 5, 6, dtype=torch.float64)
    mask = torch.tensor([[True] * 3 + [False] * 2, [True] * 5])
    garbage = keys.clone()
    garbage[0, 3:] = 1e3 * torch.randn(2, 6, dtype=torch.float64)
    c1, w1 = att(query, keys, mask)
    c2, w2 = att(query, garbage, mask, prepared=att.prepare(garbage))
    torch.testing.assert_close(c1, c2)
    torch.testing.assert_close(w1, w2)
    # the padded row equals the same row given alone, unpadded
    c3, w3 = att(query[:1], keys[:1, :3])
    torch.testing.assert_close(c1[:1], c3)
    torch.testing.assert_close(w1[:1, :3], w3)


def test_scores_follow_their_equations():
    torch.manual_seed(1)
    q, k = torch.randn(3, 4), torch.randn(3, 5, 4)
    dot = DotAttention(4, 4)
    _, w = dot(q, k)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bd,bsd->bs", q, k), -1))
    gen = GeneralAttention(4, 4)
    W = gen.key_proj.weight  # (Dq, Dk)
    _, w = gen(q, k)
    torch.testing.assert_close(w, torch.softmax(torch.einsum("bi,ij,bsj->bs", q, W, k), -1))
    add = AdditiveAttention(4, 4, 3)
    e = torch.tanh(
        add.query_proj(q).unsqueeze(1) + k @ add.key_proj.weight.T
    ) @ add.v.weight.squeeze(0)
    _, w = add(q, k)
    torch.testing.assert_close(w, torch.softmax(e, -1))


def test_build_attention_kinds_and_errors():
    assert build_attention("none", 4, 8) is None
    assert isinstance(build_attention("additive", 4, 8), AdditiveAttention)
    assert isinstance(build_attention("general", 4, 8), GeneralAttention)
    with pytest.raises(ValueError, match="query_size == key_size"):
        build_attention("dot", 4, 8)
    with pytest.raises(ValueError, match="attention must be one of"):
        build_attention("cosine", 4, 4)
    with pytest.raises(ValueError, match="keys of shape"):
        build_attention("general", 4, 8)(torch.randn(2, 4), torch.randn(2, 3, 4))


def test_a_row_with_no_real_position_stays_finite():
    att = make("additive")
    nothing = torch.zeros(1, 3, dtype=torch.bool)
    _, w = att(torch.randn(1, 6).double(), torch.randn(1, 3, 6).double(), nothing)
    assert torch.isfinite(w).all()


def test_plot_attention_writes_a_png(tmp_path):
    w = torch.softmax(torch.randn(3, 4), -1)
    path = plot_attention(
        w, ["ein", "mann", "läuft", "."], ["a", "man", "runs"], tmp_path / "a.png"
    )
    assert path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(ValueError, match="shape"):
        plot_attention(w, ["ein"], ["a"], tmp_path / "b.png")

"""Linear-chain CRF: forward algorithm and Viterbi against brute-force enumeration of every tag
sequence, masking, constraints, and learning a transition rule."""

import itertools

import pytest
import torch

from rnnkit.crf import LinearChainCRF, bio_transitions


def random_crf(K, seed=0, constraints=None):
    torch.manual_seed(seed)
    crf = LinearChainCRF(K, *(constraints or (None, None))).double()
    with torch.no_grad():
        for p in crf.parameters():
            p.normal_()
    return crf


def brute_force(crf, emissions, length):
    """Every tag sequence of one sentence: (log Z, best sequence), by enumeration."""
    start, trans, end = crf._scores()
    K = crf.num_tags
    scores = {}
    for y in itertools.product(range(K), repeat=length):
        s = start[y[0]] + end[y[-1]] + sum(emissions[t, y[t]] for t in range(length))
        s = s + sum(trans[y[t - 1], y[t]] for t in range(1, length))
        scores[y] = s
    values = torch.stack(list(scores.values()))
    return torch.logsumexp(values, 0), list(max(scores, key=lambda y: scores[y]))


@pytest.mark.parametrize("K, T", [(1, 3), (2, 1), (3, 4), (4, 3)])
def test_partition_and_viterbi_equal_brute_force(K, T):
    crf = random_crf(K, seed=K * 10 + T)
    emissions = torch.randn(3, T, K, dtype=torch.float64)
    lengths = torch.tensor([T, max(1, T - 1), 1])
    mask = torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)
    log_z = crf.log_partition(emissions, mask)
    paths = crf.decode(emissions, mask)
    for b in range(3):
        ref_z, ref_path = brute_force(crf, emissions[b], int(lengths[b]))
        assert log_z[b].item() == pytest.approx(ref_z.item(), abs=1e-10)
        assert paths[b] == ref_path
        # the gold score of the best path, and p(y|x) ≤ 1 for it
        tags = torch.tensor([ref_path + [0] * (T - len(ref_path))])
        score = crf.score(emissions[b : b + 1], tags, mask[b : b + 1])
        assert score.item() <= log_z[b].item() + 1e-12


def test_padding_changes_nothing():
    crf = random_crf(3, seed=1)
    x = torch.randn(1, 3, 3, dtype=torch.float64)
    tags = torch.tensor([[2, 0, 1]])
    alone = crf.nll(x, tags, reduction="none")
    padded = torch.cat([x, torch.randn(1, 4, 3, dtype=torch.float64) * 100], 1)
    padded_tags = torch.cat([tags, torch.tensor([[1, 1, 2, 0]])], 1)
    mask = torch.tensor([[True] * 3 + [False] * 4])
    assert crf.nll(padded, padded_tags, mask, reduction="none").item() == pytest.approx(
        alone.item()
    )
    assert crf.decode(padded, mask) == crf.decode(x)


def test_nll_is_a_proper_negative_log_probability():
    """Σ_y p(y|x) = 1: exp(−nll) summed over all sequences is one."""
    crf = random_crf(3, seed=2)
    x = torch.randn(1, 3, 3, dtype=torch.float64)
    total = sum(
        torch.exp(-crf.nll(x, torch.tensor([y]))) for y in itertools.product(range(3), repeat=3)
    )
    assert total.item() == pytest.approx(1.0)


def test_bio_constraints_forbid_invalid_paths():
    tags = ["O", "B-PER", "I-PER", "B-LOC", "I-LOC"]
    start, allowed = bio_transitions(tags)
    assert start.tolist() == [True, True, False, True, False]
    assert allowed[0, 2].item() is False and allowed[1, 2].item() is True
    assert allowed[3, 2].item() is False and allowed[2, 2].item() is True
    crf = random_crf(5, seed=3, constraints=(start, allowed))
    x = torch.zeros(1, 4, 5, dtype=torch.float64)
    x[0, :, 2] = 50.0  # emissions scream I-PER everywhere
    path = [tags[k] for k in crf.decode(x)[0]]
    assert path[0] != "I-PER"  # may not start with I-
    for prev, cur in zip(path, path[1:]):
        if cur == "I-PER":
            assert prev in ("B-PER", "I-PER")
    _, ref = brute_force(crf, x[0], 4)
    assert crf.decode(x)[0] == ref


def test_learns_a_transition_rule():
    """Emissions carry no information; the tag sequence alternates 0, 1, 0, 1 … after a
    start in 0: only the transitions and the start scores can learn that."""
    torch.manual_seed(0)
    crf = LinearChainCRF(2)
    opt = torch.optim.Adam(crf.parameters(), lr=0.1)
    x = torch.zeros(4, 6, 2)
    y = torch.tensor([[t % 2 for t in range(6)]] * 4)
    for _ in range(100):
        opt.zero_grad()
        loss = crf.nll(x, y, reduction="mean")
        loss.backward()
        opt.step()
    assert loss.item() < 0.05
    assert crf.decode(x[:1])[0] == [0, 1, 0, 1, 0, 1]


def test_shape_errors():
    crf = LinearChainCRF(3)
    with pytest.raises(ValueError, match="emissions"):
        crf.log_partition(torch.zeros(2, 3, 4))
    with pytest.raises(ValueError, match="mask"):
        crf.log_partition(torch.zeros(2, 3, 3), torch.ones(2, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="at least one step"):
        crf.decode(torch.zeros(1, 2, 3), torch.tensor([[False, False]]))

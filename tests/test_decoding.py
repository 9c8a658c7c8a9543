"""Greedy and beam search against exhaustive search on tiny hand-built models."""

import itertools
import math

import pytest
import torch

from rnnkit.decoding import beam_search, greedy_decode

BOS, EOS = 0, 1
WORDS = (2, 3)  # the ordinary tokens of the toy vocabulary {bos, eos, a, b}
V = 4


class PrefixModel:
    """log p(v | prefix) from a random table indexed by (sentence, step, hash of the prefix):
    every prefix of every sentence has its own distribution, so a search that mixed up rows or
    prefixes would be caught. ``bos`` is never emitted."""

    def __init__(self, n_sentences: int, max_len: int, seed: int, eos_bias: float = 0.0):
        g = torch.Generator().manual_seed(seed)
        self.table = 2.0 * torch.randn(n_sentences, max_len, 101, V, generator=g)
        self.table[..., EOS] += eos_bias
        self.table[..., BOS] = -math.inf

    def initial(self, n: int):
        zeros = torch.zeros(n, dtype=torch.long)
        return {"row": torch.arange(n), "code": zeros, "t": zeros}

    def step(self, tokens, state):
        code = state["code"] * 5 + tokens + 1
        logits = self.table[state["row"], state["t"], code % 101]
        new = {"row": state["row"], "code": code, "t": state["t"] + 1}
        return torch.log_softmax(logits, -1), new, None

    def log_prob(self, sentence: int, tokens: list[int]) -> float:
        state = {k: v[sentence : sentence + 1] for k, v in self.initial(sentence + 1).items()}
        prev, total = torch.tensor([BOS]), 0.0
        for tok in tokens:
            lp, state, _ = self.step(prev, state)
            total += float(lp[0, tok])
            prev = torch.tensor([tok])
        return total


def brute_force(model: PrefixModel, sentence: int, max_len: int, alpha: float):
    """The best (tokens, normalised score) over every sequence the search could return."""
    best = (None, -math.inf)
    for n in range(max_len + 1):
        for words in itertools.product(WORDS, repeat=n):
            if n < max_len:  # ends with eos within max_len steps
                lp, steps = model.log_prob(sentence, [*words, EOS]), n + 1
            elif n == max_len:  # ran into max_len without eos
                lp, steps = model.log_prob(sentence, list(words)), n
            score = lp / steps**alpha
            if score > best[1]:
                best = (list(words), score)
    return best


@pytest.mark.parametrize("alpha", [0.0, 1.0])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_wide_beam_finds_the_brute_force_best(alpha, seed):
    max_len, n = 4, 3
    model = PrefixModel(n, max_len, seed, eos_bias=-1.0)
    hyps = beam_search(model.step, model.initial(n), n, BOS, EOS, 16, max_len, alpha)
    for i, h in enumerate(hyps):
        tokens, score = brute_force(model, i, max_len, alpha)
        assert h.tokens == tokens
        assert h.score == pytest.approx(score, abs=1e-5)


def test_beam_of_two_beats_greedy_where_greedy_is_short_sighted():
    # step 1: a (0.55) or b (0.45); after a everything is equally likely, after b eos is almost
    # certain: greedy commits to a, a beam of two finds "b eos" (p = 0.45 · 0.99)
    def step(tokens, state):
        rows = []
        for prev, t in zip(tokens.tolist(), state["t"].tolist()):
            if t == 0:
                rows.append([0.0, 1e-6, 0.55, 0.45])
            elif prev == 2:
                rows.append([0.0, 1 / 3, 1 / 3, 1 / 3])
            else:
                rows.append([0.0, 0.99, 0.005, 0.005])
        probs = torch.tensor(rows)
        return probs.log(), {"t": state["t"] + 1}, None

    state = {"t": torch.zeros(1, dtype=torch.long)}
    greedy = greedy_decode(step, state, 1, BOS, EOS, 6)[0]
    beam = beam_search(step, state, 1, BOS, EOS, 2, 6, length_penalty=0.0)[0]
    assert greedy.tokens[0] == 2
    assert beam.tokens == [3]
    assert beam.log_prob == pytest.approx(math.log(0.45 * 0.99))


@pytest.mark.parametrize("seed", range(4))
def test_beam_size_one_equals_greedy(seed):
    n, max_len = 5, 8
    model = PrefixModel(n, max_len, seed)
    greedy = greedy_decode(model.step, model.initial(n), n, BOS, EOS, max_len)
    beam = beam_search(model.step, model.initial(n), n, BOS, EOS, 1, max_len, 1.0)
    assert [h.tokens for h in beam] == [h.tokens for h in greedy]
    for i, (g, b) in enumerate(zip(greedy, beam)):
        assert b.log_prob == pytest.approx(g.log_prob, abs=1e-5)
        assert g.finished == b.finished
        emitted = g.tokens + [EOS] * g.finished
        assert g.score == pytest.approx(model.log_prob(i, emitted), abs=1e-5)


def test_attention_rows_follow_the_returned_tokens():
    # the step reports as "attention" the one-hot of the token it was fed, over S = V positions
    model = PrefixModel(2, 6, 5)

    def step(tokens, state):
        lp, new, _ = model.step(tokens, state)
        return lp, new, torch.nn.functional.one_hot(tokens, V).float()

    for hyps in (
        greedy_decode(step, model.initial(2), 2, BOS, EOS, 6),
        beam_search(step, model.initial(2), 2, BOS, EOS, 3, 6),
    ):
        for h in hyps:
            assert h.attention.shape == (len(h.tokens), V)
            fed = [BOS, *h.tokens[:-1]]  # token t was chosen after reading token t-1
            assert h.attention.argmax(1).tolist() == fed


def test_bad_arguments():
    model = PrefixModel(1, 3, 0)
    with pytest.raises(ValueError, match="beam_size"):
        beam_search(model.step, model.initial(1), 1, BOS, EOS, 0, 3)
    with pytest.raises(ValueError, match="max_len"):
        greedy_decode(model.step, model.initial(1), 1, BOS, EOS, 0)

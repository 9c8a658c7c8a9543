"""Token encoders shared with the tagger: the recurrent factory, char CNN/RNN, embeddings."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import Tensor, nn

from rnnkit.data.tabular import read_word_vectors
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.layers import LSTM
from rnnkit.tasks.classifier.config import CHAR_SPECIALS

if TYPE_CHECKING:
    from rnnkit.tasks.classifier.config import LabelledTextData, TokenFeatureOptions

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Building blocks shared with the tagger
# ---------------------------------------------------------------------------------------------
class CharEncoder(nn.Module):
    """A word's vector from its characters c_1..c_n (embedded as e_i).

    * ``cnn`` (Ma & Hovy 2016, Kim et al. 2016): h_i = tanh(W [e_{i−k//2}; …; e_{i+k//2}] + b)
      with zero vectors beyond the word, r = max_i h_i over the n real positions;
    * ``rnn`` (Lample et al. 2016): a bidirectional LSTM over e_1..e_n, r = [→h_n ; ←h_1].

    ``forward(chars (N, C), lengths (N,))`` → ``(N, out_size)``; id 0 is padding, read as a
    zero vector, so padding a word further never changes r.
    """

    def __init__(
        self, kind: str, num_chars: int, embed_size: int, hidden_size: int, kernel_size: int = 3
    ):
        super().__init__()
        if kind not in ("cnn", "rnn"):
            raise ValueError(f"kind must be 'cnn' or 'rnn'; got {kind!r}")
        self.kind = kind
        self.embedding = nn.Embedding(num_chars, embed_size, padding_idx=0)
        if kind == "cnn":
            if kernel_size < 1 or kernel_size % 2 == 0:
                raise ValueError(f"char_kernel must be odd; got {kernel_size}")
            self.conv = nn.Conv1d(embed_size, hidden_size, kernel_size, padding=kernel_size // 2)
            self.out_size = hidden_size
        else:
            self.rnn = LSTM(embed_size, hidden_size, batch_first=True, bidirectional=True)
            self.out_size = 2 * hidden_size

    def forward(self, chars: Tensor, lengths: Tensor) -> Tensor:
        e = self.embedding(chars) * (chars != 0).unsqueeze(2)  # (N, C, E), zero on padding
        if self.kind == "cnn":
            h = torch.tanh(self.conv(e.transpose(1, 2))).transpose(1, 2)  # (N, C, H)
            valid = torch.arange(chars.shape[1], device=chars.device) < lengths.unsqueeze(1)
            return h.masked_fill(~valid.unsqueeze(2), -math.inf).amax(1)  # (N, H)
        _, (h_n, _) = self.rnn(e, lengths=lengths.cpu())  # h_n (2, N, H)
        return torch.cat([h_n[0], h_n[1]], -1)  # (N, 2H)


class TokenEmbedder(nn.Module):
    """v_t = [E x_t ; r(x_t)]: a token embedding and (optionally) a :class:`CharEncoder` vector.

    ``forward(ids (B, T), chars (B, T, C) | None, mask (B, T))`` → ``(B, T, out_size)``. During
    training each real token's id is replaced by ``<unk>`` with probability ``word_dropout``
    (its character vector is kept), so the model learns what to do with unseen words. Token
    vectors start as U(−a, a), a = ``embed_init`` (row 0, padding, at zero).
    """

    def __init__(
        self,
        vocab_size: int,
        embed_size: int,
        unk_id: int,
        char_repr: str = "none",
        num_chars: int = 0,
        char_embed_size: int = 16,
        char_hidden_size: int = 32,
        char_kernel: int = 3,
        word_dropout: float = 0.0,
        embed_init: float = 0.1,
    ):
        super().__init__()
        self.embedding = nn.Embedding(vocab_size, embed_size, padding_idx=0)
        if embed_init > 0:
            # small random vectors: with N(0, 1) rows (torch's default) Adam needs many more
            # steps to move rarely seen words, and a small corpus never gets there
            nn.init.uniform_(self.embedding.weight, -embed_init, embed_init)
            with torch.no_grad():
                self.embedding.weight[0].zero_()
        self.unk_id = unk_id
        self.word_dropout = word_dropout
        self.chars = None
        self.out_size = embed_size
        if char_repr != "none":
            self.chars = CharEncoder(
                char_repr, num_chars, char_embed_size, char_hidden_size, char_kernel
            )
            self.out_size += self.chars.out_size

    def forward(self, ids: Tensor, chars: Tensor | None, mask: Tensor) -> Tensor:
        if self.training and self.word_dropout:
            drop = torch.rand(ids.shape, device=ids.device) < self.word_dropout
            ids = ids.masked_fill(drop & mask, self.unk_id)
        v = self.embedding(ids)  # (B, T, E)
        if self.chars is None:
            return v
        if chars is None:
            raise ValueError("this model reads characters: pass chars (B, T, C)")
        words = chars[mask]  # (N, C): only real tokens, so no word has zero characters
        lengths = (words != 0).sum(1).clamp(min=1)
        r = self.chars(words, lengths)  # (N, R)
        out = v.new_zeros(*ids.shape, r.shape[-1])  # (B, T, R)
        out[mask] = r
        return torch.cat([v, out], -1)


def load_word_vectors(embedding: nn.Embedding, vocab: Vocab, path: str, encoding="utf-8") -> int:
    """Copy the vectors of a word2vec/GloVe text file into ``embedding`` rows of ``vocab``'s
    words (other rows keep their random initialisation). Returns how many words were found."""
    vectors, dim = read_word_vectors(path, keep=vocab.itos, encoding=encoding)
    if dim != embedding.embedding_dim:
        raise DataError(
            f"the vectors have {dim} dimensions but embed_size is {embedding.embedding_dim}; "
            f"pass --embed-size {dim}",
            path,
        )
    with torch.no_grad():
        for word, vec in vectors.items():
            embedding.weight[vocab.stoi[word]] = torch.from_numpy(vec)
    log.info(
        "%s: vectors for %d of %d vocabulary words (%.1f%%)",
        path,
        len(vectors),
        len(vocab),
        100 * len(vectors) / max(1, len(vocab)),
    )
    return len(vectors)


class TokenEncoder:
    """Tokens → the ids a :class:`TokenEmbedder` reads: token ids (lowercased first if asked)
    and, with a character vocabulary, each word's character ids (words longer than
    ``max_word_len`` keep their first and last characters: prefixes and suffixes carry the
    morphology)."""

    def __init__(
        self, vocab: Vocab, chars: Vocab | None, lowercase: bool = False, max_word_len: int = 20
    ):
        self.vocab = vocab
        self.chars = chars
        self.lowercase = lowercase
        self.max_word_len = max(1, max_word_len)

    def ids(self, tokens: Sequence[str]) -> list[int]:
        if self.lowercase:
            tokens = [t.lower() for t in tokens]
        return self.vocab.encode(tokens, unknown="unk")

    def char_ids(self, tokens: Sequence[str]) -> np.ndarray | None:
        """``(len(tokens), C)`` int64, C = the longest kept word, 0-padded; None without chars."""
        if self.chars is None:
            return None
        m = self.max_word_len
        words = [t if len(t) <= m else t[: m // 2] + t[len(t) - (m - m // 2) :] for t in tokens]
        out = np.zeros((len(words), max(1, max(map(len, words), default=1))), dtype=np.int64)
        stoi, unk = self.chars.stoi, self.chars.unk_id
        for i, w in enumerate(words):
            out[i, : len(w)] = [stoi.get(c, unk) for c in w]
        return out


def token_features(
    config: TokenFeatureOptions, data_config: LabelledTextData, vocab: Vocab, use_chars: bool
) -> tuple[TokenEncoder, TokenEmbedder]:
    """The :class:`TokenEncoder` and :class:`TokenEmbedder` of a word model from its configs:
    with ``use_chars``, a character vocabulary of ``data_config.chars`` and the character-level
    word vector ``config.char_repr``; otherwise word embeddings only."""
    c, d = config, data_config
    chars = Vocab(d.chars or [], specials=CHAR_SPECIALS, level="char") if use_chars else None
    encoder = TokenEncoder(vocab, chars, d.lowercase, d.max_word_len)
    embedder = TokenEmbedder(
        len(vocab),
        c.embed_size,
        vocab.unk_id,
        c.char_repr if chars is not None else "none",
        len(chars) if chars is not None else 0,
        c.char_embed_size,
        c.char_hidden_size,
        c.char_kernel,
        c.word_dropout,
        c.embed_init,
    )
    return encoder, embedder


def char_vocab(token_lists: Sequence[Sequence[str]]) -> Vocab:
    """Characters of the training tokens (``<pad>`` = 0, ``<unk>`` = 1)."""
    seen = {c for tokens in token_lists for t in tokens for c in t}
    return Vocab(sorted(seen), specials=CHAR_SPECIALS, level="char")

"""Parallel data for seq2seq: pairs, padding, length chunks, vocabularies, encoding."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from rnnkit.data.batching import pad_sequences
from rnnkit.data.parallel import read_parallel, tokenize
from rnnkit.data.vocab import SPECIALS, Vocab
from rnnkit.errors import DataError
from rnnkit.tasks.common.batching import split_holdout

if TYPE_CHECKING:
    from rnnkit.tasks.seq2seq.config import Seq2SeqData
    from rnnkit.tasks.seq2seq.model import Seq2Seq

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Examples and batches
# ---------------------------------------------------------------------------------------------
@dataclass
class Pair:
    """One encoded sentence pair: source ids, target ids (no bos/eos) and the raw reference."""

    source: list[int]
    target: list[int]
    reference: str = ""


def collate_pairs(pairs: Sequence[Pair], bos: int, eos: int) -> dict[str, Tensor]:
    """``source (B, S)``, ``lengths (B,)``, ``target_in (B, T)`` = bos y, ``target_out (B, T)``
    = y eos; padding is id 0 everywhere."""
    source, lengths = pad_sequences([torch.tensor(p.source, dtype=torch.long) for p in pairs], 0)
    t_in, _ = pad_sequences([torch.tensor([bos, *p.target], dtype=torch.long) for p in pairs], 0)
    t_out, _ = pad_sequences([torch.tensor([*p.target, eos], dtype=torch.long) for p in pairs], 0)
    return {
        "source": source,
        "lengths": lengths.to(torch.long),
        "target_in": t_in,
        "target_out": t_out,
    }


def _sorted_chunks(lengths: Sequence[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


# ---------------------------------------------------------------------------------------------
# Data preparation
# ---------------------------------------------------------------------------------------------
def read_split(d: Seq2SeqData, part: str) -> tuple[list[str], list[str], str]:
    """``(sources, targets, description)`` of the ``train`` or ``valid`` pairs: the files given,
    or a seeded hold-out of the training pairs."""
    if not d.src:
        raise DataError(
            "no training data: pass --src FILE --tgt FILE (or --src PAIRS.tsv); "
            "see recipes/multi30k.toml"
        )
    if (d.valid_tgt is not None) and not d.valid_src:
        raise DataError("--valid-tgt needs --valid-src")
    if d.valid_src:
        if part == "train":
            src, tgt = read_parallel(d.src, d.tgt, d.encoding)
            return src, tgt, str(d.src)
        src, tgt = read_parallel(d.valid_src, d.valid_tgt, d.encoding)
        return src, tgt, str(d.valid_src)
    src, tgt = read_parallel(d.src, d.tgt, d.encoding)
    kept, held = split_holdout(len(src), d.valid_fraction, d.split_seed)
    idx = kept if part == "train" else held
    return [src[i] for i in idx], [tgt[i] for i in idx], f"held-out part of {d.src}"


def resolve_vocabularies(d: Seq2SeqData, sources: Sequence[str], targets: Sequence[str]) -> None:
    """Fill the data config's vocabularies from the training pairs."""
    for name, texts in (("source_vocab", sources), ("target_vocab", targets)):
        vocab = Vocab.build(
            (tokenize(t, d.lowercase) for t in texts),
            level="word",
            max_size=d.max_vocab,
            min_freq=d.min_freq,
        )
        setattr(d, name, vocab.itos[len(SPECIALS) :])


def encode_pairs(
    model: Seq2Seq, sources: Sequence[str], targets: Sequence[str], max_len: int | None = None
) -> list[Pair]:
    lower = model.data_config.lowercase
    pairs, dropped = [], 0
    for s, t in zip(sources, targets):
        src, tgt = tokenize(s, lower), tokenize(t, lower)
        if not src or not tgt or (max_len and (len(src) > max_len or len(tgt) > max_len)):
            dropped += 1
            continue
        pairs.append(
            Pair(
                model.source_vocab.encode(src, unknown="unk"),
                model.target_vocab.encode(tgt, unknown="unk"),
                model.reference_text(t),
            )
        )
    if dropped:
        log.info("dropped %d pairs with an empty side or longer than %s tokens", dropped, max_len)
    if not pairs:
        raise DataError("no sentence pairs left after tokenising")
    return pairs

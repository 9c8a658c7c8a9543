"""The translation training task for :func:`rnnkit.train.fit` and the ``TASK`` entry."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rnnkit.errors import DataError
from rnnkit.metrics import bleu_scores
from rnnkit.tasks.base import saved_configs
from rnnkit.tasks.common.batching import BucketedBatches, batch_and_seed
from rnnkit.tasks.seq2seq.config import Seq2SeqConfig, Seq2SeqData
from rnnkit.tasks.seq2seq.data import (
    _sorted_chunks,
    collate_pairs,
    encode_pairs,
    read_split,
    resolve_vocabularies,
)
from rnnkit.tasks.seq2seq.model import Seq2Seq

if TYPE_CHECKING:
    from rnnkit.tasks.seq2seq.data import Pair

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class TranslationTraining(BucketedBatches):
    """Length-bucketed batches for :func:`rnnkit.train.fit` (epoch e's order is seeded with
    (seed, e), so a resumed run sees the same batches); validation reports the per-token
    cross-entropy ``loss``, ``ppl`` and greedy corpus ``bleu``."""

    tokens_name = "token"

    def __init__(
        self,
        model: Seq2Seq,
        train: list[Pair],
        valid: list[Pair],
        batch_size: int,
        seed: int,
        bleu: bool = True,
    ):
        if not train:
            raise DataError("no training pairs")
        # sort key inside a pool: source length, then target length
        keys = [1000 * len(p.source) + len(p.target) for p in train]
        super().__init__(model, train, valid, batch_size, seed, keys)
        self.bleu = bleu

    def batch(self, epoch: int, index: int) -> dict[str, Tensor]:
        m = self.model
        return collate_pairs([self.train[i] for i in self._plan_for(epoch)[index]], m.bos, m.eos)

    def training_loss(self, model, batch) -> tuple[Tensor, int]:
        out = model.forward_batch(batch) if hasattr(model, "forward_batch") else None
        if out is None:  # wrapped (DistributedDataParallel): call through the wrapper
            out = model(
                batch["source"],
                targets=batch["target_out"],
                lengths=batch["lengths"],
                target_inputs=batch["target_in"],
            )
        return out.loss, int((batch["target_out"] != 0).sum())

    @torch.no_grad()
    def evaluate(self, model) -> dict[str, float]:
        model = self.model
        model.eval()
        total, count = 0.0, 0
        for idx in _sorted_chunks([len(p.source) for p in self.valid], 128):
            batch = collate_pairs([self.valid[i] for i in idx], model.bos, model.eos)
            n = int((batch["target_out"] != 0).sum())
            total += float(model.forward_batch(batch).loss) * n
            count += n
        loss = total / max(count, 1)
        out = {"loss": loss, "ppl": math.exp(min(loss, 50.0))}
        if self.bleu:
            hyps = model.hypotheses_text(model.decode([p.source for p in self.valid], 1))
            out["bleu"] = bleu_scores(hyps, [[p.reference] for p in self.valid])["bleu"]
        return out


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _TranslateTask:
    """Translate sentences with a recurrent encoder–decoder, with or without attention."""

    name = "translate"
    sections = {"model": Seq2SeqConfig, "data": Seq2SeqData}
    defaults = {"train": {"batch_size": 64, "lr": 1e-3, "epochs": 10, "eval_every": 0}}

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: Seq2SeqConfig = configs["model"]
        data_cfg: Seq2SeqData = configs["data"]
        train_src, train_tgt, where = read_split(data_cfg, "train")
        valid = read_split(data_cfg, "valid")
        resolve_vocabularies(data_cfg, train_src, train_tgt)
        model = Seq2Seq(model_cfg, data_cfg).to(device)
        log.info(
            "data: %d training pairs (%s), %d validation pairs; vocabularies of %d source and "
            "%d target words (min_freq %d)",
            len(train_src),
            where,
            len(valid[0]),
            len(model.source_vocab),
            len(model.target_vocab),
            data_cfg.min_freq,
        )
        return model, self._training(model, (train_src, train_tgt), valid[:2], train_cfg)

    @staticmethod
    def _training(model, train, valid, train_cfg) -> TranslationTraining:
        d = model.data_config
        return TranslationTraining(
            model,
            encode_pairs(model, *train, max_len=d.max_len),
            encode_pairs(model, *valid),
            *batch_and_seed(train_cfg, 64),
            d.bleu,
        )

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        model_cfg, data_cfg = saved_configs(saved, Seq2SeqConfig, Seq2SeqData)
        model = Seq2Seq(model_cfg, data_cfg).to(device)
        training = None
        if with_data:
            train = read_split(data_cfg, "train")[:2]
            valid = read_split(data_cfg, "valid")[:2]
            training = self._training(model, train, valid, train_cfg)
        return model, training


TASK = _TranslateTask()

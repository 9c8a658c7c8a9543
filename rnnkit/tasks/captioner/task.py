"""The captioning training task for :func:`rnnkit.train.fit` and the ``TASK`` entry."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

import numpy as np
from torch import Tensor

from rnnkit.data.images import (
    read_captions,
)
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.tasks.base import saved_configs
from rnnkit.tasks.captioner.config import CaptionData, CaptionerConfig
from rnnkit.tasks.captioner.data import caption_tokens, collate, image_batches, read_split
from rnnkit.tasks.captioner.model import Captioner
from rnnkit.tasks.common.batching import PlannedBatches, batch_and_seed

if TYPE_CHECKING:
    from rnnkit.tasks.captioner.data import CaptionSplit

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------
# Training
# ---------------------------------------------------------------------------------------------
class CaptionTraining(PlannedBatches):
    """Batches for :func:`rnnkit.train.fit`: each epoch shuffles the images (a generator seeded
    with (seed, epoch), so a resumed run sees the same batches) and cuts their captions, kept
    together per image, into batches; validation reports loss and BLEU-1…4."""

    tokens_name = "tok"

    def __init__(
        self,
        model: Captioner,
        train: CaptionSplit,
        valid: CaptionSplit,
        batch_size: int,
        seed: int,
        eval_beam: int = 1,
    ):
        if len(train) == 0:
            raise DataError("no training captions")
        super().__init__(model, train, valid, batch_size, seed)
        self.eval_beam = eval_beam

    def draw_plan(self, rng: np.random.Generator) -> list[list[int]]:
        return image_batches(self.train.image_of, self.batch_size, rng)

    def batch(self, epoch: int, index: int) -> dict[str, Tensor]:
        v = self.model.vocab
        return collate(self.train, self._plan_for(epoch)[index], v.pad_id, v.bos_id, v.eos_id)

    def training_loss(self, model, batch) -> tuple[Tensor, int]:
        inner = getattr(model, "module", model)  # DistributedDataParallel wraps the model
        return inner.training_loss(batch)

    def evaluate(self, model) -> dict[str, float]:
        t = time.monotonic()
        m = getattr(model, "module", model).evaluate_split(self.valid, self.eval_beam)
        log.debug("validation in %.1f s", time.monotonic() - t)
        return {k: m[k] for k in ("loss", "bleu1", "bleu2", "bleu3", "bleu4")}


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _CaptionTask:
    """Describe images in words: a CNN encoder and an LSTM decoder, with or without attention."""

    name = "caption"
    sections = {"model": CaptionerConfig, "data": CaptionData}
    defaults = {
        "train": {"batch_size": 64, "lr": 1e-3, "clip_norm": 5.0, "eval_every": 0, "epochs": 8}
    }

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: CaptionerConfig = configs["model"]
        data_cfg: CaptionData = configs["data"]
        if not data_cfg.captions or not data_cfg.images:
            raise DataError("no training data: pass --images TAR --captions FILE")
        caps = read_captions(data_cfg.captions).head(data_cfg.max_images)
        tokens = [caption_tokens(c)[: data_cfg.max_len] for cs in caps.captions for c in cs]
        vocab = Vocab.build(tokens, level="word", min_freq=data_cfg.min_freq)
        model = Captioner(model_cfg, data_cfg, vocab).to(device)
        log.info(
            "data: %d training images with %d captions, vocabulary of %d words (min_freq %d)",
            len(caps),
            caps.num_captions,
            len(vocab),
            data_cfg.min_freq,
        )
        return model, self._training(model, data_cfg, train_cfg)

    @staticmethod
    def _training(model: Captioner, d: CaptionData, train_cfg) -> CaptionTraining:
        progress = train_cfg.progress if train_cfg is not None else True
        t = time.monotonic()
        train = read_split(model, d, "train", progress)
        valid = read_split(model, d, "valid", progress)
        log.info(
            "images ready in %.1f s: %d train (%d captions), %d validation",
            time.monotonic() - t,
            len(train.names),
            len(train),
            len(valid.names),
        )
        return CaptionTraining(model, train, valid, *batch_and_seed(train_cfg, 64), d.eval_beam)

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        if vocab is None:
            raise DataError("the run has no vocab.json")
        model_cfg, data_cfg = saved_configs(saved, CaptionerConfig, CaptionData)
        model = Captioner(model_cfg, data_cfg, vocab).to(device)
        training = self._training(model, data_cfg, train_cfg) if with_data else None
        return model, training


TASK = _CaptionTask()

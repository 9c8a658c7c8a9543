"""The classification training task for :func:`rnnkit.train.fit` and the ``TASK`` entry."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from rnnkit.errors import DataError
from rnnkit.tasks.base import saved_configs
from rnnkit.tasks.classifier.config import ClassifierConfig, ClassifierData
from rnnkit.tasks.classifier.data import encode_all, read_split, resolve_data
from rnnkit.tasks.classifier.encoders import load_word_vectors
from rnnkit.tasks.classifier.model import Classifier
from rnnkit.tasks.common.batching import BucketedBatches, batch_and_seed, collate

if TYPE_CHECKING:
    from rnnkit.tasks.common.batching import Example

log = logging.getLogger(__name__)


class ClassificationTraining(BucketedBatches):
    """Shuffled, length-bucketed batches for :func:`rnnkit.train.fit`; epoch e's order comes from
    a generator seeded with (seed, e), so a resumed run sees exactly the same batches."""

    tokens_name = "seq"

    def __init__(
        self,
        model: nn.Module,
        train: list[Example],
        valid: list[Example],
        batch_size: int,
        seed: int,
    ):
        if not train:
            raise DataError("no training examples")
        super().__init__(model, train, valid, batch_size, seed, [e.length for e in train])

    def batch(self, epoch: int, index: int) -> dict[str, Tensor | None]:
        return collate([self.train[i] for i in self._plan_for(epoch)[index]])

    def training_loss(self, model, batch) -> tuple[Tensor, int]:
        out = model.forward_batch(batch)
        return out.loss, int(batch["lengths"].numel())

    def evaluate(self, model) -> dict[str, float]:
        m = model.evaluate_examples(self.valid)
        return {k: m[k] for k in ("loss", "accuracy", "macro_f1")}


# ---------------------------------------------------------------------------------------------
# Task registry entry
# ---------------------------------------------------------------------------------------------
class _ClassifyTask:
    """Classify whole sequences: text (sentiment, topics) or rows of numbers (digits)."""

    name = "classify"
    sections = {"model": ClassifierConfig, "data": ClassifierData}

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: ClassifierConfig = configs["model"]
        data_cfg: ClassifierData = configs["data"]
        train_raw = read_split(data_cfg, "train")
        valid_raw = read_split(data_cfg, "valid")
        vocab = resolve_data(data_cfg, train_raw)
        model = Classifier(model_cfg, data_cfg, vocab).to(device)
        if data_cfg.embeddings:
            if model.embedder is None:
                raise DataError("--embeddings needs text input (not format=numeric)")
            load_word_vectors(model.embedder.embedding, vocab, data_cfg.embeddings)
        log.info(
            "data: %d training and %d validation examples, %d classes %s%s",
            len(train_raw.labels),
            len(valid_raw.labels),
            len(data_cfg.labels),
            data_cfg.labels[:10],
            f", vocabulary of {len(vocab)} {data_cfg.level}s" if vocab is not None else "",
        )
        return model, self._training(model, train_raw, valid_raw, train_cfg)

    @staticmethod
    def _training(model, train_raw, valid_raw, train_cfg) -> ClassificationTraining:
        train = encode_all(model, train_raw, "training data")
        valid = encode_all(model, valid_raw, "validation data")
        return ClassificationTraining(model, train, valid, *batch_and_seed(train_cfg, 32))

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        model_cfg, data_cfg = saved_configs(saved, ClassifierConfig, ClassifierData)
        model = Classifier(model_cfg, data_cfg, vocab).to(device)
        training = None
        if with_data:
            training = self._training(
                model, read_split(data_cfg, "train"), read_split(data_cfg, "valid"), train_cfg
            )
        return model, training


TASK = _ClassifyTask()

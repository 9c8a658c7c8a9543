"""The classification training task for :func:`rnnkit.train.fit` and the ``TASK`` entry."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from torch import Tensor, nn

from rnnkit.errors import DataError
from rnnkit.tasks.base import saved_configs
from rnnkit.tasks.classifier.config import ClassifierData
from rnnkit.tasks.classifier.data import encode_all, read_split, resolve_data
from rnnkit.tasks.classifier.encoders import load_word_vectors
from rnnkit.tasks.classifier.model import Classifier
from rnnkit.tasks.common.batching import BucketedBatches, batch_and_seed, collate

if TYPE_CHECKING:
    from rnnkit.data.vocab import Vocab
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
@dataclass(frozen=True)
class LabelledDataFlow:
    """How a labelled-text task's examples travel from its files to training batches.

    ``data_class`` is the ``--data`` option section; ``read_split(data_cfg, part)`` reads the
    ``"train"`` or ``"valid"`` examples from the files; ``resolve_data(data_cfg, train)`` fills the
    label set (and characters) from the training split and returns the word vocabulary;
    ``encode(model, examples, where)`` turns examples into what the model reads (``where`` names
    them in errors); ``training_class`` batches the encoded splits for :func:`rnnkit.train.fit`.
    """

    data_class: type
    read_split: Callable[[Any, str], Any]
    resolve_data: Callable[[Any, Any], Vocab | None]
    encode: Callable[[nn.Module, Any, str], list[Example]]
    training_class: type[BucketedBatches]


class LabelledTextTask:
    """The ``TASK`` of a model of labelled text, shared by the classifier and the tagger.

    ``build`` reads the train and validation splits, fills the label set and vocabularies from
    the training split, builds ``model_class`` (its word embeddings seeded from ``--embeddings``
    when given) and its training task; ``restore`` rebuilds both from a run. A subclass names
    ``name``, ``model_class`` (whose ``config_class`` is the ``--model`` section) and the data
    ``flow``; it may add ``check_data`` and ``log_data``.
    """

    name: str
    model_class: type[nn.Module]
    flow: LabelledDataFlow

    @property
    def sections(self) -> dict[str, type]:
        """The option sections of ``rnnkit train``: the model's and the data's."""
        return {"model": self.model_class.config_class, "data": self.flow.data_class}

    def read_splits(self, data_cfg: Any) -> tuple[Any, Any]:
        """The training and validation examples, as read from the files."""
        return self.flow.read_split(data_cfg, "train"), self.flow.read_split(data_cfg, "valid")

    def training(self, model: nn.Module, train: Any, valid: Any, train_cfg) -> BucketedBatches:
        """The flow's ``training_class`` over the encoded splits."""
        encode = self.flow.encode
        return self.flow.training_class(
            model,
            encode(model, train, "training data"),
            encode(model, valid, "validation data"),
            *batch_and_seed(train_cfg, 32),
        )

    def check_data(self, model: nn.Module, train: Any) -> None:
        """A ``DataError`` where the training data breaks what the model assumes."""

    def log_data(self, model: nn.Module, train: Any, valid: Any) -> None:
        """One log line on the data the model was built from."""

    def build(self, configs: dict[str, Any], train_cfg, device):
        data_cfg = configs["data"]
        train, valid = self.read_splits(data_cfg)
        vocab = self.flow.resolve_data(data_cfg, train)
        model = self.model_class(configs["model"], data_cfg, vocab).to(device)
        if data_cfg.embeddings:
            if model.embedder is None:
                raise DataError("--embeddings needs text input (not format=numeric)")
            load_word_vectors(model.embedder.embedding, vocab, data_cfg.embeddings)
        self.check_data(model, train)
        self.log_data(model, train, valid)
        return model, self.training(model, train, valid, train_cfg)

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        model_cfg, data_cfg = saved_configs(saved, self.sections["model"], self.sections["data"])
        model = self.model_class(model_cfg, data_cfg, vocab).to(device)
        training = None
        if with_data:
            train, valid = self.read_splits(data_cfg)
            training = self.training(model, train, valid, train_cfg)
        return model, training


class _ClassifyTask(LabelledTextTask):
    """Classify whole sequences: text (sentiment, topics) or rows of numbers (digits)."""

    name = "classify"
    model_class = Classifier
    flow = LabelledDataFlow(
        ClassifierData, read_split, resolve_data, encode_all, ClassificationTraining
    )

    def log_data(self, model, train, valid) -> None:
        d = model.data_config
        log.info(
            "data: %d training and %d validation examples, %d classes %s%s",
            len(train.labels),
            len(valid.labels),
            len(d.labels),
            d.labels[:10],
            f", vocabulary of {len(model.vocab)} {d.level}s" if model.vocab is not None else "",
        )


TASK = _ClassifyTask()

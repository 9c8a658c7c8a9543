"""Language-model training for :func:`rnnkit.train.fit`, the corpus reader, the ``TASK``."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from rnnkit.data.batching import StreamBatches
from rnnkit.data.readers import TINY_SHAKESPEARE, bundled_path, read_text, split_text
from rnnkit.data.vocab import Vocab
from rnnkit.distributed import Dist
from rnnkit.errors import DataError
from rnnkit.state import detach_state
from rnnkit.tasks.common.batching import read_with_validation
from rnnkit.tasks.language_model.config import LanguageModelConfig, LanguageModelData, tokenize_text
from rnnkit.tasks.language_model.model import build_language_model

if TYPE_CHECKING:
    from rnnkit.tasks.language_model.model import LanguageModel

log = logging.getLogger(__name__)


class LanguageModelTraining:
    """Truncated-BPTT training over stream batches, for :func:`rnnkit.train.fit`.

    Each epoch starts from a zero state at a slightly different offset into the text (so window
    boundaries move between epochs); within an epoch the state flows from window to window and is
    detached at each boundary.

    Under ``torchrun`` the ``batch_size`` streams are split between the ranks: rank r trains on
    streams r·b … (r+1)·b − 1 (b = batch_size / world size), its own contiguous slices of the
    text, so each rank's carried state stays consistent and DDP's gradient average equals the
    single-process gradient of the whole batch.
    """

    tokens_name = "tok"

    def __init__(
        self, model: LanguageModel, train_ids: Tensor, valid_ids: Tensor, batch_size: int, bptt: int
    ):
        self.model = model
        self.train_ids = train_ids
        self.valid_ids = valid_ids
        self.batch_size = batch_size
        self.bptt = bptt
        self.state = None
        group = Dist()
        if batch_size % group.world:
            raise DataError(
                f"batch_size {batch_size} is the global batch and must divide evenly between "
                f"{group.world} processes"
            )
        per_rank = batch_size // group.world
        self._rows = slice(group.rank * per_rank, (group.rank + 1) * per_rank)
        self._epoch = -1
        self._streams: StreamBatches | None = None
        # the fewest full windows any epoch offset yields: every epoch has this many steps
        self._per_epoch = self._fewest_windows()
        if self._per_epoch < 1:
            raise DataError(
                f"the training text has {len(train_ids)} tokens: too short for batch_size "
                f"{batch_size} × bptt {bptt}; need at least {batch_size * (2 * bptt + 1)}"
            )

    def _fewest_windows(self) -> int:
        """Full windows of the shortest epoch: the text after the largest offset (``bptt``)."""
        rest = self.train_ids[self.bptt :]
        return StreamBatches(rest, self.batch_size, self.bptt, drop_last=True).num_windows

    def batches_per_epoch(self) -> int:
        return self._per_epoch

    def _offset(self, epoch: int) -> int:
        return (epoch * 7919) % self.bptt  # deterministic, so a resumed run sees the same data

    def _streams_for(self, epoch: int) -> StreamBatches:
        if self._epoch != epoch or self._streams is None:
            self._streams = StreamBatches(
                self.train_ids[self._offset(epoch) :], self.batch_size, self.bptt, drop_last=True
            )
            self._epoch = epoch
        return self._streams

    def start_epoch(self, epoch: int) -> None:
        self.state = None

    def batch(self, epoch: int, index: int):
        inputs, targets = self._streams_for(epoch).window(index)
        return inputs[self._rows], targets[self._rows]  # this rank's streams

    def training_loss(self, model: LanguageModel, batch) -> tuple[Tensor, int]:
        inputs, targets = (t.to(self.model.device) for t in batch)
        out = model(inputs, self.state, targets)
        self.state = detach_state(out.state)  # carry the values, cut the graph
        return out.loss, targets.numel()

    def evaluate(self, model: LanguageModel) -> dict[str, float]:
        m = model.evaluate_ids(self.valid_ids)
        return {"loss": m["loss"], "bits": m["bits"], "perplexity": m["perplexity"]}

    def carried_state(self) -> dict[str, Tensor]:
        """The state carried between BPTT windows, as named tensors: ``h`` (and ``c`` for an
        LSTM's pair); ``part0``, ``part1`` … for the longer tuples of other cells (mLSTM)."""
        if self.state is None:
            return {}
        if isinstance(self.state, tuple) and len(self.state) == 2:
            return {"h": self.state[0], "c": self.state[1]}
        if isinstance(self.state, tuple):
            return {f"part{i}": t for i, t in enumerate(self.state)}
        return {"h": self.state}

    def load_carried_state(self, saved: dict[str, Tensor]) -> None:
        if not saved:
            self.state = None
        elif "c" in saved:
            self.state = (saved["h"], saved["c"])
        elif "h" in saved:
            self.state = saved["h"]
        else:
            self.state = tuple(saved[f"part{i}"] for i in range(len(saved)))


def _find_split(directory: Path, split: str) -> Path:
    matches = sorted(directory.glob(f"*{split}.txt"))
    if not matches:
        raise DataError(f"no *{split}.txt file in the data directory", path=directory)
    return matches[0]


def read_corpus(data: LanguageModelData) -> tuple[str, str, str]:
    """(train text, validation text, a description of where they came from)."""
    if data.data_dir:
        directory = Path(data.data_dir)
        if not directory.is_dir():
            raise DataError("--data-dir is not a directory", path=directory)
        train_path, valid_path = _find_split(directory, "train"), _find_split(directory, "valid")
        train = read_text(train_path, data.encoding)
        valid = read_text(valid_path, data.encoding)
        return train, valid, f"{train_path} (validation: {valid_path})"

    def hold_out(text: str) -> tuple[str, str, str]:
        train, valid = split_text(text, data.valid_fraction)
        return train, valid, f"last {data.valid_fraction:.0%} held out for validation"

    path = Path(data.data) if data.data else bundled_path(TINY_SHAKESPEARE)
    train, valid, where = read_with_validation(
        path, data.valid, lambda p: read_text(p, data.encoding), hold_out
    )
    if len(valid) < 2:
        raise DataError(f"the validation text is too short ({len(valid)} characters)", path=path)
    return train, valid, where


class _LanguageModelTask:
    """Language model: predict the next character or word (char-LSTM on Tiny Shakespeare by default)."""

    name = "lm"
    sections = {"model": LanguageModelConfig, "data": LanguageModelData}
    # the main job: 16 epochs or 8 minutes, whichever comes first (the cosine schedule spans the
    # budget), so `rnnkit train lm` ends in time on a laptop and trains fully on a GPU. A 1 × 384
    # LSTM with light dropout, lr 3e-3 and 64 × 64-step windows was the best of the settings tried
    # for both a 3-minute and a 16-epoch budget (README, "Character language model")
    defaults = {
        "train": {"epochs": 16, "minutes": 8.0, "eval_every": 400, "lr": 3e-3, "batch_size": 64}
    }

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: LanguageModelConfig = configs["model"]
        data_cfg: LanguageModelData = configs["data"]
        prepared = self._prepared(data_cfg, train_cfg)
        if prepared is not None:  # a prepared folder (or a large file's cache): memory maps
            from rnnkit.data.prepared import load_vocabulary

            data_cfg.level = prepared.level  # the folder decides; saved so the run says so
            vocab = load_vocabulary(prepared.path / prepared.meta["tokenizer"])
            log.info("data: %r; vocabulary of %d %s tokens", prepared, len(vocab), prepared.level)
            model = build_language_model(model_cfg, vocab).to(device)
            model.data_config = data_cfg
            return model, self._prepared_training(model, prepared, data_cfg, train_cfg)
        train_text, valid_text, where = read_corpus(data_cfg)
        if data_cfg.level == "word":
            words = tokenize_text(train_text, "word")
            vocab = Vocab.build(
                words, level="word", max_size=data_cfg.max_vocab, min_freq=data_cfg.min_freq
            )
        else:
            vocab = Vocab.build(train_text, level="char")
        log.info("data: %s; vocabulary of %d %ss", where, len(vocab), data_cfg.level)
        model = build_language_model(model_cfg, vocab).to(device)
        training = self._training(model, vocab, train_text, valid_text, data_cfg, train_cfg)
        return model, training

    @staticmethod
    def _prepared(data_cfg, train_cfg=None):
        from rnnkit.tasks.language_model.prepared import open_prepared

        return open_prepared(data_cfg, progress=getattr(train_cfg, "progress", True))

    @staticmethod
    def _prepared_training(model, prepared, data_cfg, train_cfg):
        from rnnkit.tasks.language_model.prepared import PreparedLanguageModelTraining

        return PreparedLanguageModelTraining(
            model, prepared.train, prepared.valid, train_cfg.batch_size, data_cfg.bptt
        )

    def _training(self, model, vocab, train_text, valid_text, data_cfg, train_cfg):
        train_ids = torch.tensor(vocab.encode(model.tokens(train_text), unknown="unk"))
        valid_ids = torch.tensor(vocab.encode(model.tokens(valid_text), unknown="unk"))
        return LanguageModelTraining(
            model, train_ids, valid_ids, train_cfg.batch_size, data_cfg.bptt
        )

    def restore(self, saved: dict[str, Any], vocab: Vocab, device, train_cfg=None, with_data=False):
        from rnnkit.config import from_dict

        model_cfg = from_dict(LanguageModelConfig, saved["model"])
        model = build_language_model(model_cfg, vocab).to(device)
        if "data" in saved:  # evaluate's default: the validation split of the run's corpus
            model.data_config = from_dict(LanguageModelData, saved["data"])
        training = None
        if with_data:
            data_cfg = from_dict(LanguageModelData, saved["data"])
            prepared = self._prepared(data_cfg, train_cfg)
            if prepared is not None:
                return model, self._prepared_training(model, prepared, data_cfg, train_cfg)
            train_text, valid_text, _ = read_corpus(data_cfg)
            training = self._training(model, vocab, train_text, valid_text, data_cfg, train_cfg)
        return model, training


TASK = _LanguageModelTask()

"""Music generation: Irish folk tunes in ABC notation, written by the character language model.

The task is the language model of :mod:`rnnkit.tasks.language_model` (same architecture, same
truncated-BPTT training, same sampling) applied to whole tunes; what this module adds:

* **data** — an ABC file split into tunes (:func:`rnnkit.data.abc.split_tunes`; default: the
  bundled 724 Irish tunes), some header fields dropped (``Z:`` by default: in the bundled file it
  is a transcription id, noise to a model), and a *tune-level* train/validation split (a seeded
  shuffle of whole tunes, so no tune is cut in two);
* **tune boundaries** — every tune is read as ``<bos> text <eos>``; the stream of training tunes
  is reshuffled every epoch (the order is a seeded function of the epoch, so a resumed run sees
  the same batches). The model learns p(<eos> | tune so far), i.e. where a tune ends;
* **generation of whole tunes** (:meth:`MusicModel.generate_tune`): from ``<eos> <bos>`` (the
  model's view of "a new tune starts here") the header is written with ``X:<n>``; fields the
  user fixes (title, meter, unit length, key) are written where the model starts that field,
  and any still missing before ``K:`` (which ends an ABC header). The body is then sampled,
  x_{t+1} ~ softmax(logits / T) (top-k / top-p as in the language model), until the model emits
  ``<eos>`` (or a blank line, or a new ``X:``), or ``max_chars`` is reached;
* **the command line** — ``rnnkit generate RUN --tunes N --out DIR --midi --wav --png``
  (in :mod:`rnnkit.cli.music`), each tune checked and exported with :mod:`rnnkit.music_export`.

Validation loss is the mean cross-entropy per character of the held-out tunes read as one
stream (markers included); bits/char = nats/char / ln 2.
"""

from __future__ import annotations

import logging
import math
import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from rnnkit.config import option
from rnnkit.data.abc import Tune, normalize_key, normalize_meter, parse_length, split_tunes
from rnnkit.data.batching import StreamBatches
from rnnkit.data.readers import IRISH_TUNES, bundled_path, read_text
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.inference import MusicRequest, MusicResult
from rnnkit.tasks.common.batching import read_with_validation
from rnnkit.tasks.language_model import (
    LanguageModel,
    LanguageModelConfig,
    LanguageModelTraining,
    sample_next,
)

__all__ = [
    "GeneratedTune",
    "MusicData",
    "MusicModel",
    "MusicTraining",
    "TASK",
    "prepare_tune",
    "read_tunes",
    "split_train_valid",
]

log = logging.getLogger(__name__)

#: header fields in the order the bundled tunes write them; user-fixed fields missing when the
#: model reaches K: are inserted in this order
HEADER_ORDER = ("X", "T", "C", "R", "M", "L", "Q", "K")


@dataclass
class MusicData:
    """Where the tunes come from and how they are split and cut into training windows."""

    data: str | None = option(None, "ABC file of tunes (default: the bundled 724 Irish tunes)")
    valid: str | None = option(None, "ABC file of validation tunes (default: held out of data)")
    valid_fraction: float = option(
        0.1, "share of the tunes held out for validation when no --valid"
    )
    split_seed: int = option(0, "which tunes are held out (seeded shuffle)")
    drop_fields: str = option(
        "Z", "header fields removed from every tune, as letters (e.g. 'ZN'; '' = none)"
    )
    encoding: str = option("utf-8", "text encoding of the files")
    bptt: int = option(128, "truncated-BPTT window (characters per update)")
    shuffle: bool = option(True, "reshuffle the tune order every epoch")


# ---------------------------------------------------------------------------------------------
# data
# ---------------------------------------------------------------------------------------------
def read_tunes(path: str | Path, encoding: str = "utf-8") -> list[Tune]:
    """The tunes of an ABC file; a :class:`DataError` naming the file when there are none."""
    tunes = split_tunes(read_text(path, encoding))
    if not tunes:
        raise DataError(
            "no tunes found: expected ABC tunes, each starting with an X: line and ending at a "
            "blank line",
            path=path,
        )
    return tunes


def prepare_tune(tune: Tune | str, drop_fields: str = "Z") -> str:
    """A tune's text as the model reads it: header lines of the ``drop_fields`` removed."""
    text = tune.text if isinstance(tune, Tune) else tune
    if not drop_fields:
        return text
    lines = text.split("\n")
    out, in_header = [], True
    for ln in lines:
        if in_header and len(ln) > 1 and ln[1] == ":" and ln[0] in drop_fields:
            continue
        if in_header and ln.startswith("K:"):
            in_header = False
        out.append(ln)
    return "\n".join(out)


def split_train_valid(
    tunes: list[Tune], valid_fraction: float, seed: int = 0
) -> tuple[list[Tune], list[Tune]]:
    """Hold out ``round(valid_fraction · n)`` whole tunes (at least one), chosen by a seeded
    shuffle; both parts keep the file order."""
    if not 0.0 < valid_fraction < 1.0:
        raise ValueError(f"valid_fraction must be in (0, 1), got {valid_fraction}")
    if len(tunes) < 2:
        raise DataError(f"need at least 2 tunes to hold one out for validation; got {len(tunes)}")
    n_valid = min(len(tunes) - 1, max(1, round(valid_fraction * len(tunes))))
    held = set(random.Random(seed).sample(range(len(tunes)), n_valid))
    train = [t for i, t in enumerate(tunes) if i not in held]
    valid = [t for i, t in enumerate(tunes) if i in held]
    return train, valid


def read_music_corpus(data: MusicData) -> tuple[list[str], list[str], str]:
    """(training tune texts, validation tune texts, where they came from)."""

    def hold_out(tunes: list[Tune]) -> tuple[list[Tune], list[Tune], str]:
        train, valid = split_train_valid(tunes, data.valid_fraction, data.split_seed)
        return train, valid, f"{len(valid)} of {len(tunes)} tunes held out for validation"

    path = Path(data.data) if data.data else bundled_path(IRISH_TUNES)
    train, valid, where = read_with_validation(
        path, data.valid, lambda p: read_tunes(p, data.encoding), hold_out
    )
    return (
        [prepare_tune(t, data.drop_fields) for t in train],
        [prepare_tune(t, data.drop_fields) for t in valid],
        where,
    )


# ---------------------------------------------------------------------------------------------
# the model
# ---------------------------------------------------------------------------------------------
@dataclass
class GeneratedTune:
    """A sampled tune: its ABC ``text`` and why sampling stopped (``ended``): ``eos`` (the model
    ended the tune), ``blank line``, ``next tune`` (it began another ``X:``) or ``max_chars``
    (cut off: the tune is incomplete)."""

    number: int
    text: str
    ended: str

    @property
    def complete(self) -> bool:
        return self.ended != "max_chars"


class MusicModel(LanguageModel):
    """The recurrent character language model, reading and writing whole tunes.

    A tune is the sequence ``<bos> c_1 … c_n <eos>``; the model is trained on the stream of such
    sequences, so p(<eos> | <bos> c_1 … c_t) is where it thinks a tune ends.
    """

    # measured on the default model: 97% of tunes parse at 0.6 against 88% at 0.8
    default_temperature = 0.6

    def __init__(self, config: LanguageModelConfig, vocab: Vocab):
        if getattr(config, "model", "rnn") != "rnn":
            raise ValueError("music needs the recurrent language model (--model rnn)")
        if vocab.bos_id is None or vocab.eos_id is None:
            raise ValueError("a music vocabulary needs <bos> and <eos> to mark tune boundaries")
        super().__init__(config, vocab)
        self.data_config = MusicData()  # where the run's tunes came from (set by the task)

    def tune_ids(self, text: str) -> list[int]:
        """``<bos> text <eos>`` as ids (characters outside the vocabulary read as ``<unk>``)."""
        v = self.vocab
        return [v.bos_id, *v.encode(list(text), unknown="unk"), v.eos_id]

    def stream_ids(self, tunes: list[str]) -> Tensor:
        """Tunes one after another as one stream of ids, each ``<bos> … <eos>``."""
        return torch.tensor([i for t in tunes for i in self.tune_ids(t)], dtype=torch.long)

    def evaluate_file(
        self, path: str | None = None, confusion: str | None = None, encoding: str | None = None
    ) -> dict[str, Any]:
        """Cross-entropy per character of the tunes of an ABC file (default: the run's
        validation tunes), read as the stream ``<bos> tune <eos> <bos> …`` with the state
        carried: nats/char, bits/char = nats / ln 2, perplexity = e^nats. (``confusion`` is
        accepted for the ``rnnkit evaluate`` interface and ignored.)"""
        d = self.data_config
        if path is None:
            _, tunes, where = read_music_corpus(d)
            where = f"validation tunes of {where}"
        else:
            tunes = [
                prepare_tune(t, d.drop_fields) for t in read_tunes(path, encoding or d.encoding)
            ]
            where = str(path)
        m = self.evaluate_ids(self.stream_ids(tunes))
        return {
            "data": where,
            "tunes": len(tunes),
            "tokens": m["tokens"],
            "loss": m["loss"],
            "bits": m["bits"],
            "perplexity": m["perplexity"],
        }

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        return (
            f"{result['data']}: {result['tunes']} tunes, {result['tokens']:,} characters, "
            f"loss {result['loss']:.4f} nats/char, {result['bits']:.4f} bits/char, "
            f"perplexity {result['perplexity']:.3f}"
        )

    @torch.no_grad()
    def generate_tune(
        self,
        prompt: str = "",
        *,
        number: int = 1,
        title: str | None = None,
        meter: str | None = None,
        key: str | None = None,
        unit: str | None = None,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        max_chars: int = 2000,
        generator: torch.Generator | None = None,
    ) -> GeneratedTune:
        """Sample one whole tune.

        ``prompt`` is the start of the tune: when it begins with ``X:`` it is the tune's first
        characters (header and perhaps some music); otherwise it is the start of the music,
        written after a sampled header. ``title``/``meter``/``key``/``unit`` fix those header
        fields (``key="D"`` is written ``K:D Major`` as in the bundled tunes). Sampling is
        x_{t+1} ~ softmax(logits / temperature) with top-k / top-p, never ``<pad>``, ``<unk>``
        or ``<bos>``, and ``<eos>`` only once the header is complete. Stops at ``<eos>``, a
        blank line, a new ``X:`` line, or after ``max_chars`` characters.
        """
        self.eval()
        v = self.vocab
        forced: dict[str, str] = {}
        if title:
            forced["T"] = " ".join(title.split())
        if meter:
            forced["M"] = normalize_meter(meter)
        if unit:
            parse_length(unit)
            forced["L"] = unit.strip()
        if key:
            forced["K"] = normalize_key(key)
        never = [i for i in (v.pad_id, v.unk_id, v.bos_id) if i is not None]
        if generator is None:
            generator = torch.Generator(device=self.device)
            generator.manual_seed(torch.seed())

        text = ""
        logits, state = self.advance([v.eos_id, v.bos_id])  # a tune starts after another ends

        def feed(piece: str) -> None:
            nonlocal text, logits, state
            if piece:
                logits, state = self.advance(v.encode(list(piece), unknown="unk"), state)
                text += piece

        def draw(allow_eos: bool, banned: Sequence[int] = ()) -> int:
            masked = logits.clone()
            masked[never + list(banned)] = -math.inf
            if not allow_eos:
                masked[v.eos_id] = -math.inf
            return sample_next(masked, temperature, top_k, top_p, generator)

        def rest_of_line() -> None:
            while not text.endswith("\n") and len(text) < max_chars:
                feed(v.itos[draw(allow_eos=False)])

        if prompt.startswith("X:"):  # the prompt is the tune's beginning
            feed(prompt)
            body_prompt = ""
        else:  # the prompt (if any) is the beginning of the music, after a sampled header
            feed(f"X:{number}\n")
            body_prompt = prompt
        written = {ln[0] for ln in text.split("\n") if len(ln) > 1 and ln[1] == ":"}

        # header: one line at a time until K: is written
        while not _has_key_line(text) and len(text) < max_chars:
            if not text.endswith("\n"):
                rest_of_line()
                continue
            again = [v.stoi[f] for f in forced if f in written and f != "K" and f in v.stoi]
            c = v.itos[draw(allow_eos=False, banned=again)]
            missing = [f for f in HEADER_ORDER if f in forced and f not in written and f != "K"]
            if c == "K" or not c.isalpha():  # the model ends the header
                feed("".join(f"{f}:{forced[f]}\n" for f in missing))
                written.update(missing)
                if "K" in forced:
                    feed(f"K:{forced['K']}\n")
                elif c == "K":
                    feed("K")
                    rest_of_line()
                else:
                    feed(c)  # music without a K: line; the checks will say so
                    break
            elif c in forced and c not in written:
                feed(f"{c}:{forced[c]}\n")
                written.add(c)
            else:
                feed(c)
                written.add(c)
                rest_of_line()

        # body: free sampling until the tune ends
        feed(body_prompt)
        ended = "max_chars"
        while len(text) < max_chars:
            nxt = draw(allow_eos=True)
            if nxt == v.eos_id:
                ended = "eos"
                break
            ch = v.itos[nxt]
            if ch == "\n" and text.endswith("\n"):
                ended = "blank line"
                break
            feed(ch)
            if text.endswith("\nX:"):
                text = text[:-2]
                ended = "next tune"
                break
        return GeneratedTune(number, text.rstrip() if ended != "max_chars" else text, ended)

    #: the requests :meth:`infer` answers (and those of the language model)
    answers = (MusicRequest, *LanguageModel.answers)

    def answer(self, request, **options):
        """Whole tunes for a :class:`~rnnkit.inference.MusicRequest`; the language model's
        answers otherwise (evaluation is in tunes: :meth:`evaluate_file`)."""
        if not isinstance(request, MusicRequest):
            return super().answer(request, **options)
        r = request
        tunes = self.generate_tunes(
            r.tunes,
            seed=r.seed,
            prompt=r.prompt,
            title=r.title,
            meter=r.meter,
            key=r.key,
            unit=r.unit,
            temperature=r.temperature,
            top_k=r.top_k,
            top_p=r.top_p,
            max_chars=r.max_chars,
        )
        return MusicResult([{"number": t.number, "abc": t.text, "ended": t.ended} for t in tunes])

    def generate_tunes(
        self, n: int, seed: int | None = None, first_number: int = 1, **options: Any
    ) -> list[GeneratedTune]:
        """``n`` tunes numbered ``X:first_number…``; ``options`` as for :meth:`generate_tune`.
        The same ``seed`` gives the same tunes."""
        generator = torch.Generator(device=self.device)
        generator.manual_seed(seed if seed is not None else torch.seed())
        return [
            self.generate_tune(number=first_number + i, generator=generator, **options)
            for i in range(n)
        ]


def _has_key_line(text: str) -> bool:
    """Whether a complete ``K:`` line has been written."""
    return any(ln.startswith("K:") for ln in text.split("\n")[:-1])


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
class MusicTraining(LanguageModelTraining):
    """The language model's truncated-BPTT training over the stream of ``<bos> tune <eos>``
    sequences, with the order of the tunes reshuffled every epoch (seeded by the epoch, so a
    resumed run fetches the very same batches)."""

    tokens_name = "char"

    def __init__(
        self,
        model: MusicModel,
        train_tunes: list[str],
        valid_tunes: list[str],
        batch_size: int,
        bptt: int,
        shuffle: bool = True,
        seed: int = 0,
    ):
        self._tunes = [model.tune_ids(t) for t in train_tunes]
        self.shuffle = shuffle
        self.seed = seed
        self._music_epoch, self._music_streams = -1, None
        super().__init__(
            model, model.stream_ids(train_tunes), model.stream_ids(valid_tunes), batch_size, bptt
        )

    def epoch_ids(self, epoch: int) -> Tensor:
        """The training stream of ``epoch``: the tunes in a seeded random order."""
        if not self.shuffle:
            return self.train_ids
        order = list(range(len(self._tunes)))
        random.Random(self.seed * 1_000_003 + epoch).shuffle(order)
        return torch.tensor([i for k in order for i in self._tunes[k]], dtype=torch.long)

    def batch(self, epoch: int, index: int):
        if self._music_epoch != epoch or self._music_streams is None:
            shift = (epoch * 7919) % self.bptt  # window boundaries move between epochs too
            self._music_streams = StreamBatches(
                self.epoch_ids(epoch)[shift:], self.batch_size, self.bptt, drop_last=True
            )
            self._music_epoch = epoch
        return self._music_streams.window(index)


class _MusicTask:
    """Music: a character LSTM over Irish folk tunes in ABC notation (generates playable tunes)."""

    name = "music"
    sections = {"model": LanguageModelConfig, "data": MusicData}
    # the default job: ≤ 12 minutes on 2 CPU cores (the cosine schedule runs over that budget),
    # a 1 × 512 LSTM with dropout 0.25 (the configuration measured in the README)
    defaults = {
        "model": {"hidden_size": 512, "dropout": 0.25},
        "train": {"epochs": 40, "minutes": 12.0, "eval_every": 100},
    }

    def build(self, configs: dict[str, Any], train_cfg, device):
        model_cfg: LanguageModelConfig = configs["model"]
        data_cfg: MusicData = configs["data"]
        train, valid, where = read_music_corpus(data_cfg)
        vocab = Vocab.build("".join(train), level="char")
        log.info(
            "data: %s; %d training tunes (%d characters), %d validation tunes; vocabulary of %d",
            where,
            len(train),
            sum(map(len, train)),
            len(valid),
            len(vocab),
        )
        model = MusicModel(model_cfg, vocab).to(device)
        model.data_config = data_cfg
        return model, self._training(model, train, valid, data_cfg, train_cfg)

    def _training(self, model, train, valid, data_cfg: MusicData, train_cfg) -> MusicTraining:
        return MusicTraining(
            model,
            train,
            valid,
            train_cfg.batch_size,
            data_cfg.bptt,
            shuffle=data_cfg.shuffle,
            seed=train_cfg.seed,
        )

    def restore(self, saved: dict[str, Any], vocab: Vocab, device, train_cfg=None, with_data=False):
        from rnnkit.config import from_dict

        model = MusicModel(from_dict(LanguageModelConfig, saved["model"]), vocab).to(device)
        model.data_config = data_cfg = from_dict(MusicData, saved["data"])
        training = None
        if with_data:
            train, valid, _ = read_music_corpus(data_cfg)
            training = self._training(model, train, valid, data_cfg, train_cfg)
        return model, training


TASK = _MusicTask()

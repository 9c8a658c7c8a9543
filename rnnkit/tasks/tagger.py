"""Many-to-many: one tag per token, using context from both sides (POS tags, named entities).

Owns the tagging task end to end: config dataclasses, data preparation (CoNLL-U or two-column
CoNLL via :mod:`rnnkit.data.conll`), the :class:`Tagger` model, its training task for
:func:`rnnkit.train.fit`, inference (:meth:`Tagger.tag`) and evaluation
(:meth:`Tagger.evaluate_file`: token accuracy, and entity-level precision / recall / F1 when the
tags are BIO).

**Model** (Plank et al. 2016; Lample et al. 2016; Ma & Hovy 2016). Each word w_t becomes
v_t = [E w_t ; r(w_t)] — a word embedding (lowercased lookup by default; rare and unseen words
fall back on ``<unk>``, trained by word dropout) and a character-level vector r (char CNN or
char BiLSTM, :class:`~rnnkit.tasks.classifier.CharEncoder`) that sees spelling, case and
suffixes of any word. A bidirectional recurrent layer gives y_t = [→h_t ; ←h_t], so each tag
sees the whole sentence, and a linear layer gives emission scores e_t = W y_t + b (K tags).

* ``crf = false``: p(y_t | x) = softmax(e_t), trained with the per-token cross-entropy, decoded
  by argmax at each step;
* ``crf = true``: a :class:`~rnnkit.crf.LinearChainCRF` scores whole tag sequences,
  score(x, y) = Σ_t e_t(y_t) + Σ_t A[y_{t−1}, y_t] (+ start/end), trained with
  −log p(y | x) = log Z(x) − score(x, y), decoded by Viterbi. With BIO tags the impossible
  transitions (``O → I-X``, ``B-X → I-Y``) are forbidden (``constrain``).

Losses are averaged per token.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from rnnkit.config import option
from rnnkit.crf import LinearChainCRF, bio_transitions
from rnnkit.data.conll import TAGGED_FORMATS, TaggedSentence, clean_token, read_tagged
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.inference import EvaluateRequest, TagRequest, TagResult
from rnnkit.metrics import (
    bio_spans,
    confusion_matrix,
    entity_scores,
    is_bio,
    plot_confusion_matrix,
)
from rnnkit.tasks.base import Output, TaskModel
from rnnkit.tasks.classifier import (
    CHAR_REPRS,
    CHAR_SPECIALS,
    ClassificationTraining,
    LabelledDataFlow,
    LabelledTextData,
    LabelledTextTask,
    TokenFeatureOptions,
    char_vocab,
    token_features,
)
from rnnkit.tasks.common.batching import (
    Example,
    collate,
    length_sorted_batches,
    split_holdout,
    to_device,
)
from rnnkit.tasks.common.options import with_default
from rnnkit.tasks.common.recurrent import recurrent_for
from rnnkit.tasks.common.report import scores_table

__all__ = ["TASK", "Tagger", "TaggerConfig", "TaggerData", "TaggingTraining"]

log = logging.getLogger(__name__)


@dataclass
class TaggerConfig(TokenFeatureOptions):
    """Architecture of a sequence tagger."""

    embed_size: int = option(100, "word embedding width")
    bidirectional: bool = option(True, "read the sentence both ways")
    dropout: float = option(0.33, "dropout on word vectors, between layers and before output")
    word_dropout: float = option(0.05, "training: replace a word by <unk> with this probability")
    char_repr: str = option("cnn", "character-level word vector", CHAR_REPRS)
    char_embed_size: int = with_default(TokenFeatureOptions, "char_embed_size", 30)
    char_hidden_size: int = with_default(TokenFeatureOptions, "char_hidden_size", 50)
    crf: bool = option(False, "linear-chain CRF output with Viterbi")
    constrain: bool = option(True, "CRF with BIO tags: forbid O→I-X and B-X→I-Y")


@dataclass
class TaggerData(LabelledTextData):
    """Where the tagged sentences come from."""

    format: str = option(
        "auto", "conllu, conll (token<TAB>tag) or auto (by extension)", TAGGED_FORMATS
    )
    column: str = option("upos", "CoNLL-U column to predict", ("upos", "xpos", "deprel"))
    skip_bad_lines: bool = option(False, "report and skip malformed sentences instead of stopping")
    lowercase: bool = option(True, "look words up lowercased")
    max_vocab: int | None = option(None, "keep the N most frequent words")
    min_freq: int = option(1, "drop words rarer than this")
    tags: list[str] | None = option(None, "tag set", cli=False)
    chars: list[str] | None = option(None, "characters", cli=False)


class Tagger(TaskModel):
    """Word + character features → bidirectional recurrent layer → per-token emission scores
    (→ CRF). ``forward`` returns emission logits ``(B, T, K)``."""

    config_class = TaggerConfig

    def __init__(self, config: TaggerConfig, data_config: TaggerData, vocab: Vocab):
        super().__init__()
        c, d = config, data_config
        if not d.tags:
            raise ValueError("data_config.tags is empty: build the model through the task")
        self.config = config
        self.data_config = data_config
        self.vocab = vocab
        self.tags = list(d.tags)
        self.bio = is_bio(self.tags)
        self.encoder, self.embedder = token_features(c, d, vocab, c.char_repr != "none")
        self.rnn = recurrent_for(c, self.embedder.out_size)
        self.drop = nn.Dropout(c.dropout)
        self.head = nn.Linear(c.hidden_size * (2 if c.bidirectional else 1), len(self.tags))
        self.crf = None
        if c.crf:
            start, allowed = (
                bio_transitions(self.tags) if (self.bio and c.constrain) else (None, None)
            )
            self.crf = LinearChainCRF(len(self.tags), start, allowed)

    def forward(
        self, inputs: Tensor, state=None, targets: Tensor | None = None, *, lengths=None, chars=None
    ) -> Output:
        """``inputs (B, T)`` word ids, ``lengths (B,)``, ``chars (B, T, C)`` →
        ``Output(emissions (B, T, K), loss per token, state)``."""
        B, T = inputs.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        lengths = lengths.cpu()
        mask = (torch.arange(T).unsqueeze(0) < lengths.unsqueeze(1)).to(inputs.device)  # (B, T)
        x = self.drop(self.embedder(inputs, chars, mask))  # (B, T, E)
        y, state = self.rnn(x, state, lengths=lengths)  # (B, T, D·H)
        emissions = self.head(self.drop(y))  # (B, T, K)
        loss = None
        if targets is not None:
            n = mask.sum()
            if self.crf is not None:
                loss = self.crf.nll(emissions.float(), targets, mask, reduction="sum") / n
            else:
                ce = F.cross_entropy(emissions.transpose(1, 2), targets, reduction="none")
                loss = (ce * mask).sum() / n
        return Output(emissions, loss, state)

    def forward_batch(self, batch: dict[str, Any]) -> Output:
        b = to_device(batch, self.device)
        return self(b["inputs"], targets=b["targets"], lengths=b["lengths"], chars=b["chars"])

    @torch.no_grad()
    def decode_batch(self, batch: dict[str, Any]) -> tuple[list[list[int]], float]:
        """Best tag ids of each sentence (Viterbi with a CRF, else argmax) and the batch loss
        summed over tokens."""
        out = self.forward_batch(batch)
        lengths = batch["lengths"].tolist()
        if self.crf is not None:
            mask = to_device(batch, self.device)["mask"]
            paths = self.crf.decode(out.logits.float(), mask)
        else:
            best = out.logits.argmax(-1).tolist()
            paths = [p[:n] for p, n in zip(best, lengths)]
        return paths, float(out.loss) * sum(lengths)

    # -- encoding -----------------------------------------------------------------------------
    def encode(self, tokens: Sequence[str], tags: Sequence[int] | None = None) -> Example:
        if not tokens:
            raise DataError("the sentence has no tokens")
        target = list(tags) if tags is not None else [0] * len(tokens)
        return Example(len(tokens), target, self.encoder.ids(tokens), self.encoder.char_ids(tokens))

    # -- inference ----------------------------------------------------------------------------
    @torch.no_grad()
    def predict_ids(self, examples: Sequence[Example], batch_size: int = 128):
        """(tag ids per sentence in the given order, mean loss per token)."""
        self.eval()
        out: list[list[int]] = [[] for _ in examples]
        total, n = 0.0, 0
        for idx in length_sorted_batches([e.length for e in examples], batch_size):
            batch = collate([examples[i] for i in idx])
            paths, loss = self.decode_batch(batch)
            for i, p in zip(idx, paths):
                out[i] = p
            total += loss
            n += int(batch["lengths"].sum())
        return out, total / max(n, 1)

    def tag(self, sentences: Sequence[str | Sequence[str]]) -> list[dict[str, Any]]:
        """Tag each sentence (a whitespace-tokenised string or a token list): ``tokens``,
        ``tags`` and, for BIO tag sets, the ``entities`` found."""
        token_lists = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise DataError(f"input {i + 1}: the sentence has no tokens")
        examples = [self.encode([clean_token(t) for t in tokens]) for tokens in token_lists]
        paths, _ = self.predict_ids(examples)
        results = []
        for tokens, path in zip(token_lists, paths):
            tags = [self.tags[k] for k in path]
            r: dict[str, Any] = {"tokens": tokens, "tags": tags}
            if self.bio:
                r["entities"] = [
                    {"type": t, "start": s, "end": e, "text": " ".join(tokens[s:e])}
                    for t, s, e in bio_spans(tags)
                ]
            results.append(r)
        return results

    #: the requests :meth:`infer` answers
    answers = (TagRequest, EvaluateRequest)

    def answer(self, request: TagRequest) -> TagResult:
        """The tags of each sentence of a :class:`~rnnkit.inference.TagRequest`."""
        return TagResult(self.tag(request.texts))

    @staticmethod
    def format_tagged(result: dict[str, Any]) -> str:
        """``word/TAG word/TAG …``."""
        return " ".join(f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"]))

    def evaluate_examples(
        self, examples: Sequence[Example], confusion: str | None = None
    ) -> dict[str, Any]:
        """Mean loss per token, token ``accuracy`` and, with BIO tags, entity-level scores;
        ``confusion`` writes the tag confusion matrix as a PNG there."""
        paths, loss = self.predict_ids(examples)
        gold = [e.target for e in examples]
        correct = sum(g == p for gs, ps in zip(gold, paths) for g, p in zip(gs, ps))
        tokens = sum(len(g) for g in gold)
        result: dict[str, Any] = {
            "sentences": len(examples),
            "tokens": tokens,
            "loss": loss,
            "accuracy": correct / max(tokens, 1),
        }
        if self.bio:
            names = self.tags
            ents = entity_scores(
                [[names[k] for k in g] for g in gold], [[names[k] for k in p] for p in paths]
            )
            result |= {
                "precision": ents["precision"],
                "recall": ents["recall"],
                "f1": ents["f1"],
                "per_type": ents["per_type"],
            }
        if confusion:
            pred = [k for p in paths for k in p]
            m = confusion_matrix([k for g in gold for k in g], pred, list(range(len(self.tags))))
            plot_confusion_matrix(m, self.tags, confusion)
            result["confusion_png"] = str(confusion)
        return result

    def evaluate_file(
        self, path: str | None = None, confusion: str | None = None, encoding: str | None = None
    ) -> dict[str, Any]:
        """Token accuracy (and entity P/R/F1 for BIO tags) on a file in the run's format
        (default: the run's validation data); ``confusion`` draws the tag confusion matrix."""
        d = self.data_config
        if path is None:
            sentences, where = read_split(d, "valid"), f"validation split ({d.valid or d.data})"
        else:
            sentences = read_tagged(
                path, d.format, d.column, encoding or d.encoding, d.skip_bad_lines
            )
            where = str(path)
        examples = encode_sentences(self, sentences, where)
        return {"data": where, **self.evaluate_examples(examples, confusion)}

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        line = (
            f"{result['data']}: {result['sentences']:,} sentences, {result['tokens']:,} tokens, "
            f"accuracy {result['accuracy']:.2%}, loss {result['loss']:.4f}"
        )
        lines = [line]
        if "f1" in result:
            lines.append(
                f"entities: precision {result['precision']:.4f}, recall {result['recall']:.4f}, "
                f"F1 {result['f1']:.4f}"
            )
            lines += scores_table("type", result["per_type"])
        if result.get("confusion_png"):
            lines.append(f"confusion matrix: {result['confusion_png']}")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Data preparation and training
# ---------------------------------------------------------------------------------------------
def read_split(d: TaggerData, part: str) -> list[TaggedSentence]:
    """The ``train`` or ``valid`` sentences: the files given, or a seeded hold-out of --data."""
    if not d.data:
        raise DataError("no training data: pass --data FILE (see recipes/ for examples)")

    def read(path: str) -> list[TaggedSentence]:
        return read_tagged(path, d.format, d.column, d.encoding, d.skip_bad_lines)

    if d.valid:
        return read(d.data if part == "train" else d.valid)
    everything = read(d.data)
    kept, held = split_holdout(len(everything), d.valid_fraction, d.split_seed)
    return [everything[i] for i in (kept if part == "train" else held)]


def encode_sentences(
    model: Tagger, sentences: Sequence[TaggedSentence], where: str
) -> list[Example]:
    index = {t: k for k, t in enumerate(model.tags)}
    out = []
    for s in sentences:
        unknown = [t for t in s.tags if t not in index]
        if unknown:
            raise DataError(
                f"{where}: tag {unknown[0]!r} (sentence at line {s.line}) was not among the "
                f"training tags"
            )
        out.append(model.encode(s.tokens, [index[t] for t in s.tags]))
    if not out:
        raise DataError(f"{where}: no sentences")
    return out


def resolve_data(d: TaggerData, train: Sequence[TaggedSentence]) -> Vocab:
    """Fill the tag set and character vocabulary from the training sentences; build the word
    vocabulary."""
    counts: dict[str, int] = {}
    for s in train:
        for t in s.tags:
            counts[t] = counts.get(t, 0) + 1
    # "O" first for BIO sets, then by frequency: a stable, readable order
    d.tags = sorted(counts, key=lambda t: (t != "O", -counts[t], t))
    words = [[w.lower() if d.lowercase else w for w in s.tokens] for s in train]
    vocab = Vocab.build(words, level="word", max_size=d.max_vocab, min_freq=d.min_freq)
    d.chars = char_vocab([s.tokens for s in train]).itos[len(CHAR_SPECIALS) :]
    return vocab


class TaggingTraining(ClassificationTraining):
    """Length-bucketed sentence batches (see :class:`ClassificationTraining`); the loss and the
    unit of throughput are tokens."""

    tokens_name = "tok"

    def training_loss(self, model, batch) -> tuple[Tensor, int]:
        out = model.forward_batch(batch)
        return out.loss, int(batch["lengths"].sum())

    def evaluate(self, model) -> dict[str, float]:
        m = model.evaluate_examples(self.valid)
        return {k: m[k] for k in ("loss", "accuracy", "precision", "recall", "f1") if k in m}


class _TagTask(LabelledTextTask):
    """Tag every token of a sentence: parts of speech (CoNLL-U) or named entities (BIO)."""

    name = "tag"
    model_class = Tagger
    flow = LabelledDataFlow(TaggerData, read_split, resolve_data, encode_sentences, TaggingTraining)

    def check_data(self, model: Tagger, train: Sequence[TaggedSentence]) -> None:
        if model.config.crf and model.bio and model.config.constrain:
            _check_bio(train, model.data_config.data)

    def log_data(self, model: Tagger, train, valid) -> None:
        log.info(
            "data: %d training sentences (%d tokens), %d validation sentences; %d tags%s; "
            "vocabulary of %d words, %d characters",
            len(train),
            sum(len(s.tokens) for s in train),
            len(valid),
            len(model.tags),
            " (BIO)" if model.bio else "",
            len(model.vocab),
            len(model.data_config.chars),
        )

    def restore(self, saved: dict[str, Any], vocab, device, train_cfg=None, with_data=False):
        if vocab is None:
            raise DataError("the run has no vocab.json")
        return super().restore(saved, vocab, device, train_cfg, with_data)


def _check_bio(sentences: Sequence[TaggedSentence], path) -> None:
    """Constrained CRF training assumes gold tags obey BIO; say where they do not."""
    for s in sentences:
        prev = "O"
        for k, t in enumerate(s.tags):
            if t.startswith("I-") and prev not in (f"B-{t[2:]}", t):
                raise DataError(
                    f"tag {t!r} follows {prev!r} (token {k + 1} of the sentence), which BIO "
                    "forbids; fix the data or pass --no-constrain",
                    path,
                    s.line + k,
                )
            prev = t


TASK = _TagTask()

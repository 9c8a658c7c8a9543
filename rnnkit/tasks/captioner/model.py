"""The :class:`Captioner`: image encoder, attention and LSTM decoder; greedy and beam captions."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.rnn import pack_padded_sequence

from rnnkit.attention import build_attention
from rnnkit.cells import LSTMCell
from rnnkit.data.images import (
    decode_image,
    read_captions,
)
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.image_encoders import (
    ENCODERS,
    SmallCNN,
    load_efficientnet_lite0,
    pixels_to_tensor,
)
from rnnkit.inference import CaptionRequest, CaptionResult, EvaluateRequest
from rnnkit.layers import LSTM
from rnnkit.state import LSTMState
from rnnkit.tasks.base import Output, TaskModel
from rnnkit.tasks.captioner.config import ATTENTIONS
from rnnkit.tasks.captioner.data import (
    _check_names,
    caption_bleu,
    caption_tokens,
    collate,
    encode_split,
    image_arrays,
    image_batches,
    read_image,
)
from rnnkit.tasks.captioner.plot import plot_attention_overlay

if TYPE_CHECKING:
    from rnnkit.tasks.captioner.config import CaptionData, CaptionerConfig
    from rnnkit.tasks.captioner.data import CaptionSplit


# ---------------------------------------------------------------------------------------------
# Model
# ---------------------------------------------------------------------------------------------
class _Packed(NamedTuple):
    """Teacher forcing on real tokens: ``logits (N_tok, V)``, the ``loss`` (with targets), α
    ``(B, T, L)`` (attention only), and each row's ``caption`` (caller's order) and ``step``."""

    logits: Tensor
    loss: Tensor | None
    alphas: Tensor | None
    caption: Tensor
    step: Tensor


class Captioner(TaskModel):
    """Image encoder → (attention) LSTM decoder → word logits; see the module docstring.

    The frozen EfficientNet is *not* a submodule: training reads its cached features, and it is
    loaded from its package on first use for new images, so run directories hold only what was
    trained. ``forward`` is teacher forcing; :meth:`describe` decodes (greedy or beam);
    :meth:`caption` goes from image files to captions.
    """

    def __init__(self, config: CaptionerConfig, data_config: CaptionData, vocab: Vocab):
        super().__init__()
        c = config
        if c.attention not in ATTENTIONS:
            raise ValueError(f"attention must be one of {ATTENTIONS}; got {c.attention!r}")
        if c.encoder not in ENCODERS:
            raise ValueError(f"encoder must be one of {tuple(ENCODERS)}; got {c.encoder!r}")
        if vocab.bos_id is None or vocab.eos_id is None or vocab.pad_id != 0:
            raise ValueError("the caption vocabulary needs <pad> = 0, <bos> and <eos>")
        self.config = config
        self.data_config = data_config
        self.vocab = vocab
        self.cnn = SmallCNN(c.cnn_width) if c.encoder == "small-cnn" else None
        D = self.cnn.out_channels if self.cnn is not None else ENCODERS[c.encoder][1]
        self.feature_dim = D
        self.project = nn.Linear(D, c.feature_size)  # keys k_i = W_a a_i
        self.pool_norm = nn.LayerNorm(D)
        self.init_h = nn.Linear(D, c.hidden_size)
        self.init_c = nn.Linear(D, c.hidden_size)
        self.embedding = nn.Embedding(len(vocab), c.embed_size, padding_idx=0)
        nn.init.uniform_(self.embedding.weight, -0.1, 0.1)
        with torch.no_grad():
            self.embedding.weight[0].zero_()
        self.attention = None
        self.gate = None
        if c.attention == "none":
            self.rnn = LSTM(c.embed_size, c.hidden_size, batch_first=True)
            self.out_z = None
        else:
            self.attention = build_attention(
                c.attention, c.hidden_size, c.feature_size, c.attention_size
            )
            self.cell = LSTMCell(c.embed_size + c.feature_size, c.hidden_size)
            if c.gate:
                self.gate = nn.Linear(c.hidden_size, c.feature_size)
            self.out_z = nn.Linear(c.feature_size, c.embed_size, bias=False)
        self.out_h = nn.Linear(c.hidden_size, c.embed_size)
        self.head = nn.Linear(c.embed_size, len(vocab))
        if c.tie_weights:
            self.head.weight = self.embedding.weight
        self.drop = nn.Dropout(c.dropout)
        self._extractor: nn.Module | None = None  # the frozen EfficientNet, loaded on demand

    # -- text -------------------------------------------------------------------------------
    def encode_caption(self, text: str) -> list[int]:
        """Token ids of a caption (normalised, unknown words → <unk>, cut to ``max_len``)."""
        return self.vocab.encode(caption_tokens(text)[: self.data_config.max_len], unknown="unk")

    # -- images -----------------------------------------------------------------------------
    def _pretrained(self) -> nn.Module:
        if self._extractor is None:
            # a plain attribute, not a submodule: it stays out of state_dict and the run's files
            object.__setattr__(self, "_extractor", load_efficientnet_lite0(self.device))
        return self._extractor

    @torch.no_grad()
    def extract_features(self, pixels: np.ndarray) -> np.ndarray:
        """Frozen EfficientNet-Lite0 features of ``(N, 224, 224, 3)`` uint8 pixels:
        ``(N, 49, 1280)`` float16 (positions row-major, channels last) — the cached form."""
        x = pixels_to_tensor(pixels).to(self.device)
        a = self._pretrained().extract_features(x)  # (N, 1280, 7, 7)
        return a.flatten(2).transpose(1, 2).to(torch.float16).cpu().numpy()

    def prepare_images(self, pixels: np.ndarray) -> Tensor:
        """Pixels ``(N, S, S, 3)`` uint8 (S = the encoder's size) → what :meth:`grid` reads."""
        if self.cnn is not None:
            return torch.from_numpy(np.ascontiguousarray(pixels))
        return torch.from_numpy(self.extract_features(pixels))

    def grid(self, images: Tensor) -> Tensor:
        """The feature grid a ``(N, 49, D)`` float32 from stored images: cached features
        ``(N, 49, D)`` pass through; pixels ``(N, S, S, 3)`` uint8 go through the small CNN."""
        images = images.to(self.device)
        if self.cnn is None:
            return images.float()
        a = self.cnn(pixels_to_tensor(images))  # (N, D, 7, 7)
        return a.flatten(2).transpose(1, 2)  # (N, 49, D)

    def start(self, a: Tensor) -> tuple[Tensor, LSTMState]:
        """Keys ``(N, L, F)`` and the initial state (h_0, c_0) ``(N, H)`` each, from ``a``."""
        mean = self.drop(self.pool_norm(a.mean(1)))  # LN(ā) (N, D)
        h0 = torch.tanh(self.init_h(mean))
        c0 = torch.tanh(self.init_c(mean))
        keys = self.project(a)  # (N, L, F)
        return keys, LSTMState(h0, c0)

    # -- teacher forcing ----------------------------------------------------------------------
    def forward(
        self, inputs: Tensor, state=None, targets=None, *, images, image_index=None, lengths=None
    ) -> Output:
        """Teacher forcing. ``inputs (B, T)`` = <bos> w_1 …, ``images (U, …)`` the distinct
        stored images and ``image_index (B,)`` which one each caption describes (default:
        row b), ``lengths (B,)`` real steps (default T). Returns ``Output(logits (B, T, V),
        loss, state=α (B, T, L) or None)``; logits and α are 0 on padding. ``state`` is not
        read: every caption starts from its image."""
        B, T = inputs.shape
        if lengths is None:
            lengths = torch.full((B,), T, dtype=torch.int64)
        if image_index is None:
            image_index = torch.arange(B)
        r = self._packed(inputs, images, image_index, lengths, targets)
        logits = r.logits.new_zeros(B, T, r.logits.shape[-1])
        logits[r.caption, r.step] = r.logits
        return Output(logits, r.loss, r.alphas)

    def _packed(
        self,
        inputs: Tensor,
        images: Tensor,
        image_index: Tensor,
        lengths: Tensor,
        targets: Tensor | None = None,
    ) -> _Packed:
        """Teacher forcing over the real positions only, in PackedSequence order (time-major,
        captions sorted longest first so the batch shrinks as captions end)."""
        device = self.device
        lengths = lengths.cpu()
        a = self.grid(images)  # (U, L, D): each distinct image is encoded once
        keys, state = self.start(a)
        order = torch.argsort(lengths, descending=True, stable=True)
        sorted_lengths = lengths[order]
        order_d = order.to(device)
        index = image_index.to(device)[order_d]
        keys = keys[index]  # (B, L, F)
        h, c = state.h[index], state.c[index]
        x = inputs.to(device)[order_d]
        B, T = x.shape
        emb = self.drop(self.embedding(x))  # (B, T, E)
        packing = pack_padded_sequence(emb, sorted_lengths, batch_first=True)
        rows = packing.batch_sizes.tolist()  # captions still running at each step
        row_caption = torch.cat([torch.arange(n) for n in rows]).to(device)  # sorted position
        row_step = torch.cat([torch.full((n,), t) for t, n in enumerate(rows)]).to(device)
        penalty, alphas = None, None
        if self.attention is None:
            y, _ = self.rnn(emb, LSTMState(h.unsqueeze(0), c.unsqueeze(0)), lengths=sorted_lengths)
            out = packing.data + self.out_h(y[row_caption, row_step])  # (N_tok, E)
        else:
            E = self.config.embed_size
            W = self.cell.weight_ih  # (4H, E + F): the word and the context columns
            xw = F.linear(emb, W[:, :E], self.cell.bias_ih)  # word part of every step at once
            W_z = W[:, E:].contiguous()  # one copy per batch, not one per step
            prepared = self.attention.prepare(keys)  # (B, L, A)
            hs, zs, als = [], [], []
            for t in range(len(rows)):
                # every caption steps until the longest ends: slicing off the finished ones
                # would save little and cost a full-size zero gradient per slice and step
                z, alpha = self.attention(h, keys, prepared=prepared)  # (B, F), (B, L)
                if self.gate is not None:
                    z = torch.sigmoid(self.gate(h)) * z
                h, (_, c) = self.cell.step(xw[:, t] + F.linear(z, W_z), LSTMState(h, c))
                hs.append(h)
                zs.append(z)
                als.append(alpha)
            # (B, T, ·) → the real positions, in packed order
            h_all, z_all = torch.stack(hs, 1), torch.stack(zs, 1)
            al = torch.stack(als, 1)[row_caption, row_step]  # (N_tok, L)
            out = (
                packing.data
                + self.out_h(h_all[row_caption, row_step])
                + self.out_z(z_all[row_caption, row_step])
            )
            if self.config.doubly_stochastic > 0:
                total = al.new_zeros(B, al.shape[1]).index_add(0, row_caption, al)  # Σ_t α_ti
                penalty = self.config.doubly_stochastic * ((1.0 - total) ** 2).mean()
            alphas = al.new_zeros(B, T, al.shape[1])
            alphas[order_d[row_caption], row_step] = al  # (B, T, L) in the caller's order
        logits = self.head(self.drop(out))  # (N_tok, V)
        loss = None
        if targets is not None:
            target = targets.to(device)[order_d][row_caption, row_step]  # (N_tok,)
            loss = F.cross_entropy(logits.float(), target)
            if penalty is not None:
                loss = loss + penalty
        return _Packed(logits, loss, alphas, order_d[row_caption], row_step)

    def training_loss(self, batch: dict[str, Tensor]) -> tuple[Tensor, int]:
        """(mean loss over the batch's real tokens, number of tokens)."""
        r = self._packed(
            batch["inputs"],
            batch["images"],
            batch["image_index"],
            batch["lengths"],
            batch["targets"],
        )
        return r.loss, int(batch["lengths"].sum())

    # -- decoding -----------------------------------------------------------------------------
    def _step(self, tokens: Tensor, state: tuple[Tensor, ...]):
        """One decoding step for :mod:`rnnkit.decoding`: previous words ``(N,)`` and the state
        (h, c, keys, prepared keys) → (log-probabilities (N, V), new state, α (N, L) or None)."""
        h, c, keys, prepared = state
        e = self.embedding(tokens)  # (N, E)
        if self.attention is None:
            _, (h_n, c_n) = self.rnn(e.unsqueeze(1), LSTMState(h.unsqueeze(0), c.unsqueeze(0)))
            h, c = h_n[0], c_n[0]
            out = e + self.out_h(h)
            alpha = None
        else:
            z, alpha = self.attention(h, keys, prepared=prepared)
            if self.gate is not None:
                z = torch.sigmoid(self.gate(h)) * z
            h, (_, c) = self.cell.step(
                self.cell.project_input(torch.cat([e, z], -1)), LSTMState(h, c)
            )
            out = e + self.out_h(h) + self.out_z(z)
        log_probs = torch.log_softmax(self.head(out).float(), -1)
        return log_probs, (h, c, keys, prepared), alpha

    @torch.no_grad()
    def describe(
        self,
        images: Tensor,
        beam_size: int = 1,
        max_len: int | None = None,
        length_penalty: float = 1.0,
    ) -> list:
        """Decode a caption for each stored image ``(N, …)`` (see :meth:`grid`): greedy for
        ``beam_size=1``, else beam search with length normalisation. Returns
        :class:`rnnkit.decoding.Hypothesis` objects (``tokens`` end before <eos>; ``attention``
        ``(len(tokens), 49)`` with attention)."""
        from rnnkit.decoding import beam_search, greedy_decode

        self.eval()
        a = self.grid(images)
        keys, state = self.start(a)
        prepared = self.attention.prepare(keys) if self.attention is not None else keys
        start = (state.h, state.c, keys, prepared)
        max_len = max_len or self.data_config.max_len + 1
        v = self.vocab
        if beam_size <= 1:
            hyps = greedy_decode(self._step, start, a.shape[0], v.bos_id, v.eos_id, max_len)
        else:
            hyps = beam_search(
                self._step,
                start,
                a.shape[0],
                v.bos_id,
                v.eos_id,
                beam_size,
                max_len,
                length_penalty,
            )
        return hyps

    def words(self, tokens: Sequence[int]) -> list[str]:
        return [self.vocab.itos[t] for t in tokens]

    # -- evaluation ---------------------------------------------------------------------------
    @torch.no_grad()
    def evaluate_split(
        self, split: CaptionSplit, beam_size: int = 1, batch_size: int = 100
    ) -> dict[str, Any]:
        """Teacher-forced ``loss`` (nats per token) and BLEU-1…4 of the decoded captions against
        all references; ``captions`` lists the decoded text per image."""
        self.eval()
        v = self.vocab
        total, tokens = 0.0, 0
        for idx in image_batches(split.image_of, 5 * batch_size):
            b = collate(split, idx, v.pad_id, v.bos_id, v.eos_id)
            loss, n = self.training_loss(b)
            total += float(loss) * n
            tokens += n
        hyps: list[str] = []
        for s in range(0, len(split.names), batch_size):
            for h in self.describe(split.images[s : s + batch_size], beam_size):
                hyps.append(" ".join(self.words(h.tokens)))
        return {
            "loss": total / max(tokens, 1),
            **caption_bleu(hyps, split.references),
            "images": len(split.names),
            "captions": hyps,
        }

    # -- inference on files -------------------------------------------------------------------
    #: the requests :meth:`infer` answers
    answers = (CaptionRequest, EvaluateRequest)

    def answer(self, request: CaptionRequest) -> CaptionResult:
        """The caption of each image of a :class:`~rnnkit.inference.CaptionRequest`."""
        r = request
        found = self.caption(r.images, r.beam_size, r.max_len, attention=r.attention)
        return CaptionResult([{**c, "image": str(c["image"])} for c in found])

    def caption(
        self,
        images: Sequence[str | os.PathLike[str]],
        beam_size: int = 1,
        max_len: int | None = None,
        attention_png: str | os.PathLike[str] | None = None,
        attention: bool = False,
    ) -> list[dict[str, Any]]:
        """Caption image files (or ``archive.tar:member`` names). Each result has ``image``,
        ``caption``, ``words``, ``score`` (log-probability, length-normalised for beams), with
        ``attention`` the weights (one 7×7 grid per word and <eos>, nested lists) and with
        ``attention_png`` the picture written (``out.png``; ``out-2.png`` … for more)."""
        self.eval()
        size = ENCODERS[self.config.encoder][0]
        pixels = []
        for spec in images:
            data, where = read_image(spec)
            pixels.append(decode_image(data, where, size))
        stacked = np.stack(pixels)
        hyps = self.describe(self.prepare_images(stacked), beam_size, max_len)
        results = []
        for i, (spec, hyp) in enumerate(zip(images, hyps)):
            words = self.words(hyp.tokens)
            r = {
                "image": os.fspath(spec),
                "caption": " ".join(words),
                "words": words,
                "score": float(hyp.score),
                "beam": beam_size,
            }
            if (attention or attention_png) and hyp.attention is None:
                raise DataError("--attention-png needs a model trained with attention")
            if attention:
                r["attention"] = np.asarray(hyp.attention, dtype=np.float64).tolist()
            if attention_png:
                out = Path(attention_png)
                if i:
                    out = out.with_name(f"{out.stem}-{i + 1}{out.suffix}")
                plot_attention_overlay(stacked[i], words, hyp.attention, out)
                r["attention_png"] = str(out)
            results.append(r)
        return results

    def plot_attention(self, result: dict[str, Any], path: str | os.PathLike[str]) -> Path:
        """The image of one :meth:`caption` result made with ``attention=True``, then a panel per
        word with where the decoder looked."""
        if result.get("attention") is None:
            raise DataError("this caption has no attention weights (caption with attention=True)")
        data, where = read_image(result["image"])
        pixels = decode_image(data, where, ENCODERS[self.config.encoder][0])
        return plot_attention_overlay(
            pixels, result["words"], np.asarray(result["attention"]), path
        )

    def evaluate_file(self, path=None, confusion=None, encoding=None, beam_size: int = 1) -> dict:
        """BLEU-1…4 and loss on the run's validation images and captions (``path``: another
        caption file whose images are in the run's validation archive)."""
        d = self.data_config
        caps = read_captions(path or d.valid_captions, encoding or "utf-8")
        if not path:
            caps = caps.head(d.max_valid_images)
        _check_names(caps, d.valid_images)
        arrays = image_arrays(self, d, d.valid_images, caps.images)
        split = encode_split(self, caps, torch.from_numpy(arrays), caps.path)
        result = self.evaluate_split(split, beam_size)
        result["data"] = caps.path
        result["beam"] = beam_size
        result["examples"] = [
            {"image": n, "caption": c, "references": r}
            for n, c, r in zip(split.names[:5], result["captions"][:5], split.references[:5])
        ]
        del result["captions"]
        return result

    @staticmethod
    def format_evaluation(result: dict[str, Any]) -> str:
        head = (
            f"{result['data']}: {result['images']} images, beam {result.get('beam', 1)}, "
            f"loss {result['loss']:.4f}; "
            + ", ".join(f"BLEU-{n} {result[f'bleu{n}']:.2f}" for n in range(1, 5))
        )
        lines = [head]
        for ex in result.get("examples", []):
            lines.append(f"  {ex['image']}: {ex['caption']}")
        return "\n".join(lines)


def format_caption(result: dict[str, Any]) -> str:
    """``image: caption`` on one line (plus the attention picture when one was drawn)."""
    line = f"{result['image']}: {result['caption']}"
    if result.get("attention_png"):
        line += f"  [attention: {result['attention_png']}]"
    return line

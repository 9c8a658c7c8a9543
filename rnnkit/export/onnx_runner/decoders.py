"""An exported translator (graphs ``encoder`` and ``decoder_step``) and captioner (graphs
``image_encoder`` and ``caption_step``): greedy or beam-search decoding over the step graph, as
``Seq2Seq.translate`` and ``Captioner.caption`` do."""

from __future__ import annotations

from typing import Any

import numpy as np

from .batches import length_sorted, pad
from .folder import ExportFolder
from .search import beam_search, greedy_decode
from .shared import detokenize, tokenize


class DecoderMethods(ExportFolder):
    """The inference methods of an exported ``translate`` or ``caption`` model."""

    def _decoder_step(self, tokens, state):
        feeds = {"tokens": tokens.astype(np.int64), **state}
        out = self.run("decoder_step", feeds)
        new = dict(state)
        for n in self.config["state"]:
            new[n] = out[n + "_out"]
        return out["log_probs"], new, out.get("attention")

    def translate(
        self,
        texts: list[str],
        beam_size: int = 5,
        max_len=None,
        length_penalty=1.0,
        batch_size: int = 128,
        attention: bool = False,
    ) -> list[dict[str, Any]]:
        """Greedy (``beam_size=1``) or beam-search translations (``Seq2Seq.translate``)."""
        src_v, tgt_v = self.vocabs["source"], self.vocabs["target"]
        lower = self.config["lowercase"]
        encoded = []
        for i, t in enumerate(texts):
            toks = tokenize(t, lower)
            if not toks:
                raise ValueError(f"input {i + 1}: the text has no words to translate")
            encoded.append((toks, src_v.encode(toks, "unk")))
        bos, eos = tgt_v.id_of("<bos>"), tgt_v.id_of("<eos>")
        hyps: list[Any] = [None] * len(texts)
        rows = max(1, batch_size // beam_size) if beam_size > 1 else batch_size
        for idx in length_sorted([len(e[1]) for e in encoded], rows):
            source, lengths = pad([encoded[i][1] for i in idx])
            enc = self.run("encoder", {"source": source, "lengths": lengths})
            state = {"memory": enc["memory"], "keys": enc["keys"], "lengths": lengths}
            state |= {n: enc[n] for n in self.config["state"]}
            limit = max_len or min(200, 2 * int(lengths.max()) + 10)
            if beam_size == 1:
                found = greedy_decode(self._decoder_step, state, len(idx), bos, eos, limit)
            else:
                found = beam_search(
                    self._decoder_step, state, len(idx), bos, eos, beam_size, limit, length_penalty
                )
            for i, h in zip(idx, found):
                if h["attention"] is not None:
                    h["attention"] = h["attention"][:, : len(encoded[i][1])]
                hyps[i] = h
        results = []
        for text, (src_tokens, _), h in zip(texts, encoded, hyps):
            words = [tgt_v.itos[i] for i in h["tokens"]]
            r = {
                "source": text,
                "translation": detokenize(words),
                "tokens": words,
                "source_tokens": src_tokens,
                "score": h["score"],
                "log_prob": h["log_prob"],
                "beam": beam_size,
            }
            if attention:
                r["attention"] = h["attention"].tolist() if h["attention"] is not None else None
            results.append(r)
        return results

    # -- captioning -----------------------------------------------------------------------------
    def _caption_step(self, tokens, state):
        feeds = {"tokens": tokens.astype(np.int64), **state}
        out = self.run("caption_step", feeds)
        return (
            out["log_probs"],
            {**state, "h": out["h_out"], "c": out["c_out"]},
            out.get("attention"),
        )

    def caption(
        self, images, beam_size=1, max_len=None, length_penalty=1.0, attention_png=None
    ) -> list[dict[str, Any]]:
        """Caption images: an ``(N, S, S, 3)`` uint8 array or image files (those need Pillow).
        Each result has ``caption``, ``words``, ``score`` and ``beam`` (``Captioner.caption``);
        ``image`` too for files."""
        if attention_png:
            raise ValueError("attention pictures need rnnkit (matplotlib): use the run")
        names = None
        size = self.config["image_size"]
        if not isinstance(images, np.ndarray):
            from PIL import Image

            names, arrays = [str(p) for p in images], []
            for name in names:
                with Image.open(name) as img:
                    rgb = img.convert("RGB")
                    if rgb.size != (size, size):
                        rgb = rgb.resize((size, size), Image.BILINEAR)
                    arrays.append(np.asarray(rgb, dtype=np.uint8))
            images = np.stack(arrays)
        if images.ndim != 4 or images.shape[1:] != (size, size, 3) or images.dtype != np.uint8:
            raise ValueError(f"images must be uint8 of shape (N, {size}, {size}, 3)")
        enc = self.run("image_encoder", {"pixels": images})
        state = {n: enc[n] for n in ("keys", "prepared", "h", "c")}
        v = self.vocab
        bos, eos = v.id_of("<bos>"), v.id_of("<eos>")
        limit = max_len or self.config["max_len"]
        if beam_size <= 1:
            hyps = greedy_decode(self._caption_step, state, len(images), bos, eos, limit)
        else:
            hyps = beam_search(
                self._caption_step, state, len(images), bos, eos, beam_size, limit, length_penalty
            )
        results = []
        for i, h in enumerate(hyps):
            words = [v.itos[t] for t in h["tokens"]]
            r = {"caption": " ".join(words), "words": words, "score": h["score"], "beam": beam_size}
            results.append({"image": names[i], **r} if names else r)
        return results

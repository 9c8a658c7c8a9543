"""Run an exported rnnkit model with onnxruntime and NumPy only (no torch, no rnnkit).

This file is copied as ``runner.py`` into every export folder and works there as a plain file::

    from runner import load            # or: python runner.py DIR generate --prompt "ROMEO:"
    model = load("DIR")
    model.generate("ROMEO:", length=200, temperature=0.8, top_k=20, seed=1)

It reads ``DIR/config.json`` (written by ``rnnkit export``) and the graphs beside it, and mirrors
rnnkit's inference step for step: language models generate (temperature / top-k / top-p), score
and complete; classifiers classify; taggers tag (Viterbi over the CRF scores in ``crf.json``);
translators decode greedily or with beam search; forecasters forecast. Results are the same
dicts rnnkit's own methods return.

**Sampling.** A token is drawn from p = softmax(filtered logits / T) by inverting its cumulative
distribution at one uniform u ~ U[0, 1) from ``numpy.random.default_rng(seed)``: the first id whose
cumulative probability exceeds u·Σp (:func:`draw`). torch's multinomial sampler cannot be
reproduced outside torch, so with a seed the runner's text equals rnnkit's when rnnkit's final
draw uses this same rule (the parity test does exactly that); the filtering before it — banned
specials, temperature, top-k, top-p — is rnnkit's ``sample_next`` line for line.
"""

from __future__ import annotations

import argparse
import heapq
import json
import logging
import math
import re
import sys
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger("rnnkit_runner")


def _load_contract():
    """rnnkit's inference contract (:mod:`rnnkit.inference`: request and result types): the
    package's module inside rnnkit, else the torch-free copy ``inference.py`` written beside this
    file in an export folder (registered as ``rnnkit_inference``); None when neither is there."""
    if __name__ == "rnnkit.export.runner":
        from rnnkit import inference

        return inference
    if "rnnkit_inference" in sys.modules:
        return sys.modules["rnnkit_inference"]
    import importlib.util

    beside = Path(__file__).with_name("inference.py")
    if not beside.exists():
        return None
    spec = importlib.util.spec_from_file_location("rnnkit_inference", beside)
    module = importlib.util.module_from_spec(spec)
    sys.modules["rnnkit_inference"] = module
    spec.loader.exec_module(module)
    return module


contract = _load_contract()

#: per task, the names of the request types :meth:`Exported.infer` answers
ANSWERS = {
    "lm": ("GenerateRequest", "ScoreRequest", "CompleteRequest"),
    "music": ("GenerateRequest", "ScoreRequest"),  # ABC text; whole tunes need rnnkit
    "classify": ("ClassifyRequest",),
    "tag": ("TagRequest",),
    "translate": ("TranslateRequest",),
    "caption": ("CaptionRequest",),
    "forecast": ("ForecastRequest",),
}

FORMAT = "rnnkit-onnx"
_TOKEN = re.compile(r"['’]\w+|\w+(?:-\w+)*|[^\w\s]")
_NO_SPACE_BEFORE = set(".,!?;:%)]}…") | {"'", "’"}
_NO_SPACE_AFTER = set("([{¿¡")
_INVISIBLE = re.compile("[\u200b\u2060\ufeff]")


# ---------------------------------------------------------------------------------------------
# Small pieces: vocabulary, softmax, the draw
# ---------------------------------------------------------------------------------------------
class Vocab:
    """rnnkit's vocabulary JSON (``{"level", "specials", "tokens"}``): ids ↔ symbols."""

    def __init__(self, data: dict[str, Any]):
        self.level = data["level"]
        self.specials = list(data["specials"])
        self.itos = self.specials + list(data["tokens"])
        self.stoi = {s: i for i, s in enumerate(self.itos)}

    def id_of(self, symbol: str) -> int | None:
        return self.stoi.get(symbol) if symbol in self.specials else None

    @property
    def unk_id(self) -> int | None:
        return self.id_of("<unk>")

    @property
    def eos_id(self) -> int | None:
        return self.id_of("<eos>")

    @property
    def pad_id(self) -> int | None:
        return self.id_of("<pad>")

    def __len__(self) -> int:
        return len(self.itos)

    def encode(self, tokens: list[str], unknown: str = "unk") -> list[int]:
        missing = [t for t in dict.fromkeys(tokens) if t not in self.stoi]
        if not missing:
            return [self.stoi[t] for t in tokens]
        if unknown == "drop":
            return [self.stoi[t] for t in tokens if t in self.stoi]
        if unknown == "unk" and self.unk_id is not None:
            return [self.stoi.get(t, self.unk_id) for t in tokens]
        kind = "characters" if self.level == "char" else "words"
        raise ValueError(f"{kind} not in the vocabulary: {', '.join(map(repr, missing[:10]))}")


def log_softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    x = x.astype(np.float32)
    m = np.max(x, axis=axis, keepdims=True)
    m = np.where(np.isfinite(m), m, 0.0)
    return x - m - np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))


def softmax(x: np.ndarray, axis: int = -1) -> np.ndarray:
    return np.exp(log_softmax(x, axis))


def draw(probs: np.ndarray, u: float) -> int:
    """Inverse-CDF draw: the first id whose cumulative probability exceeds ``u`` · Σp."""
    cdf = np.cumsum(np.asarray(probs, dtype=np.float64))
    idx = int(np.searchsorted(cdf, u * cdf[-1], side="right"))
    return min(idx, len(cdf) - 1)


def filter_logits(
    logits: np.ndarray, temperature: float, top_k: int | None, top_p: float | None
) -> np.ndarray:
    """rnnkit's ``sample_next`` filtering: logits / T, then top-k, then top-p (nucleus)."""
    logits = logits.astype(np.float32) / np.float32(temperature)
    if top_k is not None and top_k > 0:
        kth = np.sort(logits)[::-1][min(top_k, logits.size) - 1]
        logits = np.where(logits < kth, -np.inf, logits).astype(np.float32)
    if top_p is not None and 0 < top_p < 1:
        probs = softmax(logits)
        order = np.argsort(-probs, kind="stable")
        sorted_p = probs[order]
        drop_sorted = np.cumsum(sorted_p) - sorted_p >= top_p
        drop = np.zeros_like(drop_sorted)
        drop[order] = drop_sorted
        logits = np.where(drop, -np.inf, logits).astype(np.float32)
    return logits


def sample_next(logits, temperature=1.0, top_k=None, top_p=None, rng=None) -> int:
    """One token id from ``logits (V,)``; temperature 0 is the argmax."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0; got {temperature}")
    if temperature == 0:
        return int(np.argmax(logits))
    probs = softmax(filter_logits(logits, temperature, top_k, top_p))
    return draw(probs, float((rng or np.random.default_rng()).random()))


def length_sorted(lengths: list[int], batch_size: int) -> list[list[int]]:
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    return [order[k : k + batch_size] for k in range(0, len(order), batch_size)]


def pad(rows: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    lengths = np.array([len(r) for r in rows], dtype=np.int64)
    out = np.zeros((len(rows), int(lengths.max())), dtype=np.int64)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
    return out, lengths


def detokenize(tokens: list[str]) -> str:
    out: list[str] = []
    glue_next = open_quote = False
    for tok in tokens:
        glue = glue_next or not out
        glue_next = False
        if tok == '"':
            glue, glue_next = (True, False) if open_quote else (glue, True)
            open_quote = not open_quote
        elif tok in _NO_SPACE_BEFORE or tok[0] in "'’" and len(tok) > 1:
            glue = True
        if tok in _NO_SPACE_AFTER:
            glue_next = True
        out.append(tok if glue else " " + tok)
    return "".join(out).strip()


def bio_spans(tags: list[str]) -> list[tuple[str, int, int]]:
    """Entities ``(type, start, end)`` of a BIO sequence (conlleval's rule)."""
    spans, kind, start = [], "", -1
    for i, tag in enumerate(tags):
        prefix, t = ("O", "") if tag == "O" else (tag[0], tag[2:])
        continues = prefix == "I" and t == kind
        if kind and not continues:
            spans.append((kind, start, i))
            kind = ""
        if prefix == "B" or (prefix == "I" and not continues):
            kind, start = t, i
    if kind:
        spans.append((kind, start, len(tags)))
    return spans


# ---------------------------------------------------------------------------------------------
# The exported model
# ---------------------------------------------------------------------------------------------
class Exported:
    """An export folder: ``config.json``, the graphs, vocabularies; task methods below."""

    def __init__(self, path: str | Path, threads: int | None = None):
        import onnxruntime as ort

        self.path = Path(path)
        cfg_path = self.path / "config.json"
        if not cfg_path.exists():
            raise FileNotFoundError(f"{cfg_path}: no config.json (not an rnnkit export folder)")
        self.config = json.loads(cfg_path.read_text(encoding="utf-8"))
        if self.config.get("format") != FORMAT:
            raise ValueError(f"{cfg_path}: not an rnnkit ONNX export (format {FORMAT!r})")
        self.task = self.config["task"]
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        self._ort, self._options, self._sessions = ort, options, {}
        self.vocabs = {
            name: Vocab(json.loads((self.path / file).read_text(encoding="utf-8")))
            for name, file in self.config.get("vocabularies", {}).items()
        }

    def session(self, name: str):
        if name not in self._sessions:
            file = self.path / self.config["graphs"][name]
            self._sessions[name] = self._ort.InferenceSession(
                str(file), self._options, providers=["CPUExecutionProvider"]
            )
        return self._sessions[name]

    def run(self, graph: str, feeds: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sess = self.session(graph)
        wanted = {i.name for i in sess.get_inputs()}
        outs = sess.run(None, {k: v for k, v in feeds.items() if k in wanted})
        return {o.name: v for o, v in zip(sess.get_outputs(), outs)}

    # -- the inference contract -----------------------------------------------------------------
    @property
    def answers(self) -> tuple[type, ...]:
        """The request types of :mod:`rnnkit.inference` this export's :meth:`infer` answers."""
        if contract is None:
            return ()
        return tuple(getattr(contract, n) for n in ANSWERS.get(self.task, ()))

    def infer(self, request, on_text=None):
        """The result of ``request`` (an :mod:`rnnkit.inference` request), as the task model's
        ``infer`` gives it: generate, score, complete, classify, tag, translate, caption,
        forecast. ``on_text`` receives each sampled token's text (generation)."""
        if contract is None:
            raise RuntimeError(
                "no inference contract: this export folder has no inference.py beside runner.py"
            )
        c = contract
        name = type(request).__name__
        if not isinstance(request, self.answers) and name in ANSWERS.get(self.task, ()):
            # a request built from another copy of the contract (rnnkit's own module and the
            # inference.py beside this runner): the same type by name, read through its JSON
            if hasattr(request, "to_json"):
                request = getattr(c, name).from_json(request.to_json())
        if not isinstance(request, self.answers):
            names = ", ".join(t.__name__ for t in self.answers) or "nothing"
            raise ValueError(
                f"an exported {self.task} model does not answer {type(request).__name__}; "
                f"it answers {names}"
            )
        r = request
        if isinstance(r, c.GenerateRequest):
            text, tokens, reason = self.sample_text(
                r.prompt, r.max_tokens, r.temperature, r.top_k, r.top_p, r.seed, on_text,
                r.unknown, r.stop,
            )  # fmt: skip
            return c.GenerateResult(
                r.prompt, text, r.temperature, r.top_k, r.top_p, r.seed, tokens, reason
            )
        if isinstance(r, c.ScoreRequest):
            scores = [self.score(t, r.context, r.unknown) for t in r.texts]
            order = sorted(range(len(scores)), key=lambda i: -scores[i]["log_prob"])
            for rank, i in enumerate(order, 1):
                scores[i]["rank"] = rank
            return c.ScoreResult(scores)
        if isinstance(r, c.CompleteRequest):
            if self.vocab.level == "word":
                found = self.next_words(r.text, r.k, r.unknown)
            else:
                found = self.complete(r.text, r.k, unknown=r.unknown)
            return c.CompleteResult(r.text, found)
        if isinstance(r, c.ClassifyRequest):
            return c.ClassifyResult(self.classify(r.texts))
        if isinstance(r, c.TagRequest):
            return c.TagResult(self.tag(r.texts))
        if isinstance(r, c.TranslateRequest):
            options = {"max_len": r.max_len, "length_penalty": r.length_penalty}
            found = self.translate(r.texts, r.beam_size, attention=r.attention, **options)
            return c.TranslateResult(found)
        if isinstance(r, c.CaptionRequest):
            if r.attention:
                raise ValueError("attention weights of an exported captioner: use the run")
            return c.CaptionResult(self.caption(r.images, r.beam_size, r.max_len))
        out = self.forecast(np.asarray(r.history, np.float64), r.horizon, r.level, r.samples, r.seed)

        def rows(a):
            return None if a is None else np.asarray(a, dtype=np.float64).tolist()

        level = r.level if out["lower"] is not None else None
        return c.ForecastResult(rows(out["mean"]), rows(out["lower"]), rows(out["upper"]), level)

    # -- language models ------------------------------------------------------------------------
    def zero_state(self, batch: int) -> dict[str, np.ndarray]:
        layers, hidden = self.config["state_shape"]
        return {n: np.zeros((layers, batch, hidden), np.float32) for n in self.config["state"]}

    def _lm_advance(self, ids: list[int], state=None, chunk: int = 512):
        """Feed one sequence; (last logits (V,), state)."""
        state = state or self.zero_state(1)
        logits = None
        for s in range(0, len(ids), chunk):
            piece = np.array([ids[s : s + chunk]], dtype=np.int64)
            if piece.shape[1] == 1:
                out = self.run("lm_step", {"ids": piece[:, 0], **state})
                logits = out["logits"][0]
            else:
                feeds = {"ids": piece, "lengths": np.array([piece.shape[1]]), **state}
                out = self.run("lm_sequence", feeds)
                logits = out["logits"][0, -1]
            state = {n: out[n + "_out"] for n in self.config["state"]}
        return logits, state

    @property
    def vocab(self) -> Vocab:
        return self.vocabs["vocab"]

    def _lm_encode(self, text: str, unknown: str | None = None) -> list[int]:
        v = self.vocab
        if v.level == "char":
            toks = list(text)
        else:
            toks = []
            for i, line in enumerate(text.split("\n")):
                if i:
                    toks.append("<eos>")
                toks.extend(line.split())
        unknown = unknown or ("error" if v.level == "char" else "unk")
        if unknown == "unk" and v.level == "word":
            oov = sorted({t for t in toks if t not in v.stoi})
            if oov:
                log.warning("words not in the vocabulary, read as <unk>: %s", ", ".join(oov[:20]))
        return v.encode(toks, unknown)

    def _default_context(self) -> str:
        v = self.vocab
        return "\n" if v.level == "word" or "\n" in v.stoi else v.itos[len(v.specials)]

    def _render(self, ids: list[int]) -> str:
        v = self.vocab
        if v.level == "char":
            return "".join(v.itos[i] for i in ids)
        text = ""
        for i in ids:
            word = "\n" if i == v.eos_id else v.itos[i]
            text += word if (not text or text.endswith("\n") or word == "\n") else " " + word
        return text

    def generate(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        on_text=None,
        unknown: str | None = None,
    ) -> str:
        """Sample ``length`` tokens after ``prompt`` (the new text only), one step graph call
        per token with the state carried."""
        return self.sample_text(prompt, length, temperature, top_k, top_p, seed, on_text, unknown)[
            0
        ]

    def sample_text(
        self,
        prompt: str = "",
        length: int = 500,
        temperature: float = 1.0,
        top_k: int | None = None,
        top_p: float | None = None,
        seed: int | None = None,
        on_text=None,
        unknown: str | None = None,
        stop=(),
    ) -> tuple[str, int, str]:
        """:meth:`generate` that also stops at the first of the ``stop`` strings (cut off, not
        included): ``(text, tokens drawn, finish_reason "length" | "stop")``."""
        ids = self._lm_encode(prompt if prompt else self._default_context(), unknown)
        if not ids:
            raise ValueError("the prompt has no characters left after dropping unknown ones")
        rng = np.random.default_rng(seed)
        v = self.vocab
        stop = [s for s in stop if s]
        banned = [i for i in range(len(v.specials)) if i != v.eos_id or v.level == "char"]
        logits, state = self._lm_advance(ids)
        new: list[int] = []
        for _ in range(length):
            logits = logits.copy()
            logits[banned] = -np.inf
            nxt = sample_next(logits, temperature, top_k, top_p, rng)
            if on_text is not None:
                before = self._render(new)
                on_text(self._render(new + [nxt])[len(before) :])
            new.append(nxt)
            if stop:
                text = self._render(new)
                cut = min((text.find(s) for s in stop if s in text), default=-1)
                if cut >= 0:
                    return text[:cut], len(new), "stop"
            logits, state = self._lm_advance([nxt], state)
        return self._render(new), len(new), "length"

    def log_probs(self, text: str, context: str | None = None, unknown=None) -> np.ndarray:
        context = self._default_context() if context is None else context
        ctx, ids = self._lm_encode(context, unknown), self._lm_encode(text, unknown)
        if not ids:
            raise ValueError("nothing to score: the text is empty")
        full = ctx + ids
        if not ctx:
            full, ids = ids, ids[1:]
        x = np.array([full[:-1]], dtype=np.int64)
        feeds = {"ids": x, "lengths": np.array([x.shape[1]]), **self.zero_state(1)}
        lp = log_softmax(self.run("lm_sequence", feeds)["logits"][0])
        per_token = lp[np.arange(len(full) - 1), np.array(full[1:])]
        return per_token[len(per_token) - len(ids) :]

    def score(self, text: str, context: str | None = None, unknown=None) -> dict[str, Any]:
        """log p(text) and nats / bits per token, perplexity (as ``LanguageModel.score``)."""
        lp = self.log_probs(text, context, unknown)
        total, n = float(lp.astype(np.float64).sum()), lp.size
        nats = -total / n
        return {
            "text": text,
            "log_prob": total,
            "tokens": n,
            "nats_per_token": nats,
            "bits_per_token": nats / math.log(2),
            "perplexity": math.exp(nats),
        }

    def complete(self, text: str, k: int = 5, beam_size=None, max_chars: int = 24, unknown=None):
        """The ``k`` likeliest endings of the word being typed (``LanguageModel.complete``)."""
        v = self.vocab
        if v.level != "char":
            raise ValueError("complete() on a word-level model")
        beam_size = beam_size or max(2 * k, 8)
        boundary = lambda ch: not (ch.isalnum() or ch in "'-_")  # noqa: E731
        prefix = ""
        for ch in reversed(text):
            if boundary(ch):
                break
            prefix = ch + prefix
        logits, state = self._lm_advance(self._lm_encode(self._default_context() + text, unknown))
        specials, itos = len(v.specials), v.itos
        bids = np.array([i for i in range(specials, len(itos)) if boundary(itos[i])], np.int64)
        beams = [(0.0, "", logits, state)]
        finished: list[tuple[float, str, str]] = []
        for _ in range(max_chars):
            candidates = []
            for lp, cont, lg, st in beams:
                logp = log_softmax(lg)
                logp[:specials] = -np.inf
                if (prefix + cont) and bids.size:
                    ends = logp[bids]
                    m = float(np.max(ends))
                    lse = m + math.log(float(np.sum(np.exp(ends - m)))) if m > -np.inf else m
                    finished.append((lp + lse, cont, itos[int(bids[int(np.argmax(ends))])]))
                logp[bids] = -np.inf
                top = np.argsort(-logp, kind="stable")[: min(beam_size, logp.size - specials)]
                for idx in top:
                    if logp[idx] > -np.inf:
                        candidates.append((lp + float(logp[idx]), cont + itos[idx], int(idx), st))
            if not candidates:
                break
            best = heapq.nlargest(beam_size, candidates, key=lambda c: c[0])
            if len(finished) >= k and best[0][0] < sorted(f[0] for f in finished)[-k]:
                break
            beams = []
            for lp, cont, idx, st in best:
                lg, st2 = self._lm_advance([idx], st)
                beams.append((lp, cont, lg, st2))
        return [
            {
                "word": prefix + cont,
                "continuation": cont,
                "boundary": b,
                "probability": math.exp(lp),
                "log_prob": lp,
            }
            for lp, cont, b in heapq.nlargest(k, finished, key=lambda f: f[0])
        ]

    def next_words(self, text: str, k: int = 5, unknown=None) -> list[dict[str, Any]]:
        """The ``k`` likeliest next words of a word-level model (``LanguageModel.next_words``)."""
        v = self.vocab
        if v.level != "word":
            raise ValueError("next_words() needs a word-level model; use complete()")
        logits, _ = self._lm_advance(self._lm_encode(self._default_context() + text, unknown))
        logp = log_softmax(logits)
        logp[: len(v.specials)] = -np.inf
        top = np.argsort(-logp, kind="stable")[: min(k, logp.size - len(v.specials))]
        return [
            {"word": v.itos[i], "probability": math.exp(float(logp[i])), "log_prob": float(logp[i])}
            for i in top
        ]

    # -- classifier and tagger ------------------------------------------------------------------
    def _token_rows(self, tokens: list[str]) -> tuple[list[int], np.ndarray | None]:
        c = self.config
        words = [t.lower() for t in tokens] if c["lowercase"] else tokens
        ids = self.vocab.encode(words, "unk")
        if "chars" not in self.vocabs:
            return ids, None
        m = max(1, c["max_word_len"])
        kept = [t if len(t) <= m else t[: m // 2] + t[len(t) - (m - m // 2) :] for t in tokens]
        chars = np.zeros((len(kept), max(1, max(map(len, kept), default=1))), np.int64)
        cv = self.vocabs["chars"]
        for i, w in enumerate(kept):
            chars[i, : len(w)] = [cv.stoi.get(ch, cv.unk_id) for ch in w]
        return ids, chars

    def _token_batch(self, rows: list[tuple[list[int], np.ndarray | None]]):
        ids, lengths = pad([r[0] for r in rows])
        feeds = {"inputs": ids, "lengths": lengths}
        if rows[0][1] is not None:
            C = max(r[1].shape[1] for r in rows)
            buf = np.zeros((len(rows), ids.shape[1], C), np.int64)
            for b, (_, ch) in enumerate(rows):
                buf[b, : ch.shape[0], : ch.shape[1]] = ch
            feeds["chars"] = buf
        return feeds

    def _classify_rows(self, inputs: list) -> list:
        c = self.config
        rows = []
        for i, x in enumerate(inputs):
            if c["numeric"]:
                if isinstance(x, str):
                    x = [float(p) for p in re.split(r"[,\s]+", x.strip()) if p]
                values = np.asarray(x, dtype=np.float32).reshape(-1)
                if values.size != c["num_features"]:
                    raise ValueError(
                        f"input {i + 1}: expected {c['num_features']} numbers, found {values.size}"
                    )
                rows.append(values.reshape(-1, c["step_size"]) / (c["feature_scale"] or 1.0))
                continue
            text = x.lower() if c["lowercase"] else x
            tokens = text.split() if c["level"] == "word" else list(text)
            tokens = tokens[: c["max_len"]] if c["max_len"] else tokens
            if not tokens:
                raise ValueError(f"input {i + 1}: the text has no tokens")
            rows.append(self._token_rows(tokens))
        return rows

    def probabilities(self, inputs: list, batch_size: int = 256) -> np.ndarray:
        """softmax(logits) ``(N, K)`` in the given order."""
        rows = self._classify_rows(inputs)
        numeric = self.config["numeric"]
        lengths = [len(r) if numeric else len(r[0]) for r in rows]
        out = np.zeros((len(rows), len(self.config["labels"])), np.float32)
        for idx in length_sorted(lengths, batch_size):
            if numeric:
                T = max(lengths[i] for i in idx)
                x = np.zeros((len(idx), T, self.config["step_size"]), np.float32)
                for b, i in enumerate(idx):
                    x[b, : lengths[i]] = rows[i]
                feeds = {"inputs": x, "lengths": np.array([lengths[i] for i in idx], np.int64)}
            else:
                feeds = self._token_batch([rows[i] for i in idx])
            out[idx] = softmax(self.run("classifier", feeds)["logits"])
        return out

    def classify(self, inputs: list, ensemble=()) -> list[dict[str, Any]]:
        """Each input's ``label``, its ``probability`` and every class's (``Classifier.predict``)."""
        if ensemble:
            raise ValueError("an exported classifier runs alone: --ensemble needs the runs")
        names = self.config["label_names"]
        probs = self.probabilities(list(inputs))
        results = []
        for x, p in zip(inputs, probs.tolist()):
            k = int(np.argmax(p))
            results.append(
                {
                    "input": x if isinstance(x, str) else list(map(float, x)),
                    "label": names[k],
                    "probability": p[k],
                    "probabilities": dict(zip(names, p)),
                }
            )
        return results

    predict = classify

    def viterbi(self, emissions: np.ndarray, length: int) -> list[int]:
        """Best tag path of one sentence over ``emissions (T, K)`` and the CRF scores."""
        crf = self._crf()
        e = emissions[:length].astype(np.float32)
        delta = crf["start"] + e[0]
        pointers = []
        for t in range(1, length):
            scores = delta[:, None] + crf["transitions"]  # (K_prev, K)
            pointers.append(np.argmax(scores, 0))
            delta = scores.max(0) + e[t]
        tag = int(np.argmax(delta + crf["end"]))
        path = [tag]
        for ptr in reversed(pointers):
            tag = int(ptr[tag])
            path.append(tag)
        return path[::-1]

    def _crf(self) -> dict[str, np.ndarray]:
        if not hasattr(self, "_crf_scores"):
            data = json.loads((self.path / self.config["crf"]).read_text(encoding="utf-8"))
            self._crf_scores = {k: np.asarray(v, np.float32) for k, v in data.items()}
        return self._crf_scores

    @staticmethod
    def format_tagged(result: dict[str, Any]) -> str:
        """``word/TAG word/TAG …``."""
        return " ".join(f"{w}/{t}" for w, t in zip(result["tokens"], result["tags"]))

    def plot_attention(self, result: dict[str, Any], path) -> None:
        raise ValueError("attention pictures need rnnkit (matplotlib): use the run, not the export")

    def tag(self, sentences: list, batch_size: int = 128) -> list[dict[str, Any]]:
        """``tokens``, ``tags`` and (BIO tag sets) ``entities`` of each sentence."""
        tags = self.config["tags"]
        token_lists = [s.split() if isinstance(s, str) else list(s) for s in sentences]
        rows = []
        for i, tokens in enumerate(token_lists):
            if not tokens:
                raise ValueError(f"input {i + 1}: the sentence has no tokens")
            cleaned = [(_INVISIBLE.sub("", t) or t) for t in tokens]
            rows.append(self._token_rows(cleaned))
        paths: list[list[int]] = [[] for _ in rows]
        for idx in length_sorted([len(r[0]) for r in rows], batch_size):
            feeds = self._token_batch([rows[i] for i in idx])
            em = self.run("tagger", feeds)["emissions"]
            for b, i in enumerate(idx):
                n = int(feeds["lengths"][b])
                crf = self.config.get("crf")
                paths[i] = self.viterbi(em[b], n) if crf else em[b, :n].argmax(-1).tolist()
        results = []
        for tokens, path in zip(token_lists, paths):
            names = [tags[k] for k in path]
            r: dict[str, Any] = {"tokens": tokens, "tags": names}
            if self.config["bio"]:
                r["entities"] = [
                    {"type": t, "start": s, "end": e, "text": " ".join(tokens[s:e])}
                    for t, s, e in bio_spans(names)
                ]
            results.append(r)
        return results

    # -- translation ----------------------------------------------------------------------------
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
            toks = _TOKEN.findall(t.lower() if lower else t)
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

    # -- forecasting ----------------------------------------------------------------------------
    def _fc_run(self, inputs: np.ndarray, state: dict | None):
        """One forecaster graph call; a fresh window's state is built as ``Forecaster.forward``
        builds it (scaling statistics, lags repeating the first input)."""
        c = self.config["forecast"]
        B, T, C = inputs.shape
        if state is None:
            state = self.zero_state(B)  # h (and c): the recurrent part
            if c["window_norm"] == "prefix":
                ref = inputs[:, : max(1, min(c["burn_in"], T))]
                state["mean"] = ref.mean(1, keepdims=True)
                state["scale"] = np.maximum(ref.std(1, keepdims=True), 0.1).astype(np.float32)
            elif c["window_norm"] == "running":
                for n in ("n", "sum", "sum_sq"):
                    state[n] = np.zeros((B, 1, C), np.float32)
            state["lags"] = np.repeat(inputs[:, :1], c["need"], axis=1)
        out = self.run("forecaster", {"inputs": inputs.astype(np.float32), **state})
        return out["params"], {n: out[n + "_out"] for n in state}

    def _point(self, params: np.ndarray) -> np.ndarray:
        if self.config["forecast"]["head"] != "quantile":
            return params[..., 0]
        return self._quantile_at(params, 0.5)

    def _quantile_at(self, params: np.ndarray, level: float) -> np.ndarray:
        q, tau = np.sort(params, -1), self.config["forecast"]["levels"]
        if len(tau) == 1:
            return q[..., 0]
        i = int(np.clip(np.searchsorted(tau, level) - 1, 0, len(tau) - 2))
        w = (level - tau[i]) / (tau[i + 1] - tau[i])
        return q[..., i] + w * (q[..., i + 1] - q[..., i])

    def _sample(self, params: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        head = self.config["forecast"]["head"]
        if head == "gaussian":
            return params[..., 0] + np.exp(params[..., 1]) * rng.standard_normal(params.shape[:-1])
        if head == "point":
            return params[..., 0]
        q, tau = np.sort(params, -1), np.asarray(self.config["forecast"]["levels"])
        u = rng.random(params.shape[:-1]) * 0.99 + 0.005
        if tau.size == 1:
            return q[..., 0]
        i = np.clip(np.searchsorted(tau, u) - 1, 0, tau.size - 2)
        lo, hi = tau[i], tau[i + 1]
        q_lo = np.take_along_axis(q, i[..., None], -1)[..., 0]
        q_hi = np.take_along_axis(q, (i + 1)[..., None], -1)[..., 0]
        return q_lo + (u - lo) / (hi - lo) * (q_hi - q_lo)

    def _rollout(self, z: np.ndarray, horizon: int, choose) -> tuple[np.ndarray, np.ndarray]:
        """Recursive strategy: feed each step's chosen value back; (path, params per step)."""
        params, state, x, path = [], None, z, []
        for _ in range(horizon):
            out, state = self._fc_run(x, state)
            p = out[:, -1, 0]  # (B, C, K)
            params.append(p)
            nxt = choose(p).astype(np.float32)
            path.append(nxt)
            x = nxt[:, None]
        return np.stack(path, 1), np.stack(params, 1)

    def forecast(self, history, horizon=None, level=0.8, samples=200, seed=0) -> dict[str, Any]:
        """Forecast after ``history`` ((T, C) or (B, T, C), original units): ``mean`` and the
        central-``level`` interval's ``lower``/``upper`` in original units, as
        ``Forecaster.forecast``. Monte-Carlo intervals (recursive strategy trained without the
        rollout loss) draw from NumPy's generator, so they differ from torch's draws."""
        from statistics import NormalDist

        c = self.config["forecast"]
        x = np.asarray(history, dtype=np.float64)
        single = x.ndim == 2
        x = x[None] if single else x
        if x.ndim != 3 or x.shape[-1] != c["input_size"]:
            raise ValueError(
                f"history must have shape (steps, {c['input_size']}) or "
                f"(batch, steps, {c['input_size']}); got {x.shape}"
            )
        x = x[:, -c["window"] :]
        mean, std, transform = np.asarray(c["norm_mean"]), np.asarray(c["norm_std"]), c["transform"]

        def normalise(v):
            f = v if transform == "none" else (np.sqrt(v) if transform == "sqrt" else np.log1p(v))
            return (f - mean) / std

        def back(t):
            if t is None:
                return None
            y = np.asarray(t, np.float64) * std + mean
            if transform == "sqrt":
                y = np.square(np.maximum(y, 0.0))
            elif transform == "log1p":
                y = np.expm1(y)
            return y[0] if single else y

        z = np.stack([_causal_fill(normalise(s)) for s in x])
        z = np.nan_to_num(z, nan=0.0).astype(np.float32)
        H = c["horizon"] if horizon is None else horizon
        if H < 1:
            raise ValueError(f"horizon must be >= 1; got {H}")
        if c["strategy"] == "direct":
            if H > c["horizon"]:
                raise ValueError(f"this model forecasts directly up to {c['horizon']} steps")
            params = self._fc_run(z, None)[0][:, -1, :H]
        else:
            params = self._rollout(z, H, self._point)[1]
        point, lower, upper = self._point(params), None, None
        if level is not None and c["head"] != "point":
            if c["strategy"] == "direct" or c["rollout_weight"] > 0:
                if c["head"] == "gaussian":
                    half = NormalDist().inv_cdf(0.5 + level / 2) * np.exp(params[..., 1])
                    lower, upper = params[..., 0] - half, params[..., 0] + half
                else:
                    lower = self._quantile_at(params, 0.5 - level / 2)
                    upper = self._quantile_at(params, 0.5 + level / 2)
            else:
                rng = np.random.default_rng(seed)
                many = np.repeat(z, samples, axis=0)
                paths = self._rollout(many, H, lambda p: self._sample(p, rng))[0]
                paths = paths.reshape(z.shape[0], samples, H, -1)
                lower, upper = np.quantile(paths, [0.5 - level / 2, 0.5 + level / 2], axis=1)
        return {"mean": back(point), "lower": back(lower), "upper": back(upper)}


def _causal_fill(values: np.ndarray) -> np.ndarray:
    """Each NaN replaced by the last observed value above it in its column (time runs down)."""
    values = np.array(values, dtype=np.float64)
    n = values.shape[0]
    index = np.where(~np.isnan(values), np.arange(n)[:, None], -1)
    np.maximum.accumulate(index, axis=0, out=index)
    filled = values[np.maximum(index, 0), np.arange(values.shape[1])[None, :]]
    return np.where(index >= 0, filled, np.nan)


def load(path: str | Path, threads: int | None = None) -> Exported:
    """Open an export folder."""
    return Exported(path, threads)


def is_export_dir(path: str | Path) -> bool:
    """Whether ``path`` is an rnnkit ONNX export folder."""
    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text(encoding="utf-8")).get("format") == FORMAT
    except (OSError, ValueError, AttributeError):
        return False


# ---------------------------------------------------------------------------------------------
# Greedy and beam search over a step function (rnnkit.decoding, in NumPy)
# ---------------------------------------------------------------------------------------------
def _select(state: dict[str, np.ndarray], rows: np.ndarray) -> dict[str, np.ndarray]:
    return {k: v[rows] for k, v in state.items()}


def greedy_decode(step, state, batch_size, bos, eos, max_len):
    """y_t = argmax log p(· | y_<t, x) until eos or ``max_len`` (``rnnkit.decoding``)."""
    tokens = np.full(batch_size, bos, np.int64)
    done = np.zeros(batch_size, bool)
    total = np.zeros(batch_size, np.float64)
    emitted, weights = [], []
    for _ in range(max_len):
        log_probs, state, att = step(tokens, state)
        tokens = log_probs.argmax(-1)
        best = log_probs[np.arange(batch_size), tokens]
        total += np.where(done, 0.0, best.astype(np.float64))
        tokens = np.where(done, eos, tokens)
        emitted.append(tokens)
        if att is not None:
            weights.append(att)
        done = done | (tokens == eos)
        if done.all():
            break
    out = np.stack(emitted, 1)
    att = np.stack(weights, 1) if weights else None
    hyps = []
    for i in range(batch_size):
        ends = np.nonzero(out[i] == eos)[0]
        n = int(ends[0]) if ends.size else out.shape[1]
        hyps.append(
            {
                "tokens": out[i, :n].tolist(),
                "score": float(total[i]),
                "attention": att[i, :n] if att is not None else None,
                "log_prob": float(total[i]),
                "finished": bool(ends.size),
            }
        )
    return hyps


def beam_search(step, state, batch_size, bos, eos, beam_size=5, max_len=100, length_penalty=1.0):
    """Width-``beam_size`` search, scores log p / |y|^α (``rnnkit.decoding.beam_search``)."""
    K, lp, ninf = beam_size, float(length_penalty), -np.inf
    active = np.arange(batch_size)
    state = _select(state, np.repeat(np.arange(batch_size), K))
    scores = np.full((batch_size, K), ninf, np.float32)
    scores[:, 0] = 0.0
    history = np.zeros((batch_size * K, 0), np.int64)
    att_hist = None
    tokens = np.full(batch_size * K, bos, np.int64)
    best: list[Any] = [None] * batch_size
    best_score = [ninf] * batch_size
    n_finished = [0] * batch_size

    def hyp(row, normalised, raw, finished):
        a = att_hist[row].copy() if att_hist is not None else None
        return {
            "tokens": history[row].tolist(),
            "score": normalised,
            "attention": a,
            "log_prob": raw,
            "finished": finished,
        }

    for t in range(max_len):
        log_probs, state, att = step(tokens, state)
        A, V = active.size, log_probs.shape[-1]
        length = t + 1
        cand = (scores[:, :, None] + log_probs.astype(np.float32).reshape(A, K, V)).reshape(A, -1)
        n_top = min(2 * K, K * V)
        index = np.argsort(-cand, axis=1, kind="stable")[:, :n_top]
        top = np.take_along_axis(cand, index, 1)
        beam, token = index // V, index % V
        is_eos = token == eos
        if att is not None and att_hist is None:
            att_hist = np.zeros((A * K, 0, att.shape[-1]), np.float32)
        final = is_eos[:, :K] & np.isfinite(top[:, :K])
        for a, j in zip(*np.nonzero(final)):
            sid = int(active[a])
            n_finished[sid] += 1
            raw = float(top[a, j])
            normalised = raw / length**lp
            if normalised > best_score[sid]:
                best_score[sid] = normalised
                best[sid] = hyp(a * K + int(beam[a, j]), normalised, raw, True)
        masked = np.where(is_eos, ninf, top)
        pick = np.argsort(-masked, axis=1, kind="stable")[:, :K]
        alive = np.take_along_axis(masked, pick, 1)
        parent = (np.arange(A)[:, None] * K + np.take_along_axis(beam, pick, 1)).reshape(-1)
        history = np.concatenate(
            [history[parent], np.take_along_axis(token, pick, 1).reshape(-1, 1)], 1
        )
        if att is not None:
            att_hist = np.concatenate([att_hist[parent], att[parent][:, None]], 1)
        scores = alive
        factor = max((length + 1) ** lp, max_len**lp)
        reachable = alive[:, 0] / factor
        keep = [
            n_finished[sid] < K and not (best[sid] is not None and best_score[sid] >= reachable[a])
            for a, sid in enumerate(active.tolist())
        ]
        if not all(keep):
            kept = np.array([a for a, k in enumerate(keep) if k], np.int64)
            kept_rows = (kept[:, None] * K + np.arange(K)).reshape(-1)
            active, scores = active[kept], scores[kept]
            history, parent = history[kept_rows], parent[kept_rows]
            if att_hist is not None:
                att_hist = att_hist[kept_rows]
        if active.size == 0 or length == max_len:
            break
        state = _select(state, parent)
        tokens = history[:, -1]
    if active.size and history.shape[1] == max_len:
        for a, sid in enumerate(active.tolist()):
            for k in range(K):
                raw = float(scores[a, k])
                normalised = raw / max_len**lp
                if raw > ninf and normalised > best_score[sid]:
                    best_score[sid] = normalised
                    best[sid] = hyp(a * K + k, normalised, raw, False)
    empty = {"tokens": [], "score": ninf, "attention": None, "log_prob": ninf, "finished": False}
    return [h if h is not None else dict(empty) for h in best]


# ---------------------------------------------------------------------------------------------
# Command line: python runner.py DIR VERB ...
# ---------------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="runner.py", description=__doc__.splitlines()[0])
    p.add_argument("dir")
    p.add_argument(
        "verb", choices=["generate", "score", "complete", "classify", "tag", "translate"]
    )
    p.add_argument("inputs", nargs="*", help="texts (score, complete, classify, tag, translate)")
    p.add_argument("--prompt", default="")
    p.add_argument("--length", type=int, default=200)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--seed", type=int)
    p.add_argument("--beam-size", type=int, default=5)
    p.add_argument("--k", type=int, default=5)
    args = p.parse_args(argv)
    try:
        model = load(args.dir)
        if args.verb == "generate":
            text = model.generate(
                args.prompt, args.length, args.temperature, args.top_k, args.top_p, args.seed
            )
            results: list[Any] = [{"prompt": args.prompt, "text": text}]
        elif args.verb == "score":
            results = [model.score(t) for t in args.inputs]
        elif args.verb == "complete":
            results = [{"text": t, "completions": model.complete(t, args.k)} for t in args.inputs]
        elif args.verb == "classify":
            results = model.classify(args.inputs)
        elif args.verb == "tag":
            results = model.tag(args.inputs)
        else:
            results = model.translate(args.inputs, beam_size=args.beam_size)
    except (ValueError, FileNotFoundError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in results:
        print(json.dumps(r, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())

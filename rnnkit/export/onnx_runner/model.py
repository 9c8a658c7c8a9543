"""The exported model: every task's inference methods on one export folder, and the inference
contract's ``infer(request)`` over them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .decoders import DecoderMethods
from .forecast import ForecastMethods
from .labelling import LabelMethods
from .language import LanguageMethods
from .shared import contract

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


class Exported(LanguageMethods, LabelMethods, DecoderMethods, ForecastMethods):
    """An export folder: ``config.json``, the graphs, vocabularies; the methods of its task."""

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
        out = self.forecast(
            np.asarray(r.history, np.float64), r.horizon, r.level, r.samples, r.seed
        )

        def rows(a):
            return None if a is None else np.asarray(a, dtype=np.float64).tolist()

        level = r.level if out["lower"] is not None else None
        return c.ForecastResult(rows(out["mean"]), rows(out["lower"]), rows(out["upper"]), level)


def load(path: str | Path, threads: int | None = None) -> Exported:
    """Open an export folder."""
    return Exported(path, threads)

"""The inference contract: one typed request → result pair per use, with JSON round trips.

Every loaded task model answers ``model.infer(request) -> result`` (its ``answers`` lists the
request types it takes); the CLI's ``--json`` output, the server and the exporter all speak
these types, so none of them re-implements sampling, beam search, batching or formatting. Each type's ``to_json()`` gives a plain dict (for a
result: what ``rnnkit <verb> --json`` prints; a result over several inputs gives one such dict per
input from ``lines()``) and ``from_json(dict)`` checks it, raising ``ValueError`` that names the
field and what was expected. This module imports no task: tasks import it.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from typing import Any, ClassVar, Union

__all__ = [
    "CaptionRequest",
    "CaptionResult",
    "ClassifyRequest",
    "ClassifyResult",
    "CompleteRequest",
    "CompleteResult",
    "EvaluateRequest",
    "EvaluateResult",
    "ForecastRequest",
    "ForecastResult",
    "GenerateRequest",
    "GenerateResult",
    "Message",
    "MusicRequest",
    "MusicResult",
    "ScoreRequest",
    "ScoreResult",
    "TagRequest",
    "TagResult",
    "TranslateRequest",
    "TranslateResult",
    "refuse",
]


def _describe(tp: Any) -> str:
    """A type hint in words, for error messages."""
    origin = typing.get_origin(tp)
    if origin in (Union, types.UnionType):
        return " or ".join(_describe(a) for a in typing.get_args(tp))
    if origin is list:
        return f"a list of {_describe(typing.get_args(tp)[0])}"
    if origin is dict:
        return "an object"
    if tp is type(None):
        return "null"
    if tp is Any:
        return "any value"
    return {str: "a string", int: "an integer", float: "a number", bool: "true or false"}.get(
        tp, getattr(tp, "__name__", str(tp))
    )


def _check(tp: Any, value: Any) -> bool:
    """Whether a JSON ``value`` fits the type hint ``tp``."""
    origin = typing.get_origin(tp)
    if tp is Any:
        return True
    if origin in (Union, types.UnionType):
        return any(_check(a, value) for a in typing.get_args(tp))
    if origin is list:
        return isinstance(value, list) and all(_check(typing.get_args(tp)[0], v) for v in value)
    if origin is dict:
        return isinstance(value, dict) and all(isinstance(k, str) for k in value)
    if tp is type(None):
        return value is None
    if tp is bool:
        return isinstance(value, bool)
    if tp is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if tp is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if tp is str:
        return isinstance(value, str)
    return False


class Message:
    """Base of every request and result: ``to_json`` / ``from_json`` over the dataclass fields.

    A field named ``extra`` (results only) holds keys a task adds beyond the typed ones; they are
    written at the top level of the JSON and read back into it.
    """

    #: value checks run by :meth:`from_json` and on construction: field → (test, "expected ...")
    checks: ClassVar[dict[str, tuple[Any, str]]] = {}

    def __post_init__(self) -> None:
        for name, (test, expected) in self.checks.items():
            value = getattr(self, name)
            if value is not None and not test(value):
                raise ValueError(
                    f"{type(self).__name__}.{name}: expected {expected}; got {value!r}"
                )

    def to_json(self) -> dict[str, Any]:
        """This message as a plain JSON-ready dict."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.name == "extra":
                out.update(value)
            else:
                out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Any):
        """Check ``data`` (a dict as ``to_json`` writes it) and build the message from it."""
        if not isinstance(data, dict):
            raise ValueError(f"{cls.__name__}: expected a JSON object; got {type(data).__name__}")
        hints = typing.get_type_hints(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        kwargs: dict[str, Any] = {}
        extra = {k: v for k, v in data.items() if k not in names or k == "extra"}
        if extra and "extra" not in names:
            raise ValueError(
                f"{cls.__name__}: unknown field(s) {', '.join(sorted(extra))}; "
                f"expected some of {', '.join(sorted(names))}"
            )
        for f in dataclasses.fields(cls):
            if f.name == "extra":
                kwargs["extra"] = extra
                continue
            if f.name not in data:
                if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                    raise ValueError(f"{cls.__name__}.{f.name}: required field missing")
                continue
            value = data[f.name]
            if not _check(hints[f.name], value):
                raise ValueError(
                    f"{cls.__name__}.{f.name}: expected {_describe(hints[f.name])}; "
                    f"got {type(value).__name__} {value!r:.60}"
                )
            kwargs[f.name] = value
        return cls(**kwargs)


def _positive(v: Any) -> bool:
    return v >= 1


def _non_negative(v: Any) -> bool:
    return v >= 0


def _unit(v: Any) -> bool:
    return 0.0 < v <= 1.0


def _open_unit(v: Any) -> bool:
    return 0.0 < v < 1.0


_UNKNOWN = (lambda v: v in ("error", "drop"), '"error" or "drop"')
_SAMPLING = {
    "temperature": (_non_negative, "a number >= 0 (0 is greedy)"),
    "top_k": (_positive, "an integer >= 1 or null"),
    "top_p": (_unit, "a number in (0, 1] or null"),
}


def _items(kind: type[Message], rows: list[Any]) -> list[dict[str, Any]]:
    """Check each per-input row against ``kind`` and keep it as its plain dict."""
    return [kind.from_json(r if isinstance(r, dict) else r.to_json()).to_json() for r in rows]


class PerInputResult(Message):
    """A result whose one field lists a row per input, in input order: each row is checked
    against ``row`` (a message type; ``None``: kept as given) and ``lines()`` gives the rows,
    which is what ``rnnkit <verb> --json`` prints, one line each."""

    row: ClassVar[type[Message] | None] = None

    def _rows_name(self) -> str:
        return dataclasses.fields(self)[0].name

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.row is not None:
            name = self._rows_name()
            setattr(self, name, _items(self.row, getattr(self, name)))

    def lines(self) -> list[dict[str, Any]]:
        return list(getattr(self, self._rows_name()))


# ---------------------------------------------------------------------------------------------
# language model (lm, music runs answer generate too)
# ---------------------------------------------------------------------------------------------
@dataclass
class GenerateRequest(Message):
    """Sample text after a prompt. ``stop``: strings that end the text (not included).

    >>> GenerateRequest.from_json({"prompt": "The ", "max_tokens": 40, "temperature": 0.8,
    ...                            "top_k": 20, "seed": 1, "stop": ["\\n"]}).max_tokens
    40
    """

    prompt: str = ""
    max_tokens: int = 500
    temperature: float = 0.8
    top_k: int | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: list[str] = field(default_factory=list)
    unknown: str = "error"
    checks: ClassVar = {"max_tokens": (_non_negative, "an integer >= 0"), "unknown": _UNKNOWN}
    checks |= _SAMPLING


@dataclass
class GenerateResult(Message):
    """The sampled ``text`` (prompt excluded), how many ``tokens`` were drawn and why it ended:
    ``finish_reason`` "length" (max_tokens reached) or "stop" (a stop string appeared).

    >>> GenerateResult("The ", "cat sat", 0.8, 20, None, 1, 7, "length").to_json()["text"]
    'cat sat'
    """

    prompt: str
    text: str
    temperature: float
    top_k: int | None
    top_p: float | None
    seed: int | None
    tokens: int
    finish_reason: str
    checks: ClassVar = {"finish_reason": (lambda v: v in ("length", "stop"), '"length" or "stop"')}


@dataclass
class ScoreRequest(Message):
    """Score whole texts under the model (``context``: what the first token is conditioned on).

    >>> ScoreRequest.from_json({"texts": ["the cat", "cat the"]}).texts
    ['the cat', 'cat the']
    """

    texts: list[str]
    context: str | None = None
    unknown: str = "error"
    checks: ClassVar = {"unknown": _UNKNOWN}


@dataclass
class TextScore(Message):
    """One scored text: log p (nats), tokens, nats and bits per token, perplexity, rank (1 = best).

    >>> TextScore("ab", -2.0, 2, 1.0, 1.4427, 2.7183, 1).to_json()["rank"]
    1
    """

    text: str
    log_prob: float
    tokens: int
    nats_per_token: float
    bits_per_token: float
    perplexity: float
    rank: int


@dataclass
class ScoreResult(PerInputResult):
    """The scores of a :class:`ScoreRequest`, in input order; ``lines()`` is ``score --json``.

    >>> ScoreResult([{"text": "ab", "log_prob": -2.0, "tokens": 2, "nats_per_token": 1.0,
    ...               "bits_per_token": 1.4427, "perplexity": 2.7183, "rank": 1}]).lines()[0]["rank"]
    1
    """

    scores: list[dict[str, Any]]
    row: ClassVar = TextScore


@dataclass
class CompleteRequest(Message):
    """The ``k`` likeliest ways to finish the word at the end of ``text`` (next words, word LM).

    >>> CompleteRequest.from_json({"text": "the ca", "k": 3}).k
    3
    """

    text: str
    k: int = 5
    unknown: str = "error"
    checks: ClassVar = {"k": (_positive, "an integer >= 1"), "unknown": _UNKNOWN}


@dataclass
class CompleteResult(Message):
    """Completions, likeliest first (``word``, ``probability``, ``log_prob`` …): ``complete --json``.

    >>> CompleteResult("the ca", [{"word": "cat", "probability": 0.5}]).to_json()["completions"]
    [{'word': 'cat', 'probability': 0.5}]
    """

    text: str
    completions: list[dict[str, Any]]


@dataclass
class EvaluateRequest(Message):
    """Metrics on labelled data (``data``: a file; ``None``: the run's validation split for LMs).

    >>> EvaluateRequest.from_json({"data": "valid.tsv"}).data
    'valid.tsv'
    """

    data: str | None = None
    encoding: str | None = None
    confusion: str | None = None


@dataclass
class EvaluateResult(Message):
    """The task's metrics, keys as ``evaluate --json`` prints them (e.g. loss, bits, accuracy).

    >>> EvaluateResult({"data": "valid.txt", "loss": 1.4}).to_json()
    {'data': 'valid.txt', 'loss': 1.4}
    """

    extra: dict[str, Any] = field(default_factory=dict)


# ---------------------------------------------------------------------------------------------
# classify, tag, translate, caption
# ---------------------------------------------------------------------------------------------
@dataclass
class ClassifyRequest(Message):
    """Classify texts (or rows of numbers for numeric classifiers); with ``saliency`` each text's
    prediction also carries the weight of every token (how much it drove the predicted label).

    >>> ClassifyRequest.from_json({"texts": ["a fine film"]}).texts
    ['a fine film']
    """

    texts: list[str | list[float]]
    saliency: bool = False


@dataclass
class Classification(Message):
    """One input's class: ``label``, its ``probability`` and every class's ``probabilities``.

    >>> Classification("good", "pos", 0.9, {"pos": 0.9, "neg": 0.1}).to_json()["label"]
    'pos'
    """

    input: str | list[float]
    label: str
    probability: float
    probabilities: dict[str, float]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class ClassifyResult(PerInputResult):
    """One :class:`Classification` per input, in order; ``lines()`` is ``classify --json``.

    >>> ClassifyResult([{"input": "good", "label": "pos", "probability": 0.9,
    ...                  "probabilities": {"pos": 0.9, "neg": 0.1}}]).lines()[0]["label"]
    'pos'
    """

    predictions: list[dict[str, Any]]
    row: ClassVar = Classification


@dataclass
class TagRequest(Message):
    """Tag sentences (whitespace-tokenised strings or token lists).

    >>> TagRequest.from_json({"texts": ["John lives in Paris"]}).texts
    ['John lives in Paris']
    """

    texts: list[str | list[str]]


@dataclass
class TaggedSentence(Message):
    """A sentence's ``tokens`` and ``tags`` (and ``entities`` for BIO tag sets).

    >>> TaggedSentence(["Paris"], ["B-LOC"]).to_json()
    {'tokens': ['Paris'], 'tags': ['B-LOC']}
    """

    tokens: list[str]
    tags: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TagResult(PerInputResult):
    """One :class:`TaggedSentence` per input; ``lines()`` is ``tag --json``.

    >>> TagResult([{"tokens": ["Paris"], "tags": ["B-LOC"]}]).lines()[0]["tags"]
    ['B-LOC']
    """

    sentences: list[dict[str, Any]]
    row: ClassVar = TaggedSentence


@dataclass
class TranslateRequest(Message):
    """Translate texts with beam search (``beam_size`` 1 is greedy); ``attention`` adds the
    weights matrix (target tokens × source tokens) to each translation.

    >>> TranslateRequest.from_json({"texts": ["il pleut"], "beam_size": 4}).beam_size
    4
    """

    texts: list[str]
    beam_size: int = 5
    max_len: int | None = None
    length_penalty: float = 1.0
    attention: bool = False
    checks: ClassVar = {
        "beam_size": (_positive, "an integer >= 1"),
        "max_len": (_positive, "an integer >= 1 or null"),
        "length_penalty": (lambda v: 0 <= v <= 5, "a number in [0, 5] (GNMT's alpha)"),
    }


@dataclass
class Translation(Message):
    """One translation: ``source``, ``translation``, ``tokens``, ``score``, ``log_prob`` …

    >>> Translation("il pleut", "it rains", ["it", "rains"], -0.3).to_json()["translation"]
    'it rains'
    """

    source: str
    translation: str
    tokens: list[str]
    score: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class TranslateResult(PerInputResult):
    """One :class:`Translation` per input; ``lines()`` is ``translate --json``.

    >>> TranslateResult([{"source": "il pleut", "translation": "it rains",
    ...                   "tokens": ["it", "rains"], "score": -0.3}]).lines()[0]["score"]
    -0.3
    """

    translations: list[dict[str, Any]]
    row: ClassVar = Translation


@dataclass
class CaptionRequest(Message):
    """Caption image files (or ``archive.tar:member`` names); ``attention`` adds the decoder's
    attention weights (a 7×7 grid per word) to each caption.

    >>> CaptionRequest.from_json({"images": ["dog.jpg"], "beam_size": 3}).beam_size
    3
    """

    images: list[str]
    beam_size: int = 1
    max_len: int | None = None
    attention: bool = False
    checks: ClassVar = {
        "beam_size": (_positive, "an integer >= 1"),
        "max_len": (_positive, "an integer >= 1 or null"),
    }


@dataclass
class Caption(Message):
    """One image's ``caption``, its ``words`` and ``score`` (log-probability).

    >>> Caption("dog.jpg", "a dog runs", ["a", "dog", "runs"], -1.2).to_json()["caption"]
    'a dog runs'
    """

    image: str
    caption: str
    words: list[str]
    score: float
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaptionResult(PerInputResult):
    """One :class:`Caption` per image; ``lines()`` is ``caption --json``.

    >>> CaptionResult([{"image": "dog.jpg", "caption": "a dog", "words": ["a", "dog"],
    ...                 "score": -1.0}]).lines()[0]["caption"]
    'a dog'
    """

    captions: list[dict[str, Any]]
    row: ClassVar = Caption


# ---------------------------------------------------------------------------------------------
# forecast, music
# ---------------------------------------------------------------------------------------------
@dataclass
class ForecastRequest(Message):
    """Forecast ``horizon`` steps after ``history`` (T rows of C values, original units), with the
    central ``level`` interval (null: none); ``samples``/``seed`` drive Monte-Carlo intervals.

    >>> ForecastRequest.from_json({"history": [[1.0], [2.0], [3.0]], "horizon": 2}).horizon
    2
    """

    history: list[list[float]]
    horizon: int | None = None
    level: float | None = 0.8
    samples: int = 200
    seed: int = 0
    checks: ClassVar = {
        "horizon": (_positive, "an integer >= 1 or null"),
        "level": (_open_unit, "a number in (0, 1) or null"),
        "samples": (_positive, "an integer >= 1"),
    }


@dataclass
class ForecastResult(Message):
    """The forecast: ``mean`` (H rows of C values) and the interval bounds (null without one).

    >>> ForecastResult([[4.0]], [[3.5]], [[4.5]], 0.8).to_json()["upper"]
    [[4.5]]
    """

    mean: list[list[float]]
    lower: list[list[float]] | None
    upper: list[list[float]] | None
    level: float | None


@dataclass
class MusicRequest(Message):
    """Sample ``tunes`` whole ABC tunes; ``key``/``meter``/``title``/``unit`` fix header fields.

    >>> MusicRequest.from_json({"tunes": 2, "key": "D", "meter": "6/8", "seed": 3}).key
    'D'
    """

    tunes: int = 1
    prompt: str = ""
    key: str | None = None
    meter: str | None = None
    title: str | None = None
    unit: str | None = None
    temperature: float = 1.0
    top_k: int | None = None
    top_p: float | None = None
    max_chars: int = 2000
    seed: int | None = None
    checks: ClassVar = {"tunes": (_positive, "an integer >= 1")} | _SAMPLING


@dataclass
class MusicResult(PerInputResult):
    """The tunes: each ``number``, its ``abc`` text and why sampling ``ended`` (``eos``,
    ``blank line``, ``next tune`` or ``max_chars``).

    >>> MusicResult([{"number": 1, "abc": "X:1\\nK:D\\nabc|", "ended": "eos"}]).tunes[0]["ended"]
    'eos'
    """

    tunes: list[dict[str, Any]]


def refuse(model: Any, request: Any) -> Message:
    """The ``ValueError`` a model's ``infer`` raises for a request it does not answer."""
    names = ", ".join(t.__name__ for t in getattr(model, "answers", ())) or "nothing"
    what = type(request).__name__
    if isinstance(request, EvaluateRequest) and request.data is None:
        raise ValueError("EvaluateRequest.data: expected a file to evaluate on; got null")
    raise ValueError(f"a {type(model).__name__} does not answer {what}; it answers {names}")

"""What every route of the server shares: its settings, the loaded models, and errors as JSON.

A model is served under a name; :func:`describe` lists the endpoints it answers (derived from
its ``answers``, the request types of :mod:`rnnkit.inference`) and :meth:`ServerContext.pick`
finds the model a request names — or the only one that answers that endpoint.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from rnnkit.inference import (
    CaptionRequest,
    ClassifyRequest,
    CompleteRequest,
    ForecastRequest,
    GenerateRequest,
    MusicRequest,
    ScoreRequest,
    TagRequest,
    TranslateRequest,
)

#: endpoint name → the request type a model must answer for it
ENDPOINT_REQUESTS: dict[str, type] = {
    "generate": GenerateRequest,
    "score": ScoreRequest,
    "complete": CompleteRequest,
    "classify": ClassifyRequest,
    "tag": TagRequest,
    "translate": TranslateRequest,
    "caption": CaptionRequest,
    "forecast": ForecastRequest,
    "music": MusicRequest,
}

#: the task a model is shown as: the first endpoint of these it answers
_TASK_OF_ENDPOINT = (
    ("music", "music"), ("generate", "lm"), ("classify", "classify"), ("tag", "tag"),
    ("translate", "translate"), ("caption", "caption"), ("forecast", "forecast"),
)  # fmt: skip


@dataclass
class ServerSettings:
    """Limits and switches of one server (``rnnkit serve --help`` sets them)."""

    #: characters of text in one request, all its strings together
    max_input_chars: int = 20_000
    #: inputs in one request (texts, prompts × n, series, tunes)
    max_items: int = 64
    #: tokens one completion may ask for
    max_tokens: int = 2048
    #: seconds a request may run (a generation past it ends with finish_reason "timeout")
    request_timeout_s: float = 60.0
    #: requests worked on at once; one more is answered 429
    max_concurrent: int = 128
    #: bytes of a request body (an uploaded image included)
    max_body_bytes: int = 8 * 2**20
    #: keyboard sessions held (the least recently used is evicted) and their idle lifetime
    max_sessions: int = 1000
    session_ttl_s: float = 1800.0
    #: batch concurrent generations of a model into one step (off: each stream stepped alone)
    batching: bool = True
    #: how long a decoding step waits for streams to join it
    max_wait_s: float = 0.002
    #: origins allowed by CORS (none: CORS off)
    cors_origins: list[str] = field(default_factory=list)


class ApiError(Exception):
    """A request the server refuses: answered with ``status`` and a JSON error naming why."""

    def __init__(self, status: int, message: str, param: str | None = None,
                 kind: str = "invalid_request_error"):  # fmt: skip
        super().__init__(message)
        self.status, self.message, self.param, self.kind = status, message, param, kind

    def to_json(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param,
                          "code": self.status}}  # fmt: skip


def endpoints_of(model: Any) -> list[str]:
    """The endpoints ``model`` answers (``sessions`` for language models that complete words)."""
    answers = tuple(getattr(model, "answers", ()))
    found = [e for e, req in ENDPOINT_REQUESTS.items() if req in answers]
    if "complete" in found and hasattr(model, "prime"):
        found.append("sessions")
    return found


def describe(name: str, model: Any) -> dict[str, Any]:
    """A served model as ``/v1/models`` lists it."""
    endpoints = endpoints_of(model)
    task = next((t for e, t in _TASK_OF_ENDPOINT if e in endpoints), "unknown")
    vocab = getattr(model, "vocab", None)
    return {"id": name, "object": "model", "owned_by": "rnnkit", "task": task,
            "level": getattr(vocab, "level", None), "answers": endpoints}  # fmt: skip


def finite(value: Any) -> Any:
    """``value`` with every NaN or infinite float replaced by None (JSON has neither)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


@dataclass
class ServerContext:
    """The state of one app: models by name, settings, metrics, sessions and schedulers."""

    models: dict[str, Any]
    settings: ServerSettings
    metrics: Any
    sessions: Any
    schedulers: dict[str, Any] = field(default_factory=dict)

    def pick(self, name: str | None, endpoint: str) -> tuple[str, Any]:
        """The model ``name`` (or the only one answering ``endpoint``), checked to answer it."""
        if name is None:
            fits = [n for n, m in self.models.items() if endpoint in endpoints_of(m)]
            if len(fits) != 1:
                raise ApiError(
                    400,
                    f"say which model: {len(fits)} served models answer {endpoint}"
                    + (f" ({', '.join(fits)})" if fits else ""),
                    "model",
                )
            name = fits[0]
        if name not in self.models:
            raise ApiError(404, f"unknown model {name!r}; serving {', '.join(self.models)}",
                           "model", "model_not_found")  # fmt: skip
        model = self.models[name]
        if endpoint not in endpoints_of(model):
            answers = ", ".join(endpoints_of(model)) or "nothing"
            raise ApiError(400, f"model {name!r} does not answer {endpoint}; it answers {answers}",
                           "model")  # fmt: skip
        return name, model

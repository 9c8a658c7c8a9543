"""Keyboard sessions: a language model's recurrent state kept on the server between requests.

A session holds the text typed so far and the model's ``(next logits, state)`` after reading
``default_context() + committed``, where ``committed`` is the part of the text whose tokens can
no longer change as more is typed:

* char models commit every character, so each keystroke costs exactly one recurrent step;
* word and BPE models commit up to the last word boundary (a word's tokens are only known once
  it ends); the word being typed is matched against the vocabulary (word level) or fed from the
  committed state (a few subword steps), never by re-reading the text before it.

Suggestions are the model's own ``complete`` / ``next_words`` answers given that carried state.
The :class:`SessionStore` caps the number of live sessions (the least recently used one is
evicted) and drops those idle for longer than the TTL.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

import torch

from rnnkit.tasks.language_model.completion import is_word_boundary


def _boundary_cut(text: str) -> int:
    """Length of ``text`` up to and including its last word-boundary character (0 if none)."""
    for i in range(len(text) - 1, -1, -1):
        if is_word_boundary(text[i]):
            return i + 1
    return 0


@dataclass
class Session:
    """One keyboard: the model it types with, its text, and the state after the committed part."""

    id: str
    model_name: str
    model: Any
    k: int = 3
    text: str = ""
    committed: str = ""
    logits: torch.Tensor | None = None
    state: Any = None
    last_used: float = field(default_factory=time.monotonic)
    lock: threading.Lock = field(default_factory=threading.Lock)

    # -- reading text ---------------------------------------------------------------------
    def _commit_point(self, text: str) -> int:
        """How much of ``text`` has tokens that more typing cannot change."""
        level = self.model.vocab.level
        if level == "char":
            return len(text)
        cut = _boundary_cut(text)
        if level == "bpe":  # byte-level BPE glues a space to the word after it: stop before it
            while cut > 0 and text[cut - 1] == " ":
                cut -= 1
        return cut

    def _read(self, ids: list[int]) -> int:
        if ids:
            self.logits, self.state = self.model.advance(ids, self.state)
        return len(ids)

    def _encode(self, text: str) -> list[int]:
        return self.model.encode(text, unknown="drop" if self.model.vocab.level == "char" else None)

    @torch.no_grad()
    def reset(self, text: str) -> int:
        """Read ``text`` from the start (a new session, or an edit that is not an append)."""
        self.state, self.logits = None, None
        self.text = self.committed = ""
        steps = self._read(self._encode(self.model.default_context()))
        return steps + self.append(text)

    @torch.no_grad()
    def append(self, new: str) -> int:
        """Type ``new`` after the current text; returns the recurrent steps it cost."""
        text = self.text + new
        cut = self._commit_point(text)
        steps = 0
        if cut > len(self.committed):
            piece = text[len(self.committed) : cut]
            steps = self._read(self._encode(piece))
            self.committed = text[:cut]
        self.text = text
        return steps

    def replace(self, text: str) -> int:
        """Set the whole text: an append when it extends the committed part, else a re-read."""
        if text.startswith(self.committed):
            self.text = self.committed
            return self.append(text[len(self.committed) :])
        return self.reset(text)

    # -- suggestions --------------------------------------------------------------------------
    @torch.no_grad()
    def suggestions(self) -> list[dict[str, Any]]:
        """The top-``k`` words to type next, from the carried state."""
        model, level = self.model, self.model.vocab.level
        partial = self.text[len(self.committed) :]
        if level == "word":
            prefix = partial.lstrip()
            return model.next_words(self.text, self.k, logits=self.logits, prefix=prefix)
        context = (self.logits, self.state)
        if level == "bpe" and partial:
            ids = model.encode(partial)
            context = model.advance(ids, self.state) if ids else context
        return model.complete(self.text, self.k, context=context)

    def to_json(self, steps: int | None = None) -> dict[str, Any]:
        out = {"id": self.id, "model": self.model_name, "text": self.text,
               "suggestions": self.suggestions()}  # fmt: skip
        if steps is not None:
            out["steps"] = steps
        return out


class SessionStore:
    """Live sessions by id: at most ``max_sessions`` (least recently used evicted first), each
    dropped after ``ttl_s`` seconds without a request."""

    def __init__(self, max_sessions: int = 1000, ttl_s: float = 1800.0):
        self.max_sessions = max_sessions
        self.ttl_s = ttl_s
        self._sessions: OrderedDict[str, Session] = OrderedDict()
        self._lock = threading.Lock()
        self.evicted = 0

    def __len__(self) -> int:
        return len(self._sessions)

    def _expire(self, now: float) -> None:
        for sid in [s.id for s in self._sessions.values() if now - s.last_used > self.ttl_s]:
            del self._sessions[sid]
            self.evicted += 1

    def create(self, model_name: str, model: Any, k: int) -> Session:
        """A new empty session (call :meth:`Session.reset` to read its first text)."""
        session = Session(uuid.uuid4().hex, model_name, model, k)
        with self._lock:
            self._expire(time.monotonic())
            while len(self._sessions) >= self.max_sessions:
                self._sessions.popitem(last=False)
                self.evicted += 1
            self._sessions[session.id] = session
        return session

    def get(self, sid: str) -> Session | None:
        """The live session ``sid`` (marked as just used), or None when unknown or expired."""
        with self._lock:
            now = time.monotonic()
            self._expire(now)
            session = self._sessions.get(sid)
            if session is not None:
                session.last_used = now
                self._sessions.move_to_end(sid)
            return session

    def delete(self, sid: str) -> bool:
        with self._lock:
            return self._sessions.pop(sid, None) is not None

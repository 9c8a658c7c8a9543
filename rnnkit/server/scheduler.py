"""Batching across requests: live generations of one model advance together, one step at a time.

Each decoding step gathers the live streams' states into one batch (after an idle spell it waits
``max_wait_s`` for the first wave to arrive; later newcomers join at the next step), runs one recurrent step, scatters the states back and hands each stream its token.
Streams join and leave between steps; a cancelled stream (client gone) or one past its deadline
leaves at the next step. With ``batching=False`` each stream is stepped alone (the baseline the
benchmark compares with). The model runs in a worker thread, so the event loop keeps serving.
"""

from __future__ import annotations

import asyncio
import math
import time
from dataclasses import dataclass, field

import torch

from rnnkit.server import adapter


def _held_back(text: str, stop: list[str]) -> int:
    """How many trailing characters of ``text`` must wait: the longest tail that begins one of
    the ``stop`` strings, or 1 for an incomplete UTF-8 character (BPE decodes it as U+FFFD)."""
    held = 1 if text.endswith("\ufffd") else 0
    for s in stop:
        for n in range(min(len(s) - 1, len(text)), held, -1):
            if text.endswith(s[:n]):
                held = n
                break
    return held


def _same(a: list, b: list) -> bool:
    """Whether two lists hold the same streams in the same order."""
    return len(a) == len(b) and all(x is y for x, y in zip(a, b))


class Mailbox:
    """What a request's streams have produced and its reader has not taken yet: ``put`` from
    the decoding loop, ``take`` (everything so far, waiting while empty) from the response. A
    lighter :class:`asyncio.Queue` for the one-reader case (one event loop, no threads)."""

    def __init__(self) -> None:
        self._items: list = []
        self._ready = asyncio.Event()

    def put(self, item) -> None:
        self._items.append(item)
        self._ready.set()

    async def take(self) -> list:
        while not self._items:
            self._ready.clear()
            await self._ready.wait()
        items, self._items = self._items, []
        return items


@dataclass
class Stream:
    """One generation in flight: sampling options, the tokens so far, and the mailbox of its
    response, which receives ``(stream, new text)`` items and ``(stream, None)`` at the end
    (``finish_reason`` then says why). The choices of one request share one mailbox."""

    logits: torch.Tensor
    state: object
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator | None  # None: no seed asked, draw with the shared generator
    stop: list[str] = field(default_factory=list)
    logprobs: int | None = None
    deadline: float = math.inf
    ids: list[int] = field(default_factory=list)
    text: str = ""
    shown: int = 0
    token_logprobs: list[float] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    finish_reason: str | None = None
    cancelled: bool = False
    error: str | None = None
    submitted: float = field(default_factory=time.monotonic)
    last_token: float | None = None
    queue: Mailbox = field(default_factory=Mailbox)


class Scheduler:
    """The decoding loop of one model; :meth:`submit` adds a stream to the next step.

    With batching, the live streams' states stay stacked in one batched state between steps;
    it is re-stacked only when streams join (their primed state is appended) or leave (their
    rows are dropped), so a step costs one recurrent call, one batched sampling pass and a
    multinomial draw per seeded stream (each with its own generator: a seed gives the same text
    as ``generate``) and one for all the others.
    """

    def __init__(self, model, name: str = "", metrics=None, batching: bool = True,
                 max_wait_s: float = 0.002):  # fmt: skip
        self.model = model
        self.name = name
        self.metrics = metrics
        self._tokens = metrics.tokens.labels(name) if metrics is not None else None
        self.batching = batching
        self.max_wait_s = max_wait_s
        self.live: list[Stream] = []
        self._members: list[Stream] = []  # the rows of _state, in order
        self._state = None
        self._logits = None  # the last step's (B, V) logits, rows as _members
        self._generator = torch.Generator(device=model.device)  # for streams without a seed
        self._generator.seed()
        self._stepping = False  # True while streams are live (no joining wait between steps)
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def submit(self, stream: Stream) -> Stream:
        self.live.append(stream)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return stream

    # -- in the worker thread -------------------------------------------------------------------
    def _sample(self, group: list[Stream], now: float) -> None:
        """Draw every stream's next token (streams with equal options in one batched pass),
        extend its text and mark it finished when due."""
        model = self.model
        by_options: dict[tuple, list[Stream]] = {}
        for s in group:
            by_options.setdefault((s.temperature, s.top_k, s.top_p), []).append(s)
        same_batch = len(by_options) == 1 and _same(group, self._members)
        for options, streams in by_options.items():
            # the last step's logits are already this batch when nobody joined or left
            logits = self._logits if same_batch else torch.stack([s.logits for s in streams])
            drawn = self._draw(logits, options, streams)
            logp = None
            if any(s.logprobs is not None for s in streams):
                logp = torch.log_softmax(logits.float(), -1)
            for row, (s, nxt) in enumerate(zip(streams, drawn)):
                if s.logprobs is not None:
                    s.token_logprobs.append(float(logp[row, nxt]))
                    top = torch.topk(logp[row], min(max(s.logprobs, 1), logp.shape[-1]))
                    s.top_logprobs.append({adapter.render(model, [i]): v for v, i in
                                           zip(top.values.tolist(), top.indices.tolist())})  # fmt: skip
                s.ids.append(nxt)
                s.text = adapter.extend(model, s.ids, s.text)
                cut = min((s.text.find(x) for x in s.stop if x and x in s.text), default=-1)
                if cut >= 0:
                    s.text, s.finish_reason = s.text[:cut], "stop"
                elif len(s.ids) >= s.max_tokens:
                    s.finish_reason = "length"
                elif now > s.deadline:
                    s.finish_reason = "timeout"

    def _draw(self, logits, options: tuple, streams: list[Stream]) -> list[int]:
        """The next id of each stream: seeded streams draw with their own generators, one
        draw each (a seed gives ``generate``'s text); the others share the scheduler's
        generator and are drawn together in one call."""
        if all(s.generator is None for s in streams):
            return adapter.sample(self.model, logits, options, self._generator)
        if all(s.generator is not None for s in streams):
            return adapter.sample(self.model, logits, options, [s.generator for s in streams])
        return adapter.sample(self.model, logits, options, [s.generator or self._generator
                                                            for s in streams])  # fmt: skip

    def _state_for(self, group: list[Stream]):
        """The batched state of ``group``'s rows (kept members first, then newcomers)."""
        model = self.model
        if not self.batching:
            return group, group[0].state
        if _same(group, self._members):
            return group, self._state
        wanted = {id(s) for s in group}
        keep = [i for i, s in enumerate(self._members) if id(s) in wanted]
        kept = [self._members[i] for i in keep]
        joined = {id(s) for s in kept}
        newcomers = [s for s in group if id(s) not in joined]
        parts = [adapter.rows(model, self._state, keep)] if kept else []
        parts += [s.state for s in newcomers]
        for s in newcomers:
            s.state = None  # its row lives in the batched state from now on
        return kept + newcomers, adapter.join(model, parts)

    def _advance(self, group: list[Stream], now: float) -> None:
        """Sample ``group``'s next tokens, then step the streams still going (worker thread)."""
        self._sample(group, now)
        going = [s for s in group if s.finish_reason is None]
        if not going:
            return
        order, state = self._state_for(going)
        logits, state = adapter.step(self.model, [s.ids[-1] for s in order], state)
        for row, s in enumerate(order):
            s.logits = logits[row]
        if self.batching:
            self._members, self._state, self._logits = order, state, logits
        else:
            order[0].state = state

    # -- in the event loop ------------------------------------------------------------------------
    def _emit(self, s: Stream, now: float) -> None:
        """Queue the stream's new text (holding back what may still become a stop string) and
        its end; time the token in the metrics."""
        if self.metrics is not None:
            if s.last_token is None:
                self.metrics.queue_seconds.observe(now - s.submitted)
            else:
                self.metrics.token_seconds.observe(now - s.last_token)
        s.last_token = now
        ready = len(s.text)
        if s.finish_reason is None:
            ready -= _held_back(s.text, s.stop)
        if ready > s.shown:
            piece, s.shown = s.text[s.shown : ready], ready
            s.queue.put((s, piece))
        if s.finish_reason is not None:
            s.queue.put((s, None))

    async def _run(self) -> None:
        while True:
            self.live = [s for s in self.live if not s.cancelled and s.finish_reason is None]
            if not self.live:
                self._members, self._state, self._logits, self._stepping = [], None, None, False
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=5.0)
                except TimeoutError:
                    return
                continue
            if self.max_wait_s > 0 and not self._stepping:
                await asyncio.sleep(self.max_wait_s)  # after idle: let the first wave join
            # no wait between busy steps: the responses write the last step's text while the
            # worker computes this one, and streams that arrive meanwhile join the next step
            self._stepping = True
            batch = [s for s in self.live if not s.cancelled and s.finish_reason is None]
            if self.metrics is not None:
                for _ in range(1 if self.batching else len(batch)):
                    self.metrics.batch_size.observe(len(batch) if self.batching else 1)
            now = time.monotonic()
            await asyncio.to_thread(self._advance_all, batch, now)
            done = time.monotonic()
            for s in batch:
                if s.ids or s.finish_reason is not None:
                    self._emit(s, done)
            if self._tokens is not None:
                self._tokens.inc(sum(1 for s in batch if s.ids and s.finish_reason != "error"))

    def _advance_all(self, batch: list[Stream], now: float) -> None:
        """One decoding step of every live stream: one batch, or (batching off) each stream
        alone, in turn. A failing group ends its streams with ``finish_reason`` "error"."""
        for group in [batch] if self.batching else [[s] for s in batch]:
            try:
                self._advance(group, now)
            except Exception as e:  # end the streams (their clients see "error"), never hang
                self._members, self._state, self._logits = [], None, None
                for s in group:
                    s.error = f"{type(e).__name__}: {e}"
                    s.finish_reason = "error"

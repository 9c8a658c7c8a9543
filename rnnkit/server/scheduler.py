"""Batching across requests: live generations of one model advance together, one step at a time.

Each decoding step gathers the live streams' states into one batch (waiting ``max_wait_s`` at most
for newcomers), runs one recurrent step, scatters the states back and hands each stream its token.
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


@dataclass
class Stream:
    """One generation in flight: sampling options, the tokens so far, and a queue of text pieces
    for its response (``None`` ends it; ``finish_reason`` then says why)."""

    logits: torch.Tensor
    state: object
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator
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
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)

    def finish(self, reason: str) -> None:
        self.finish_reason = reason
        self.queue.put_nowait(None)


class Scheduler:
    """The decoding loop of one model; :meth:`submit` adds a stream to the next step."""

    def __init__(self, model, name: str = "", metrics=None, batching: bool = True,
                 max_wait_s: float = 0.002):  # fmt: skip
        self.model = model
        self.name = name
        self.metrics = metrics
        self.batching = batching
        self.max_wait_s = max_wait_s
        self.live: list[Stream] = []
        self._wake = asyncio.Event()
        self._task: asyncio.Task | None = None

    def submit(self, stream: Stream) -> Stream:
        self.live.append(stream)
        self._wake.set()
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._run())
        return stream

    def _sample(self, stream: Stream, now: float) -> None:
        """Draw the stream's next token from its current logits; finish it when due."""
        model = self.model
        nxt = adapter.choose(
            model, stream.logits, stream.temperature, stream.top_k, stream.top_p, stream.generator
        )
        if stream.logprobs is not None:
            logp = torch.log_softmax(stream.logits.float(), -1)
            stream.token_logprobs.append(float(logp[nxt]))
            top = torch.topk(logp, min(max(stream.logprobs, 1), logp.numel()))
            stream.top_logprobs.append(
                {
                    adapter.render(model, [i]): v
                    for v, i in zip(top.values.tolist(), top.indices.tolist())
                }
            )
        stream.ids.append(nxt)
        stream.text = adapter.render(model, stream.ids)
        if self.metrics is not None:
            self.metrics.tokens.labels(self.name).inc()
            if stream.last_token is None:
                self.metrics.queue_seconds.observe(now - stream.submitted)
            else:
                self.metrics.token_seconds.observe(now - stream.last_token)
        stream.last_token = now
        cut = min((stream.text.find(s) for s in stream.stop if s and s in stream.text), default=-1)
        if cut >= 0:
            stream.text = stream.text[:cut]
            stream.finish_reason = "stop"
        elif len(stream.ids) >= stream.max_tokens:
            stream.finish_reason = "length"
        elif now > stream.deadline:
            stream.finish_reason = "timeout"
        # hold back what may still become a stop string, or a BPE byte that ends mid-character
        ready = len(stream.text)
        if stream.finish_reason is None:
            ready -= _held_back(stream.text, stream.stop)
        if ready > stream.shown:
            piece, stream.shown = stream.text[stream.shown : ready], ready
            stream.queue.put_nowait(piece)
        if stream.finish_reason is not None:
            stream.queue.put_nowait(None)

    async def _run(self) -> None:
        while True:
            self.live = [s for s in self.live if not s.cancelled and s.finish_reason is None]
            if not self.live:
                self._wake.clear()
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout=5.0)
                except TimeoutError:
                    return
                continue
            if self.max_wait_s > 0:
                await asyncio.sleep(self.max_wait_s)  # let newcomers join this step
            batch = [s for s in self.live if not s.cancelled and s.finish_reason is None]
            now = time.monotonic()
            for s in batch:
                try:
                    self._sample(s, now)
                except Exception as e:  # one stream's failure ends that stream, not the loop
                    s.error = f"{type(e).__name__}: {e}"
                    s.finish("error")
            batch = [s for s in batch if s.finish_reason is None]
            if not batch:
                continue
            groups = [batch] if self.batching else [[s] for s in batch]
            for group in groups:
                if self.metrics is not None:
                    self.metrics.batch_size.observe(len(group))
                try:
                    logits, states = await asyncio.to_thread(
                        adapter.step, self.model, [s.ids[-1] for s in group],
                        [s.state for s in group],
                    )  # fmt: skip
                except Exception as e:  # end the streams (their clients see "error"), never hang
                    for s in group:
                        s.error = f"{type(e).__name__}: {e}"
                        s.finish("error")
                    continue
                for row, s in enumerate(group):
                    s.logits, s.state = logits[row], states[row]

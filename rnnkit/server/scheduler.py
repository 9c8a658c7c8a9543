"""Batching across requests: live generations of one model advance together, one step at a time.

Each decoding step gathers the live streams' states into one batch (waiting ``max_wait_s`` at most
for newcomers), runs one recurrent step, scatters the states back and hands each stream its token.
Streams join and leave between steps; a cancelled stream (client gone) leaves at the next step.
With ``batching=False`` each stream is stepped alone (the baseline the benchmark compares with).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import torch

from rnnkit.server import adapter


@dataclass
class Stream:
    """One generation in flight."""

    logits: torch.Tensor
    state: object
    max_tokens: int
    temperature: float
    top_k: int | None
    top_p: float | None
    generator: torch.Generator
    stop: list[str] = field(default_factory=list)
    ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str | None = None
    cancelled: bool = False
    error: str | None = None
    queue: asyncio.Queue = field(default_factory=asyncio.Queue)


class Scheduler:
    def __init__(self, model, batching: bool = True, max_wait_s: float = 0.002):
        self.model = model
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

    def _sample(self, stream: Stream) -> None:
        """Draw the stream's next token from its current logits; mark it finished if due."""
        nxt = adapter.choose(
            self.model, stream.logits, stream.temperature, stream.top_k, stream.top_p,
            stream.generator,
        )
        before = stream.text
        stream.ids.append(nxt)
        stream.text = adapter.render(self.model, stream.ids)
        piece = stream.text[len(before) :]
        for s in stream.stop:
            at = stream.text.find(s)
            if s and at >= 0:
                piece = stream.text[len(before) : at] if at > len(before) else ""
                stream.text = stream.text[:at]
                stream.finish_reason = "stop"
                break
        if stream.finish_reason is None and len(stream.ids) >= stream.max_tokens:
            stream.finish_reason = "length"
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
            for s in batch:
                self._sample(s)
            batch = [s for s in batch if s.finish_reason is None]
            if not batch:
                continue
            groups = [batch] if self.batching else [[s] for s in batch]
            for group in groups:
                try:
                    logits, states = await asyncio.to_thread(
                        adapter.step, self.model, [s.ids[-1] for s in group],
                        [s.state for s in group],
                    )
                except Exception as e:  # end the streams (their clients see "error"), never hang
                    for s in group:
                        s.finish_reason, s.error = "error", f"{type(e).__name__}: {e}"
                        s.queue.put_nowait(None)
                    continue
                for row, s in enumerate(group):
                    s.logits, s.state = logits[row], states[row]

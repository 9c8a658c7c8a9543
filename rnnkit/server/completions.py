"""``POST /v1/completions``: OpenAI's (legacy) completions API over the batched decoding loop.

The body takes OpenAI's fields (``model``, ``prompt`` string or list, ``max_tokens``,
``temperature``, ``top_p``, ``n``, ``stop``, ``seed``, ``logprobs``, ``echo``, ``stream``) plus
``top_k``. With ``stream: true`` the answer is server-sent events: ``data: {json}`` chunks
(``object: "text_completion"``, ``choices[].text`` the new text, ``finish_reason`` null until the
last chunk of a choice, then ``"length"``, ``"stop"`` or ``"timeout"``) and ``data: [DONE]``.
Choice ``c`` of a prompt is seeded ``seed + c``, so ``n=1`` with a seed gives exactly the text of
``rnnkit generate RUN --seed S``.
"""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from typing import Any

import torch
from fastapi import FastAPI
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from rnnkit.server import adapter
from rnnkit.server.context import ApiError, ServerContext
from rnnkit.server.scheduler import Mailbox, Scheduler, Stream


class CompletionBody(BaseModel):
    """The request body of ``POST /v1/completions`` (OpenAI's fields, plus ``top_k``)."""

    model_config = ConfigDict(extra="forbid")

    model: str | None = None
    prompt: str | list[str] = ""
    max_tokens: int = Field(16, ge=1)
    temperature: float = Field(1.0, ge=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = Field(None, ge=0, lt=2**63)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool = False
    stream: bool = False
    user: str | None = None


def _choice_logprobs(stream: Stream, model) -> dict[str, Any] | None:
    if stream.logprobs is None:
        return None
    tokens = [adapter.render(model, [i]) for i in stream.ids]
    offsets, at = [], 0
    for t in tokens:
        offsets.append(at)
        at += len(t)
    return {"tokens": tokens, "token_logprobs": stream.token_logprobs,
            "top_logprobs": stream.top_logprobs, "text_offset": offsets}  # fmt: skip


def register(app: FastAPI, ctx: ServerContext) -> None:
    """Add ``POST /v1/completions`` to ``app``."""

    def scheduler_for(name: str, model) -> Scheduler:
        if name not in ctx.schedulers:
            s = ctx.settings
            ctx.schedulers[name] = Scheduler(model, name, ctx.metrics, s.batching, s.max_wait_s)
        return ctx.schedulers[name]

    @app.post("/v1/completions", tags=["language models"])
    async def completions(body: CompletionBody):
        """Generate text after each prompt (OpenAI-compatible; ``stream`` for SSE)."""
        limits = ctx.settings
        name, model = ctx.pick(body.model, "generate")
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if not prompts:
            raise ApiError(
                400, "prompt: expected a string or a non-empty list of strings", "prompt"
            )
        if len(prompts) * body.n > limits.max_items:
            raise ApiError(400, f"n × prompts: at most {limits.max_items} choices", "n")
        if sum(len(p) for p in prompts) > limits.max_input_chars:
            raise ApiError(
                413, f"prompt: longer than {limits.max_input_chars} characters", "prompt"
            )
        if body.max_tokens > limits.max_tokens:
            raise ApiError(400, f"max_tokens: at most {limits.max_tokens}", "max_tokens")
        stop = [body.stop] if isinstance(body.stop, str) else list(body.stop or [])
        if len(stop) > 4 or any(len(s) > 100 for s in stop):
            raise ApiError(400, "stop: at most 4 strings of up to 100 characters", "stop")
        deadline = time.monotonic() + limits.request_timeout_s
        scheduler = scheduler_for(name, model)
        primed = []
        for prompt in prompts:
            try:
                primed.append(await asyncio.to_thread(adapter.prime, model, prompt))
            except ValueError as e:
                raise ApiError(400, f"prompt: {e}", "prompt") from None
        streams: list[tuple[int, str, Stream]] = []
        queue = Mailbox()  # every choice's pieces, as they are sampled
        for p_index, (prompt, (logits, state)) in enumerate(zip(prompts, primed)):
            for c in range(body.n):
                gen = None  # no seed: the scheduler's shared generator
                if body.seed is not None:
                    gen = torch.Generator(device=model.device)
                    gen.manual_seed(body.seed + c)
                stream = Stream(logits, state, body.max_tokens, body.temperature, body.top_k,
                                body.top_p, gen, stop, body.logprobs, deadline,
                                queue=queue)  # fmt: skip
                streams.append((p_index * body.n + c, prompt, scheduler.submit(stream)))
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(index: int, text: str, finish: str | None, logprobs=None) -> dict[str, Any]:
            return {"id": cid, "object": "text_completion", "created": created, "model": name,
                    "choices": [{"index": index, "text": text, "finish_reason": finish,
                                 "logprobs": logprobs}]}  # fmt: skip

        if body.stream:
            return StreamingResponse(
                _events(streams, chunk, body.echo, model),
                media_type="text/event-stream",
                headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
            )
        try:
            remaining = len(streams)
            while remaining:
                remaining -= sum(piece is None for _, piece in await queue.take())
        finally:
            for _, _, s in streams:
                s.cancelled = True
        choices = [
            {"index": index, "text": (prompt if body.echo else "") + s.text,
             "finish_reason": s.finish_reason, "logprobs": _choice_logprobs(s, model)}
            for index, prompt, s in streams
        ]  # fmt: skip
        completion_tokens = sum(len(s.ids) for _, _, s in streams)
        prompt_tokens = sum(len(model.encode(p or model.default_context())) for p in prompts)
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": choices,
                "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                          "total_tokens": prompt_tokens + completion_tokens}}  # fmt: skip


async def _events(streams, chunk, echo: bool, model):
    """The SSE body: every choice's pieces as they are sampled (choices interleaved), each
    choice's final chunk with its finish_reason, then ``[DONE]``. Pieces that queued up while
    the client was reading are sent together (one chunk per choice). A client that goes away
    cancels this generator (Starlette watches the connection), and its streams leave the
    decoding loop at the next step."""

    def event(data: Any) -> str:
        return f"data: {json.dumps(data)}\n\n"

    # a text chunk is the same JSON each time but for its index and text: write it from parts
    head, tail = json.dumps(chunk(0, "", None)).split('"index": 0, "text": ""')
    head = "data: " + head + '"index": '
    tail = tail + "\n\n"

    def text_event(index: int, text: str) -> str:
        return f'{head}{index}, "text": {json.dumps(text)}{tail}'

    index_of = {id(s): index for index, _, s in streams}
    queue = streams[0][2].queue
    try:
        if echo:
            yield "".join(event(chunk(index, prompt, None)) for index, prompt, _ in streams)
        remaining = len(streams)
        while remaining:
            items = await queue.take()
            pending: dict[int, list[str]] = {}
            out = []
            for s, piece in items:
                if piece is not None:
                    pending.setdefault(id(s), []).append(piece)
                    continue
                remaining -= 1
                text = "".join(pending.pop(id(s), []))
                if text:
                    out.append(text_event(index_of[id(s)], text))
                out.append(event(chunk(index_of[id(s)], "", s.finish_reason,
                                       _choice_logprobs(s, model))))  # fmt: skip
            for sid, pieces in pending.items():
                out.append(text_event(index_of[sid], "".join(pieces)))
            yield "".join(out)
        yield "data: [DONE]\n\n"
    finally:
        for _, _, s in streams:
            s.cancelled = True

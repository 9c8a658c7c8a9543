"""FastAPI routes: /health, /v1/models, /v1/completions (OpenAI-style, SSE streaming)."""

from __future__ import annotations

import json
import time
import uuid
from pathlib import Path

import torch
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from rnnkit.server import adapter
from rnnkit.server.scheduler import Scheduler, Stream


class CompletionRequest(BaseModel):
    model: str | None = None
    prompt: str | list[str] = ""
    max_tokens: int = Field(16, ge=1, le=2048)
    temperature: float = Field(1.0, ge=0, le=10)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=0)
    n: int = Field(1, ge=1, le=16)
    stop: str | list[str] | None = None
    seed: int | None = None
    echo: bool = False
    stream: bool = False


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": {"message": message, "type": "invalid_request_error"}}, status)


def build_app(models: dict, batching: bool = True, max_prompt_chars: int = 10000) -> FastAPI:
    app = FastAPI(title="rnnkit")
    schedulers: dict[str, Scheduler] = {}

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc):
        return _error(422, str(exc.errors()[0].get("msg", "invalid request")))

    @app.exception_handler(ValueError)
    async def _value(request, exc):
        return _error(400, str(exc))

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": sorted(models)}

    @app.get("/v1/models")
    async def list_models():
        return {
            "object": "list",
            "data": [{"id": name, "object": "model", "owned_by": "rnnkit"} for name in models],
        }

    @app.post("/v1/completions")
    async def completions(body: CompletionRequest, request: Request):
        name = body.model or next(iter(models))
        if name not in models:
            return _error(404, f"unknown model {name!r}; serving {sorted(models)}")
        model = models[name]
        scheduler = schedulers.setdefault(name, Scheduler(model, batching=batching))
        prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
        if sum(len(p) for p in prompts) > max_prompt_chars:
            return _error(413, f"prompt longer than {max_prompt_chars} characters")
        stop = [body.stop] if isinstance(body.stop, str) else (body.stop or [])
        streams = []
        for p_index, prompt in enumerate(prompts):
            logits, state = adapter.prime(model, prompt)
            for c in range(body.n):
                gen = torch.Generator(device=model.device)
                seed = body.seed if body.seed is not None else torch.seed()
                gen.manual_seed(seed + c if body.seed is not None else seed)
                streams.append(
                    (p_index * body.n + c, prompt, scheduler.submit(Stream(
                        logits, state, body.max_tokens, body.temperature, body.top_k,
                        body.top_p, gen, stop,
                    )))
                )
        cid, created = f"cmpl-{uuid.uuid4().hex}", int(time.time())

        def chunk(index, text, finish):
            return {
                "id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": [{"index": index, "text": text, "finish_reason": finish,
                             "logprobs": None}],
            }

        if body.stream:
            async def events():
                try:
                    for index, prompt, s in streams:
                        if body.echo:
                            yield f"data: {json.dumps(chunk(index, prompt, None))}\n\n"
                        while (piece := await s.queue.get()) is not None:
                            if await request.is_disconnected():
                                s.cancelled = True
                                return
                            yield f"data: {json.dumps(chunk(index, piece, None))}\n\n"
                        yield f"data: {json.dumps(chunk(index, '', s.finish_reason))}\n\n"
                    yield "data: [DONE]\n\n"
                finally:
                    for _, _, s in streams:
                        s.cancelled = True

            return StreamingResponse(events(), media_type="text/event-stream")
        choices = []
        for index, prompt, s in streams:
            while await s.queue.get() is not None:
                pass
            text = (prompt if body.echo else "") + s.text
            choices.append({"index": index, "text": text, "finish_reason": s.finish_reason,
                            "logprobs": None})
        tokens = sum(len(s.ids) for _, _, s in streams)
        return {"id": cid, "object": "text_completion", "created": created, "model": name,
                "choices": choices, "usage": {"completion_tokens": tokens}}

    return app


def serve(runs: list[str], host: str = "127.0.0.1", port: int = 8000, batching: bool = True):
    """Load each run once (``NAME=RUN`` or a folder, named by its folder) and serve them."""
    import uvicorn

    from rnnkit.api import load

    models = {}
    for spec in runs:
        name, _, path = spec.rpartition("=") if "=" in spec else (Path(spec).name, "", spec)
        models[name] = load(path)
    uvicorn.run(build_app(models, batching=batching), host=host, port=port)

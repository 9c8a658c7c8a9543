"""The task endpoints: one route per request type of :mod:`rnnkit.inference`, plus keyboard
sessions.

``POST /v1/{score,complete,classify,tag,translate,forecast,music}`` take the request's JSON
(``rnnkit <verb> --json`` shows the same fields) with an optional ``model``, run
``model.infer(request)`` in a worker thread and answer the result's JSON. ``/v1/caption`` takes
an uploaded image (multipart ``file``); ``/v1/music`` adds each tune's notes (and MIDI bytes on
request) for the playground to play. The body schemas are built from the request dataclasses,
so ``/openapi.json`` documents every field.
"""

from __future__ import annotations

import asyncio
import base64
import dataclasses
import inspect
import os
import tempfile
import typing
from pathlib import Path
from typing import Annotated, Any

from fastapi import FastAPI, File, Form, UploadFile
from pydantic import BaseModel, ConfigDict, Field, create_model

from rnnkit.inference import Message
from rnnkit.server.context import ENDPOINT_REQUESTS, ApiError, ServerContext, finite

#: per endpoint, fields with an upper bound (cost grows with them): field → largest value
CAPS: dict[str, dict[str, int]] = {
    "complete": {"k": 50},
    "translate": {"beam_size": 32, "max_len": 500},
    "forecast": {"horizon": 10_000, "samples": 10_000},
    "music": {"tunes": 8, "max_chars": 10_000},
}
#: extra body fields an endpoint takes beyond its request type: name → (type, default)
EXTRA_FIELDS: dict[str, dict[str, tuple[Any, Any]]] = {"music": {"midi": (bool, False)}}
#: the endpoints of :data:`ENDPOINT_REQUESTS` served as plain JSON routes here
JSON_ENDPOINTS = ("score", "complete", "classify", "tag", "translate", "forecast", "music")


def body_model(endpoint: str) -> type[BaseModel]:
    """A pydantic model of the endpoint's request dataclass (+ ``model``) for the OpenAPI schema."""
    cls = ENDPOINT_REQUESTS[endpoint]
    hints = typing.get_type_hints(cls)
    fields: dict[str, Any] = {"model": (str | None, None)}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = Field(default_factory=f.default_factory)
        else:
            default = ...
        fields[f.name] = (hints[f.name], default)
    fields.update(EXTRA_FIELDS.get(endpoint, {}))
    name = f"{endpoint.capitalize()}Body"
    return create_model(name, __config__=ConfigDict(extra="forbid"), **fields)


def _count_items_and_chars(value: Any) -> tuple[int, int]:
    """(inputs, characters) of a request's main list: its length and all its strings' length."""
    if isinstance(value, str):
        return 1, len(value)
    if isinstance(value, list):
        chars = sum(_count_items_and_chars(v)[1] for v in value)
        return len(value), chars
    return 1, 0


def check_limits(ctx: ServerContext, endpoint: str, data: dict[str, Any]) -> None:
    """Refuse (400/413) a request past the server's size limits or an endpoint's caps."""
    limits = ctx.settings
    for name, value in data.items():
        if isinstance(value, list):
            items, chars = _count_items_and_chars(value)
            if items > limits.max_items:
                raise ApiError(400, f"{name}: at most {limits.max_items} inputs", name)
        else:
            chars = len(value) if isinstance(value, str) else 0
        if chars > limits.max_input_chars:
            raise ApiError(413, f"{name}: longer than {limits.max_input_chars} characters", name)
    for name, cap in CAPS.get(endpoint, {}).items():
        value = data.get(name)
        if isinstance(value, int) and value > cap:
            raise ApiError(400, f"{name}: at most {cap}", name)


async def run_request(ctx: ServerContext, model, request: Message) -> Message:
    """``model.infer(request)`` in a worker thread, within the request time limit."""
    limit = ctx.settings.request_timeout_s
    try:
        return await asyncio.wait_for(asyncio.to_thread(model.infer, request), limit)
    except TimeoutError:
        raise ApiError(408, f"the request took longer than the server's limit of {limit:g} s",
                       kind="timeout") from None  # fmt: skip
    except ValueError as e:  # DataError included: what the input got wrong, in one line
        raise ApiError(400, str(e).splitlines()[0] if str(e) else type(e).__name__) from None


def _music_extras(result: dict[str, Any], midi: bool) -> dict[str, Any]:
    """Each tune's notes ``[start, duration, pitch]`` (quarter notes) and, with ``midi``, its
    MIDI file as base64; a tune that does not parse gets ``notes: null`` and the reason."""
    from rnnkit.music_export import midi_bytes, parse_abc, tune_notes

    for tune in result["tunes"]:
        try:
            score = parse_abc(tune["abc"])
            tune["notes"] = [list(n) for n in tune_notes(score)]
            if midi:
                tune["midi_base64"] = base64.b64encode(midi_bytes(score)).decode("ascii")
        except Exception as e:  # music21 raises many kinds; the tune text is still the answer
            tune["notes"], tune["notes_error"] = None, str(e).splitlines()[0][:200]
    return result


def _add_json_route(app: FastAPI, ctx: ServerContext, endpoint: str) -> None:
    cls = ENDPOINT_REQUESTS[endpoint]
    Body = body_model(endpoint)

    async def handler(body):
        data = body.model_dump(exclude_unset=True)
        name = data.pop("model", None)
        options = {k: data.pop(k) for k in EXTRA_FIELDS.get(endpoint, {}) if k in data}
        _, model = ctx.pick(name, endpoint)
        check_limits(ctx, endpoint, data)
        try:
            request = cls.from_json(data)
        except ValueError as e:
            raise ApiError(400, str(e)) from None
        result = (await run_request(ctx, model, request)).to_json()
        if endpoint == "music":
            result = await asyncio.to_thread(_music_extras, result, options.get("midi", False))
        return finite(result)

    handler.__signature__ = inspect.Signature(
        [inspect.Parameter("body", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=Body)]
    )
    handler.__name__ = endpoint
    doc = (cls.__doc__ or "").strip().split("\n\n")[0]
    app.post(f"/v1/{endpoint}", name=endpoint, summary=doc.splitlines()[0] if doc else None,
             tags=["tasks" if endpoint not in ("score", "complete") else "language models"])(
        handler
    )  # fmt: skip


class SessionBody(BaseModel):
    """``POST /v1/sessions``: a keyboard over a language model, optionally with a first text."""

    model_config = ConfigDict(extra="forbid")
    model: str | None = None
    text: str = ""
    k: int = Field(3, ge=1, le=20)


class FeedBody(BaseModel):
    """``POST /v1/sessions/{id}/feed``: the text typed since the last call (or, with
    ``replace``, the whole new text after an edit)."""

    model_config = ConfigDict(extra="forbid")
    text: str = ""
    replace: bool = False


def _register_sessions(app: FastAPI, ctx: ServerContext) -> None:
    store, limits = ctx.sessions, ctx.settings

    def live(sid: str):
        session = store.get(sid)
        if session is None:
            raise ApiError(404, f"no session {sid!r} (expired, evicted or never made)", "id",
                           "session_not_found")  # fmt: skip
        return session

    def locked(session, work):
        with session.lock:
            steps = work()
            return session.to_json(steps)

    async def run(session, work):
        try:
            return await asyncio.to_thread(locked, session, work)
        except ValueError as e:
            raise ApiError(400, str(e).splitlines()[0]) from None
        finally:
            ctx.metrics.live_sessions.set(len(store))

    @app.post("/v1/sessions", tags=["keyboard"])
    async def create_session(body: SessionBody):
        """Open a keyboard session; its recurrent state stays on the server."""
        if len(body.text) > limits.max_input_chars:
            raise ApiError(413, f"text: longer than {limits.max_input_chars} characters", "text")
        name, model = ctx.pick(body.model, "sessions")
        session = store.create(name, model, body.k)
        return await run(session, lambda: session.reset(body.text))

    @app.post("/v1/sessions/{sid}/feed", tags=["keyboard"])
    async def feed_session(sid: str, body: FeedBody):
        """Advance a session by the new text only; answers the next-word suggestions."""
        session = live(sid)
        if len(session.text) + len(body.text) > limits.max_input_chars:
            raise ApiError(413, f"text: the session would pass {limits.max_input_chars} "
                           "characters", "text")  # fmt: skip
        work = (lambda: session.replace(body.text)) if body.replace else (
            lambda: session.append(body.text))  # fmt: skip
        return await run(session, work)

    @app.get("/v1/sessions/{sid}", tags=["keyboard"])
    async def get_session(sid: str):
        """A session's text and suggestions."""
        session = live(sid)
        return await run(session, lambda: None)

    @app.delete("/v1/sessions/{sid}", tags=["keyboard"])
    async def delete_session(sid: str):
        """Close a session and free its state."""
        if not store.delete(sid):
            raise ApiError(404, f"no session {sid!r}", "id", "session_not_found")
        ctx.metrics.live_sessions.set(len(store))
        return {"id": sid, "deleted": True}


def _register_caption(app: FastAPI, ctx: ServerContext) -> None:
    from rnnkit.inference import CaptionRequest

    @app.post("/v1/caption", tags=["tasks"])
    async def caption(
        file: Annotated[UploadFile, File(description="the photo (JPEG or PNG)")],
        model: Annotated[str | None, Form()] = None,
        beam_size: Annotated[int, Form(ge=1, le=16)] = 1,
        attention: Annotated[bool, Form()] = False,
    ):
        """Caption an uploaded image."""
        _, captioner = ctx.pick(model, "caption")
        data = await file.read()
        if not data:
            raise ApiError(400, "file: the upload is empty", "file")
        if len(data) > ctx.settings.max_body_bytes:
            raise ApiError(413, f"file: larger than {ctx.settings.max_body_bytes} bytes", "file")
        suffix = Path(file.filename or "image").suffix[:8] or ".jpg"
        with tempfile.TemporaryDirectory(prefix="rnnkit-serve-") as tmp:
            path = os.path.join(tmp, "upload" + suffix)
            Path(path).write_bytes(data)
            request = CaptionRequest([path], beam_size=beam_size, attention=attention)
            try:
                result = (await run_request(ctx, captioner, request)).to_json()
            except OSError as e:  # an image the decoder cannot read
                raise ApiError(400, f"file: not an image the decoder reads ({e})", "file") from None
        for c in result["captions"]:
            c["image"] = file.filename
        return finite(result)


def register(app: FastAPI, ctx: ServerContext) -> None:
    """Add the task endpoints, the caption upload and the keyboard sessions to ``app``."""
    for endpoint in JSON_ENDPOINTS:
        _add_json_route(app, ctx, endpoint)
    _register_caption(app, ctx)
    _register_sessions(app, ctx)

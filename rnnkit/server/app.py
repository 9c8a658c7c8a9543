"""The FastAPI app of ``rnnkit serve``: routes, the capacity gate, errors as JSON, the playground.

``build_app(models, settings)`` serves already loaded models (tests build it directly);
``serve(runs, ...)`` loads run folders with :func:`rnnkit.load` and runs uvicorn. Every answer
that is not a success is JSON ``{"error": {"message", "type", "param", "code"}}`` with a 4xx
status: 400 bad field, 404 unknown model/session/route, 408 past the time limit, 413 too large,
422 malformed body, 429 at capacity.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from rnnkit.server import completions, endpoints
from rnnkit.server.context import ApiError, ServerContext, ServerSettings, describe
from rnnkit.server.metrics import ServerMetrics
from rnnkit.server.sessions import SessionStore
from rnnkit.version import __version__

log = logging.getLogger(__name__)
STATIC = Path(__file__).parent / "static"
#: paths counted in the metrics as themselves (anything else is "other": bounded labels)
_KNOWN_PATHS = ("/", "/health", "/metrics", "/v1/models", "/v1/completions", "/v1/sessions")


def _error(status: int, message: str, param: str | None = None,
           kind: str = "invalid_request_error") -> JSONResponse:  # fmt: skip
    return JSONResponse(ApiError(status, message, param, kind).to_json(), status)


def _endpoint_label(path: str) -> str:
    if path in _KNOWN_PATHS or (path.startswith("/v1/") and path.count("/") == 2):
        return path
    if path.startswith("/v1/sessions/"):
        return "/v1/sessions/{id}" + ("/feed" if path.endswith("/feed") else "")
    return "other"


class Gate:
    """ASGI wrapper: the body-size limit, the cap on concurrent work (429) and the request
    metrics. A streamed answer holds its slot until its last byte is sent."""

    def __init__(self, app, ctx: ServerContext):
        self.app, self.ctx, self.inflight = app, ctx, 0

    async def _refuse(self, send, status: int, message: str, kind: str) -> None:
        body = json.dumps(ApiError(status, message, kind=kind).to_json()).encode()
        await send({"type": "http.response.start", "status": status,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(body)).encode())]})  # fmt: skip
        await send({"type": "http.response.body", "body": body})

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        settings, metrics = self.ctx.settings, self.ctx.metrics
        label, started, status = _endpoint_label(scope["path"]), time.perf_counter(), [500]

        async def send_status(message):
            if message["type"] == "http.response.start":
                status[0] = message["status"]
            await send(message)

        try:
            length = dict(scope.get("headers") or []).get(b"content-length")
            if length is not None and (
                not length.isdigit() or int(length) > settings.max_body_bytes
            ):
                status[0] = 413
                return await self._refuse(send, 413, f"the request body is larger than "
                                          f"{settings.max_body_bytes} bytes", "request_too_large")  # fmt: skip
            counted = scope["method"] == "POST" and scope["path"].startswith("/v1/")
            if counted and self.inflight >= settings.max_concurrent:
                status[0] = 429
                metrics.rejected.inc()
                return await self._refuse(send, 429, f"the server is at capacity "
                                          f"({settings.max_concurrent} requests); retry later",
                                          "rate_limit_exceeded")  # fmt: skip
            if counted:
                self.inflight += 1
                metrics.inflight.inc()
            try:
                await self.app(scope, receive, send_status)
            finally:
                if counted:
                    self.inflight -= 1
                    metrics.inflight.dec()
        finally:
            metrics.requests.labels(label, str(status[0])).inc()
            metrics.request_seconds.labels(label).observe(time.perf_counter() - started)


def build_app(models: dict[str, Any], settings: ServerSettings | None = None, **overrides) -> Any:
    """The ASGI app serving ``models`` (name → loaded task model); ``overrides`` set fields of
    :class:`ServerSettings` (e.g. ``batching=False``)."""
    if not models:
        raise ValueError("build_app() needs at least one model")
    settings = settings or ServerSettings()
    for key, value in overrides.items():
        if not hasattr(settings, key):
            raise TypeError(f"unknown server setting {key!r}")
        setattr(settings, key, value)
    ctx = ServerContext(models, settings, ServerMetrics(),
                        SessionStore(settings.max_sessions, settings.session_ttl_s))  # fmt: skip
    app = FastAPI(
        title="rnnkit",
        version=__version__,
        description="Recurrent models behind an OpenAI-style API: completions (streamed, "
        "batched across requests), scoring, keyboard sessions, and every task's inference.",
    )
    app.state.ctx = ctx

    @app.exception_handler(ApiError)
    async def _api_error(request, exc: ApiError):
        return JSONResponse(exc.to_json(), exc.status)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request, exc: RequestValidationError):
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()) if p != "body") or None
        message = first.get("msg", "invalid request")
        return _error(422, f"{where}: {message}" if where else message, where)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request, exc: StarletteHTTPException):
        return _error(exc.status_code, str(exc.detail), kind="not_found"
                      if exc.status_code == 404 else "invalid_request_error")  # fmt: skip

    @app.exception_handler(ValueError)
    async def _value(request, exc: ValueError):
        return _error(400, str(exc).splitlines()[0] if str(exc) else "invalid request")

    @app.get("/health", tags=["operations"])
    async def health():
        """Liveness: the models served and the work in flight."""
        return {"status": "ok", "version": __version__, "models": list(models),
                "sessions": len(ctx.sessions)}  # fmt: skip

    @app.get("/v1/models", tags=["operations"])
    async def list_models():
        """The served models, each with its task and the endpoints it answers."""
        return {"object": "list", "data": [describe(n, m) for n, m in models.items()]}

    @app.get("/v1/models/{name}", tags=["operations"])
    async def get_model(name: str):
        """One served model."""
        if name not in models:
            raise ApiError(404, f"unknown model {name!r}", "name", "model_not_found")
        return describe(name, models[name])

    @app.get("/metrics", tags=["operations"])
    async def metrics():
        """Prometheus metrics (text exposition format)."""
        ctx.metrics.live_sessions.set(len(ctx.sessions))
        return Response(ctx.metrics.render(), media_type=ctx.metrics.content_type)

    @app.get("/", include_in_schema=False)
    async def playground():
        index = STATIC / "index.html"
        if not index.exists():
            raise ApiError(404, "this installation has no playground files", kind="not_found")
        return FileResponse(index)

    app.mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static")
    completions.register(app, ctx)
    endpoints.register(app, ctx)
    asgi: Any = Gate(app, ctx)
    if settings.cors_origins:
        from starlette.middleware.cors import CORSMiddleware

        asgi = CORSMiddleware(asgi, allow_origins=settings.cors_origins, allow_methods=["*"],
                              allow_headers=["*"])  # fmt: skip
    asgi.fastapi = app  # the FastAPI object behind the wrappers (openapi(), state)
    return asgi


def load_runs(runs: list[str]) -> dict[str, Any]:
    """``NAME=RUN`` or ``RUN`` (named by its folder) → loaded models, in the order given."""
    from rnnkit.api import load

    models: dict[str, Any] = {}
    for spec in runs:
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = Path(spec.rstrip("/")).name, spec
        if name in models:
            raise ValueError(f"two runs are named {name!r}; name them with NAME=RUN")
        models[name] = load(path)
    return models


def serve(runs: list[str] | dict[str, Any], host: str = "127.0.0.1", port: int = 8000,
          settings: ServerSettings | None = None, log_level: str = "info") -> None:  # fmt: skip
    """Serve run folders (loaded once each, see :func:`load_runs`) or already loaded models
    (name → model) with uvicorn until interrupted."""
    import uvicorn

    app = build_app(runs if isinstance(runs, dict) else load_runs(runs), settings)
    uvicorn.run(app, host=host, port=port, log_level=log_level)

"""HTTP serving of rnnkit runs (``rnnkit serve``): an OpenAI-style API over batched recurrent
steps, keyboard sessions, every task's inference, Prometheus metrics and a browser playground.

Modules: ``app`` (assembly, errors, the capacity gate), ``context`` (settings, model lookup),
``completions`` (``/v1/completions``), ``endpoints`` (task routes and sessions), ``scheduler``
(batching across requests), ``adapter`` (the language model's stepping API), ``sessions``
(carried keyboard state), ``metrics``.
"""

from rnnkit.server.app import build_app, load_runs, serve
from rnnkit.server.context import ServerSettings

__all__ = ["ServerSettings", "build_app", "load_runs", "serve"]

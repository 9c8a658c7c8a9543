"""HTTP serving of rnnkit runs: an OpenAI-style completions API over batched recurrent steps."""

from rnnkit.server.app import build_app, serve

__all__ = ["build_app", "serve"]

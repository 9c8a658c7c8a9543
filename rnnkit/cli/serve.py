"""The ``serve`` verb: ``rnnkit serve RUN [RUN ...] [--host 127.0.0.1] [--port 8000]``.

Loads each run once (``NAME=RUN`` names it, else its folder's name) and serves them with the
app of :mod:`rnnkit.server`: the OpenAI-style ``/v1/completions``, scoring, keyboard sessions,
every task's endpoint, ``/metrics`` and the playground at ``/``. Needs ``rnnkit[serve]``.
"""

from __future__ import annotations

import argparse
import sys

from rnnkit.cli.common import UsageError, flag_values

#: the server's limits, in ``--help`` order: flag, type, default, help. The integer ones are
#: counts (>= 1) named as ServerSettings' fields; the others are seconds (> 0).
LIMITS = (
    ("--max-concurrent", int, 128, "requests worked on at once; more are answered 429 (128)"),
    ("--max-tokens", int, 2048, "largest max_tokens a completion may ask for (2048)"),
    ("--max-input-chars", int, 20_000, "characters of text in one request (20000)"),
    ("--timeout", float, 60.0, "seconds a request may run (60)"),
    ("--max-sessions", int, 1000, "keyboard sessions held; the least recently used is evicted (1000)"),
    ("--session-ttl", float, 1800.0, "seconds an idle keyboard session lives (1800)"),
)  # fmt: skip
COUNTS = tuple(flag[2:].replace("-", "_") for flag, kind, _, _ in LIMITS if kind is int)


def settings_from(args: argparse.Namespace):
    """The :class:`~rnnkit.server.ServerSettings` the flags ask for."""
    from rnnkit.server import ServerSettings

    for flag in COUNTS:
        if getattr(args, flag) < 1:
            raise UsageError(f"--{flag.replace('_', '-')}: expected an integer >= 1")
    if args.timeout <= 0 or args.session_ttl <= 0:
        raise UsageError("--timeout and --session-ttl: expected a number of seconds > 0")
    return ServerSettings(
        **flag_values(args, *COUNTS),
        request_timeout_s=args.timeout,
        session_ttl_s=args.session_ttl,
        batching=not args.no_batching,
        cors_origins=list(args.cors),
    )


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        from rnnkit.server import load_runs, serve
    except ImportError as e:
        raise UsageError(
            f"serving needs the serve extra: pip install 'rnnkit[serve]' ({e})"
        ) from None
    settings = settings_from(args)
    if not 0 <= args.port < 65536:
        raise UsageError(f"--port: expected 0..65535; got {args.port}")
    models = load_runs(args.runs)  # fail here, before uvicorn, on a bad run folder
    names = ", ".join(models)
    print(f"serving {names} on http://{args.host}:{args.port} (playground at /)", file=sys.stderr)
    if args.host not in ("127.0.0.1", "localhost", "::1"):
        print(f"warning: listening on {args.host}, not loopback: reachable from the network",
              file=sys.stderr)  # fmt: skip
    serve(models, args.host, args.port, settings, log_level=args.log_level)
    return 0


def register(verbs) -> None:
    """Add ``serve`` to ``verbs``."""
    s = verbs.add_parser(
        "serve",
        help="serve runs over HTTP: OpenAI-style completions, every task, a playground",
        description="Serve trained runs behind an OpenAI-compatible HTTP API with a browser "
        "playground at /. Listens on 127.0.0.1 unless --host says otherwise.",
        epilog="Example: rnnkit serve runs/shakespeare sentiment=runs/sst2 --port 8000",
    )
    s.add_argument("runs", nargs="+", metavar="RUN", help="run folder, or NAME=RUN to name it")
    s.add_argument("--host", default="127.0.0.1", help="address to listen on (127.0.0.1)")
    s.add_argument("--port", type=int, default=8000, help="port (8000)")
    for flag, kind, default, text in LIMITS:
        s.add_argument(flag, type=kind, default=default, help=text)
    s.add_argument("--no-batching", action="store_true",
                   help="step every generation alone (the benchmark's baseline)")  # fmt: skip
    s.add_argument("--cors", action="append", default=[], metavar="ORIGIN",
                   help="allow this browser origin (repeatable; CORS is off by default)")  # fmt: skip
    s.add_argument("--log-level", default="info",
                   choices=("critical", "error", "warning", "info", "debug"))  # fmt: skip
    s.set_defaults(func=cmd_serve)

"""``rnnkit diagnose gradients`` and ``rnnkit bench memory``: the commands over :mod:`rnnkit.insight`.

``diagnose gradients`` measures gradient flow across time for fresh layers (``--cell`` and its
options, or several ``--compare`` items ``"CELL [options]"``, parsed by :func:`parse_cell_spec`)
or for a trained language-model run (``--run``), and writes gradients.csv and gradients.png.
``bench memory`` sweeps a memory task over cells × lengths × seeds and writes the success table,
CSVs and plots.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import time
from pathlib import Path

import torch

from rnnkit.cli.common import add_tag_option, flag_values
from rnnkit.insight import (
    DEFAULT_LR,
    MEMORY_CELLS,
    MEMORY_TASKS,
    TASK_DEFAULTS,
    CellSpec,
    GradientFlow,
    MemoryConfig,
    gradient_flow,
    gradient_table,
    language_model_probe,
    memory_success_text,
    memory_table,
    plot_gradient_flow,
    plot_memory_curves,
    plot_memory_results,
    run_memory_benchmark,
    write_gradient_csv,
    write_memory_csv,
    write_memory_curves_csv,
)

log = logging.getLogger(__name__)


#: the fields of a :class:`CellSpec`, each set by the flag of the same name
CELL_FLAGS = ("cell", "nonlinearity", "init", "layer_norm", "forget_bias", "init_scale")
#: the fields of a :class:`MemoryConfig` set by the ``bench memory`` flag of the same name
MEMORY_FLAGS = tuple("task hidden_size batch_size lr optimizer init_scale eval_every noise".split())


def add_cell_options(p) -> None:
    """The flags that describe a :class:`CellSpec` (shared by the CLI and ``--compare`` items)."""
    p.add_argument("--nonlinearity", choices=("tanh", "relu"), default="tanh", help="rnn only")
    p.add_argument(
        "--init", choices=("default", "identity"), default="default", help="rnn: identity = IRNN"
    )
    p.add_argument("--layer-norm", action="store_true", help="layer-normalised cell")
    p.add_argument("--forget-bias", type=float, default=0.0, help="lstm: initial forget bias")
    scale_help = "redraw W_hh ~ N(0, S²/H) (spectral radius ≈ S)"
    p.add_argument("--init-scale", type=float, metavar="S", help=scale_help)  # default None


def _spec_parser():
    """The parser of one ``--compare`` item, ``CELL [options]``; it raises ValueError on errors."""

    class Parser(argparse.ArgumentParser):
        def error(self, message):  # argparse would print usage and exit
            raise ValueError(message)

    p = Parser(prog="--compare item", add_help=False)
    p.add_argument("cell", choices=("rnn", "lstm", "gru"))
    add_cell_options(p)
    return p


def parse_cell_spec(text: str) -> CellSpec:
    """``"rnn --nonlinearity relu --init identity"`` → a :class:`CellSpec` (ValueError if bad)."""
    words = shlex.split(text)
    if not words:
        raise ValueError("empty configuration in --compare")
    try:
        ns = _spec_parser().parse_args(words)
    except ValueError as e:
        raise ValueError(f"--compare item {text.strip()!r}: {e}") from None
    return spec_from_args(ns)


def spec_from_args(ns: argparse.Namespace) -> CellSpec:
    """The :class:`CellSpec` of parsed cell flags (``--cell`` or a ``--compare`` item)."""
    return CellSpec(**flag_values(ns, *CELL_FLAGS))


def _out_dir(out: str | None, default_name: str) -> Path:
    """``--out``, or a fresh ``runs/<default_name>-<time>``; created if missing."""
    from rnnkit.checkpoint import default_run_dir

    path = Path(out) if out else default_run_dir(default_name)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _diagnose_run(args) -> GradientFlow:
    """The gradient flow of a trained language-model run on its validation text (float64)."""
    from rnnkit.api import load
    from rnnkit.checkpoint import RunDir
    from rnnkit.config import from_dict

    run = RunDir(args.run)
    config = run.load_config()
    if config.get("task") != "lm":
        raise ValueError(
            f"{args.run}: diagnose gradients --run supports language-model runs (task 'lm'); "
            f"this is a {config.get('task')!r} run"
        )
    from rnnkit.tasks.language_model import LanguageModelData, read_corpus

    model = load(args.run, tag=args.tag).double()  # float64: tiny norms stay measurable
    _, valid_text, _ = read_corpus(from_dict(LanguageModelData, config["data"]))
    ids = torch.tensor(model.vocab.encode(valid_text, unknown="unk"), dtype=torch.long)
    x, loss_fn = language_model_probe(model, ids, args.length, args.batch_size, args.seed)
    c = model.config
    label = f"{Path(args.run).name} ({c.cell}, H={c.hidden_size}, {c.num_layers} layer)"
    return gradient_flow(
        model.rnn, x, loss_fn, label=label, clip=args.clip, params=list(model.parameters())
    )


def cmd_diagnose_gradients(args) -> int:
    """``rnnkit diagnose gradients``: gradient norms across time for fresh or trained layers."""
    from tqdm.auto import tqdm

    if args.length < 2:
        raise ValueError(f"--length must be at least 2; got {args.length}")
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    torch.set_num_threads(args.threads)
    if args.run and args.compare:
        raise ValueError("give either --run (a trained model) or --compare (fresh ones), not both")
    if args.run:
        with tqdm(total=1, disable=args.no_progress, unit="model") as bar:
            flows = [_diagnose_run(args)]
            bar.update(1)
        out = Path(args.out) if args.out else Path(args.run)  # plots live in the run directory
        out.mkdir(parents=True, exist_ok=True)
        title = f"trained model {args.run}, T={args.length}, real text"
    else:
        if args.compare:
            specs = [parse_cell_spec(item) for item in args.compare.split(";") if item.strip()]
        else:
            specs = [spec_from_args(args)]
        layers = []
        for spec in specs:  # build all first: a bad option fails before any work or output
            with torch.random.fork_rng():
                torch.manual_seed(args.seed)  # every configuration gets the same draw
                layers.append(spec.build(args.input_size, args.hidden_size).double())
        gen = torch.Generator().manual_seed(args.seed)
        x = torch.randn(args.batch_size, args.length, args.input_size, generator=gen)
        x = x.double()  # float64: a tanh RNN's norms fall below float32's range within ~100 steps
        flows = [
            gradient_flow(layer, x, label=spec.label(), clip=args.clip)
            for spec, layer in tqdm(
                list(zip(specs, layers)), disable=args.no_progress, unit="config"
            )
        ]
        out = _out_dir(args.out, "diagnose-gradients")
        title = (
            f"fresh layers, H={args.hidden_size}, T={args.length}, inputs ~ N(0, 1), loss = u·h_T"
        )
    csv_path = write_gradient_csv(flows, out / "gradients.csv")
    png_path = plot_gradient_flow(flows, out / "gradients.png", title)
    if args.json:
        for g in flows:
            print(
                json.dumps(
                    {
                        "config": g.label,
                        "length": g.length,
                        "grad_state": g.grad_state,
                        "grad_x": g.grad_x,
                        "jacobian_norm": g.jacobian,
                        "ratio_50_1": g.ratio(50),
                        "grad_norm": g.param_grad_norm,
                        "clipped_grad_norm": g.clipped_grad_norm,
                    }
                )
            )
    else:
        print(f"‖∂L_T/∂s_t‖ at distance d = T − t ({title}); clip = {args.clip:g}")
        print(gradient_table(flows))
    log.info("wrote %s and %s", csv_path, png_path)
    return 0


def _int_list(text: str, what: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise ValueError(f"{what} must be comma-separated integers; got {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"{what} must be positive integers; got {text!r}")
    return values


def cmd_bench_memory(args) -> int:
    """``rnnkit bench memory``: success table and plots of a memory task over cells × lengths."""
    defaults = TASK_DEFAULTS[args.task]
    cells = [c.strip() for c in args.cells.split(",") if c.strip()]
    for c in cells:
        if c not in MEMORY_CELLS:
            raise ValueError(
                f"--cells: unknown cell {c!r}; expected some of {', '.join(MEMORY_CELLS)}"
            )
    lengths = _int_list(args.lengths, "--lengths") if args.lengths else list(defaults["lengths"])
    if args.seeds < 1:
        raise ValueError(f"--seeds must be at least 1; got {args.seeds}")
    if args.symbols < 1 or args.noise < 0 or args.eval_every < 1:
        raise ValueError("--symbols and --eval-every must be >= 1 and --noise >= 0")
    if args.no_clip:
        clips = [0.0]
    else:
        try:
            clips = [float(v) for v in str(args.clip).split(",") if v.strip()]
        except ValueError:
            raise ValueError(
                f"--clip must be a number or a comma list (0 = off); got {args.clip!r}"
            ) from None
        if not clips or min(clips) < 0:
            raise ValueError(f"--clip values must be >= 0; got {args.clip!r}")
    steps = args.steps if args.steps is not None else defaults["steps"]
    if steps < 1:
        raise ValueError(f"--steps must be at least 1; got {steps}")
    base = MemoryConfig(
        **flag_values(args, *MEMORY_FLAGS),
        steps=steps,
        copy_symbols=args.symbols,
        stop_on_success=not args.full_budget,
    )
    if args.threads < 1:
        raise ValueError(f"--threads must be at least 1; got {args.threads}")
    torch.set_num_threads(args.threads)
    out = _out_dir(args.out, f"bench-memory-{args.task}")
    start = time.monotonic()
    results = run_memory_benchmark(
        base,
        cells,
        lengths,
        list(range(args.seeds)),
        clips,
        progress=not args.no_progress,
        jobs=args.jobs,
        threads=args.threads,
    )
    minutes = (time.monotonic() - start) / 60
    cpu_minutes = sum(r.cpu_seconds for r in results) / 60
    write_memory_csv(results, out / f"memory-{args.task}.csv")
    write_memory_curves_csv(results, out / f"memory-{args.task}-curves.csv")
    plot_memory_results(results, out / f"memory-{args.task}.png")
    plot_memory_curves(results, out / f"memory-{args.task}-curves.png")
    lrs = ", ".join(f"{c} {args.lr if args.lr is not None else DEFAULT_LR[c]:g}" for c in cells)
    print(
        f"{args.task}: {memory_success_text(args.task)}\n"
        f"budget {steps} steps × batch {args.batch_size}, hidden {args.hidden_size}, "
        f"{args.seeds} seed(s), {args.optimizer} lr {lrs}, "
        f"clip {','.join(f'{c:g}' if c else 'off' for c in clips)}"
        + (f", init scale {args.init_scale:g}" if args.init_scale is not None else "")
        + f"; {minutes:.1f} min wall, {cpu_minutes:.1f} min CPU ({args.jobs} job(s) × "
        f"{args.threads} thread(s))\n"
        "cells: k/n @ s = k of n seeds succeeded, median at step s; 0/n (m) = mean final metric"
    )
    print(memory_table(results))
    print(f"wrote {out}/memory-{args.task}.csv, .png, -curves.csv, -curves.png")
    return 0


def _verb_group(verbs, name: str, help: str):
    """A verb whose sub-verbs (``WHAT``) are required: ``rnnkit NAME WHAT ...``."""
    group = verbs.add_parser(name, help=help).add_subparsers(dest="what", metavar="WHAT")
    group.required = True
    return group


def register(verbs) -> None:
    """Add ``diagnose gradients`` and ``bench memory`` to the CLI's sub-parsers ``verbs``."""
    dverbs = _verb_group(verbs, "diagnose", "gradient-flow diagnostics of recurrent layers")
    g = dverbs.add_parser(
        "gradients",
        help="norm of ∂L_T/∂h_t against distance, step-Jacobian norms, clipping",
        description="How the gradient of a last-step loss L_T flows back through time: "
        "‖∂L_T/∂h_t‖, ‖∂L_T/∂x_t‖ and ‖∂h_t/∂h_{t−1}‖₂ for every t, and the parameter-gradient "
        "norm before/after clipping. Writes gradients.csv and gradients.png.",
        epilog="Example: rnnkit diagnose gradients --length 100 --compare "
        '"rnn;rnn --nonlinearity relu --init identity;lstm --forget-bias 1;gru"',
    )
    g.add_argument("--cell", choices=("rnn", "lstm", "gru"), default="rnn", help="(default rnn)")
    add_cell_options(g)
    g.add_argument("--length", type=int, default=100, metavar="T", help="sequence length (100)")
    g.add_argument("--hidden-size", type=int, default=64, help="fresh layers: H (default 64)")
    g.add_argument("--input-size", type=int, default=4, help="fresh layers: inputs (default 4)")
    g.add_argument("--batch-size", type=int, default=32, help="sequences averaged (default 32)")
    g.add_argument("--clip", type=float, default=1.0, help="clipping threshold shown (default 1)")
    g.add_argument("--seed", type=int, default=0, help="seed of weights and inputs (default 0)")
    g.add_argument(
        "--compare",
        metavar="SPECS",
        help='several fresh configurations separated by ";", each "CELL [options]", '
        'e.g. "rnn;rnn --nonlinearity relu --init identity;lstm --forget-bias 1"',
    )
    g.add_argument(
        "--run",
        metavar="RUN",
        help="diagnose a trained language-model run on its validation text (cell flags ignored)",
    )
    add_tag_option(g, help="--run weights")
    g.add_argument("--out", metavar="DIR", help="output folder (default RUN or runs/diagnose-…)")
    g.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    g.add_argument("--json", action="store_true", help="print one JSON object per configuration")
    g.add_argument("--no-progress", action="store_true", help="no progress bar")
    g.set_defaults(func=cmd_diagnose_gradients)

    bverbs = _verb_group(verbs, "bench", "benchmarks (memory tasks)")
    m = bverbs.add_parser(
        "memory",
        help="long-term-memory tasks: success of each cell against sequence length",
        description="Train each cell on a memory task at each length with several seeds and "
        "print a success table; writes memory-TASK.csv/.png and -curves.csv/.png (training "
        "loss and gradient norm before clipping).",
        epilog="Examples: rnnkit bench memory --task adding  |  exploding gradients, with and "
        "without clipping: rnnkit bench memory --task adding --cells rnn --lengths 50 --seeds 1 "
        "--init-scale 3 --optimizer sgd --lr 0.01 --clip 0,1 --steps 600",
    )
    m.add_argument("--task", choices=MEMORY_TASKS, default="adding", help="(default adding)")
    m.add_argument(
        "--cells", default="rnn,irnn,lstm,gru", help="comma list of rnn, irnn, lstm, gru (all)"
    )
    m.add_argument("--lengths", help="comma list of T (default 10,50,100,200; copy 10,20,50,100)")
    m.add_argument("--seeds", type=int, default=3, help="seeds per cell and length (default 3)")
    m.add_argument(
        "--steps",
        type=int,
        help="step budget of each run (default bit 1000, adding 4000, copy 3000)",
    )
    clip = m.add_mutually_exclusive_group()
    clip.add_argument(
        "--clip", default="1.0", help="gradient-norm clip; a comma list runs each (0 = off)"
    )
    clip.add_argument("--no-clip", action="store_true", help="no gradient clipping")
    m.add_argument("--init-scale", type=float, metavar="S", help="W_hh ~ N(0, S²/H)")
    m.add_argument("--noise", type=float, default=1.0, help="bit: std of the noise steps (1)")
    m.add_argument("--symbols", type=int, default=3, help="copy: symbols to recall (3 of 8)")
    m.add_argument("--hidden-size", type=int, default=32, help="(default 32)")
    m.add_argument("--batch-size", type=int, default=64, help="(default 64)")
    m.add_argument(
        "--optimizer",
        choices=("adam", "sgd"),
        default="adam",
        help="adam (default) or sgd (momentum 0.9; shows exploding gradients without clipping)",
    )
    m.add_argument("--lr", type=float, help="learning rate for every cell (default: per cell)")
    m.add_argument("--eval-every", type=int, default=100, help="test every N steps (100)")
    m.add_argument(
        "--full-budget", action="store_true", help="keep training after success (full curves)"
    )
    m.add_argument(
        "--jobs",
        type=int,
        default=min(2, os.cpu_count() or 1),
        help="runs trained at once in worker processes (default: 2, or 1 on one core)",
    )
    m.add_argument(
        "--threads",
        type=int,
        default=1,
        help="torch CPU threads (default 1: small recurrent steps do not gain from more)",
    )
    m.add_argument("--out", metavar="DIR", help="output folder (default runs/bench-memory-…)")
    m.add_argument("--no-progress", action="store_true", help="no progress bar")
    m.set_defaults(func=cmd_bench_memory)

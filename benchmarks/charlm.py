"""Character language model under a wall-clock budget: validation loss against time.

Trains the `rnnkit train lm` default configuration (or one modified with `--set key=value`) on
the bundled Tiny Shakespeare for `--seconds`, evaluating on the whole validation split (the last
10%, read in order with the state carried) every `--eval-every` steps, and prints the curve as a
table. The cosine schedule runs over the time budget, so the run ends at its lowest learning rate.

    python benchmarks/charlm.py --seconds 180
    python benchmarks/charlm.py --seconds 180 --set hidden_size=768 --set bptt=64

``--cells lstm gru mingru ...`` is the table mode: one run per cell, the same budget and settings
each (``--set`` applies to all), then a markdown table of validation nats/char, training chars/s,
steps and parameters, cell by cell, from the same process and machine.

    python benchmarks/charlm.py --seconds 180 --cells lstm gru mingru minlstm qrnn sru mlstm

A small grid is one table-mode run per grid point (its ``--set``), each writing ``--json-out``;
``--best-of`` then reads them all and prints, per budget, every cell's best point and the grid:

    python benchmarks/charlm.py --seconds 180 --cells lstm gru --json-out a.json
    python benchmarks/charlm.py --seconds 180 --cells lstm gru --json-out b.json \\
        --set num_layers=2 --set hidden_size=768
    python benchmarks/charlm.py --best-of a.json b.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
import time
from pathlib import Path

import torch

from rnnkit.checkpoint import RunDir
from rnnkit.config import from_dict
from rnnkit.tasks.language_model import TASK, LanguageModelConfig, LanguageModelData
from rnnkit.train import TrainConfig, fit, seed_everything


def parse_sets(pairs: list[str]) -> dict[str, dict]:
    """``key=value`` pairs → overrides per section, the section found from the field name."""
    sections = {"model": LanguageModelConfig, "data": LanguageModelData, "train": TrainConfig}
    out: dict[str, dict] = {s: {} for s in sections}
    for pair in pairs:
        key, _, raw = pair.partition("=")
        value = json.loads(raw) if raw not in ("", None) and raw[0] in "0123456789-[{tfn" else raw
        owner = [s for s, cls in sections.items() if key in cls.__dataclass_fields__]
        if not owner:
            sys.exit(f"--set {pair}: unknown setting {key!r}")
        out[owner[0]][key] = value
    return out


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--seconds", type=float, default=180, help="training wall-clock budget")
    p.add_argument("--eval-every", type=int, default=200, help="steps between evaluations")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a model/data/train setting, e.g. --set hidden_size=768",
    )
    p.add_argument("--out", help="keep the run here (default: a temporary directory)")
    p.add_argument(
        "--cells", nargs="+", metavar="CELL", help="table mode: one run per recurrent cell"
    )
    p.add_argument("--json-out", help="table mode: add each cell's result to this JSON list")
    p.add_argument(
        "--best-of", nargs="+", metavar="JSON", help="print the best-of-grid tables of these files"
    )
    args = p.parse_args()
    if args.best_of:
        print_best_of([r for f in args.best_of for r in json.loads(Path(f).read_text())])
        return
    torch.set_num_threads(args.threads)
    sets = parse_sets(args.set)
    if not args.cells:
        train_one(sets, args.seconds, args.eval_every, args.out, curve=True)
        return
    results = []
    for cell in args.cells:
        cell_sets = {**sets, "model": {**sets["model"], "cell": cell}}
        print(f"\n=== {cell} ===", flush=True)
        results.append((cell, train_one(cell_sets, args.seconds, args.eval_every, None)))
        if args.json_out:
            record = {
                "cell": cell,
                "seconds": args.seconds,
                "threads": torch.get_num_threads(),
                "settings": args.set,
                **results[-1][1],
            }
            out = Path(args.json_out)
            done = json.loads(out.read_text()) if out.exists() else []
            out.write_text(json.dumps([*done, record], indent=1))
    print(
        f"\nTiny Shakespeare, {args.seconds:.0f} s per cell, {torch.get_num_threads()} threads; "
        f"settings {args.set or 'default'}\n"
    )
    print("| cell | val nats/char | val bits/char | chars/s | steps | parameters |")
    print("|---|---|---|---|---|---|")
    for cell, r in results:
        print(
            f"| {cell} | {r['loss']:.4f} | {r['bits']:.4f} | {r['rate']:,.0f} | {r['steps']} | "
            f"{r['parameters']:,} |"
        )


def print_best_of(records: list[dict]) -> None:
    """Per budget: each cell's lowest validation loss over the grid points, then every point."""
    for seconds in sorted({r["seconds"] for r in records}):
        rows = [r for r in records if r["seconds"] == seconds]
        cells = list(dict.fromkeys(r["cell"] for r in rows))
        points = list(dict.fromkeys(" ".join(r["settings"]) or "default" for r in rows))
        print(f"\nTiny Shakespeare, {seconds:.0f} s, best of {len(points)} settings per cell\n")
        print("| cell | val nats/char | chars/s | steps | parameters | best settings |")
        print("|---|---|---|---|---|---|")
        for cell in cells:
            r = min((r for r in rows if r["cell"] == cell), key=lambda r: r["loss"])
            print(
                f"| {cell} | {r['loss']:.4f} | {r['rate']:,.0f} | {r['steps']} | "
                f"{r['parameters']:,} | {' '.join(r['settings']) or 'default'} |"
            )
        print("\nthe grid (val nats/char):\n")
        print("| cell | " + " | ".join(points) + " |")
        print("|---|" + "---|" * len(points))
        for cell in cells:
            by_point = {" ".join(r["settings"]) or "default": r["loss"] for r in rows
                        if r["cell"] == cell}  # fmt: skip
            print(f"| {cell} | " + " | ".join(
                f"{by_point[q]:.4f}" if q in by_point else "–" for q in points) + " |")  # fmt: skip


def train_one(
    sets: dict[str, dict], seconds: float, eval_every: int, out: str | None, curve: bool = False
) -> dict:
    """Train the LM with ``sets`` for ``seconds``; final validation loss, rate, steps, size."""
    train = {
        **TASK.defaults["train"],
        "epochs": None,
        "minutes": seconds / 60,
        "eval_every": eval_every,
        "progress": False,
        **sets["train"],
    }
    configs = {
        "model": from_dict(LanguageModelConfig, sets["model"]),
        "data": from_dict(LanguageModelData, sets["data"]),
    }
    train_cfg = from_dict(TrainConfig, train)
    seed_everything(train_cfg.seed)
    model, task = TASK.build(configs, train_cfg, torch.device("cpu"))
    out_dir = Path(out) if out else Path(tempfile.mkdtemp(prefix="charlm-"))
    run = RunDir.create(out_dir, exist_ok=True)
    n_params = sum(q.numel() for q in model.parameters())
    print(
        f"model: {configs['model']}\ndata: bptt={configs['data'].bptt}  train: lr={train_cfg.lr} "
        f"batch={train_cfg.batch_size} schedule={train_cfg.schedule}  parameters: {n_params:,}"
    )
    start = time.monotonic()
    summary = fit(model, task, train_cfg, run)
    wall = time.monotonic() - start

    rows = run.read_metrics()
    evals = [r for r in rows if r["kind"] == "eval"]
    rates = [r["tokens_per_s"] for r in rows if r["kind"] == "train" and r["step"] > 1]
    rate = sorted(rates)[len(rates) // 2] if rates else float("nan")
    if curve:
        print(f"\n{'time (s)':>9}  {'step':>6}  {'val nats/char':>13}  {'val bits/char':>13}")
        for r in evals:
            print(
                f"{r['time']:>9.0f}  {r['step']:>6}  {r['val_loss']:>13.4f}  {r['val_bits']:>13.4f}"
            )
    loss = summary["last"]["loss"]
    print(
        f"\nfinal validation loss {loss:.4f} nats/char after {wall:.0f} s "
        f"({summary['steps']} steps, median {rate:,.0f} chars/s)",
        flush=True,
    )
    bits = evals[-1]["val_bits"] if evals else loss / math.log(2)
    return {
        "loss": loss,
        "bits": bits,
        "rate": rate,
        "steps": summary["steps"],
        "parameters": n_params,
    }


if __name__ == "__main__":
    main()

"""Sequence classification quality: SST-2 sentiment and sequential (pixel-by-pixel) digits.

Trains, one after the other, each configuration below from its recipe in `recipes/` (plus the
flags listed), then evaluates it with `Classifier.evaluate_file` on the run's validation data and
prints one table: accuracy, macro-F1, parameters and training time. Runs are kept under `--out`; a run
directory that already exists is evaluated again, not retrained.

* SST-2 (sentence-level training split only, random embeddings): dev accuracy of the checkpoint
  with the best dev loss.
* Digits (8×8 images read as 64 one-pixel steps, deterministic 80/20 split): accuracy on the 20%
  held out, of the *last* checkpoint (a fixed budget, nothing selected on the held-out part),
  for an LSTM, an IRNN (ReLU RNN, identity recurrent init; Le et al. 2015) and a tanh RNN.

    python benchmarks/classify.py                        # everything (≈ 30 min on 2 CPU cores)
    python benchmarks/classify.py --only digits-lstm,digits-irnn --minutes 5
    python benchmarks/classify.py --dry-run              # two steps each: a smoke test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: (name, task, recipe, extra flags, which checkpoint to evaluate)
CONFIGS = [
    ("sst2-bilstm", "classify", "sst2.toml", [], "best"),
    ("digits-lstm", "classify", "digits.toml", [], "last"),
    (
        "digits-irnn",
        "classify",
        "digits.toml",
        # Adam at the LSTM's rate drives W_hh off the identity and the ReLU state explodes
        ["--cell", "rnn", "--nonlinearity", "relu", "--init", "identity", "--lr", "3e-4"]
        + ["--clip-norm", "1", "--epochs", "150"],
        "last",
    ),
    ("digits-tanh-rnn", "classify", "digits.toml", ["--cell", "rnn", "--lr", "1e-3"], "last"),
]


def train_and_evaluate(
    name: str,
    task: str,
    recipe: str,
    extra: list[str],
    tag: str,
    out: Path,
    minutes: float | None = None,
    dry_run: bool = False,
    threads: int = 1,
) -> dict:
    """Train ``recipe`` (+ ``extra`` flags) into ``out`` unless it exists, then evaluate the
    ``tag`` checkpoint on the run's validation data; returns the evaluation plus bookkeeping."""
    from rnnkit.api import load

    cmd = [sys.executable, "-m", "rnnkit", "-q", "train", task]
    cmd += ["--config", str(ROOT / "recipes" / recipe), "--out", str(out), "--no-progress"]
    cmd += ["--threads", str(threads), *extra]
    if minutes:
        cmd += ["--minutes", str(minutes)]
    if dry_run:
        cmd += ["--dry-run"]
    if not (out / "model.safetensors").exists():
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True, cwd=ROOT)
    model = load(out, tag=tag)
    result = model.evaluate_file()
    # training time as the trainer measured it (the last record of metrics.jsonl)
    seconds = json.loads((out / "metrics.jsonl").read_text().splitlines()[-1]).get("time", 0.0)
    result |= {
        "name": name,
        "tag": tag,
        "params": sum(p.numel() for p in model.parameters()),
        "minutes": seconds / 60,
        "command": " ".join(cmd[2:]),
    }
    print(f"  {name}: {model.format_evaluation(result).splitlines()[0]}", flush=True)
    return result


def run_configs(configs: list, description: str, default_out: Path) -> list[dict]:
    """The command line shared by the quality benchmarks: parse ``--out/--only/--minutes/
    --threads/--dry-run``, then train and evaluate each selected configuration in turn."""
    p = argparse.ArgumentParser(
        description=description, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--out", default=str(default_out))
    p.add_argument(
        "--only", help="comma-separated names to run: " + ", ".join(c[0] for c in configs)
    )
    p.add_argument("--minutes", type=float, help="cap every run at this many minutes")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--dry-run", action="store_true", help="two steps per run (smoke test)")
    args = p.parse_args()
    rows = []
    for name, task, recipe, extra, tag in configs:
        if args.only and name not in args.only.split(","):
            continue
        out = Path(args.out) / name
        rows.append(
            train_and_evaluate(
                name, task, recipe, extra, tag, out, args.minutes, args.dry_run, args.threads
            )
        )
    return rows


def main() -> None:
    rows = run_configs(CONFIGS, __doc__, ROOT / "runs" / "classify-benchmark")
    print(f"\n{'model':<18} {'ckpt':>4} {'accuracy':>9} {'macro-F1':>9} {'params':>10} {'min':>6}")
    for r in rows:
        print(
            f"{r['name']:<18} {r['tag']:>4} {r['accuracy']:>9.2%} {r['macro_f1']:>9.4f} "
            f"{r['params']:>10,} {r['minutes']:>6.1f}"
        )


if __name__ == "__main__":
    main()

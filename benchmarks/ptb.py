"""Word-level language models on Penn Treebank: one table, one vocabulary, one machine.

Trains, one after the other, the fixed-window baseline (N = 8), Zaremba et al.'s small model and
the regularised recipe (weight tying + variational dropout + weight drop), each from its file in
`recipes/`, then prints for each its best validation perplexity, parameters, training minutes
(summed over resumes), CPU threads and steps. Every run keeps its directory (with `metrics.jsonl`,
the per-evaluation perplexities) under `--out`; a directory that already exists is resumed (a
finished run is only evaluated again), so runs trained one by one print as one table.

    python benchmarks/ptb.py --data-dir ../shared/data/ptb            # full recipes (hours on CPU)
    python benchmarks/ptb.py --minutes 5                              # a quick look at each
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
RECIPES = [
    ("window (N=8)", "ptb_window.toml"),
    ("Zaremba small (2×200)", "ptb_small.toml"),
    ("regularised (2×400 tied, var. dropout, weight drop)", "ptb_regularized.toml"),
]


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--data-dir", default=str(ROOT.parent / "shared" / "data" / "ptb"))
    p.add_argument("--out", default=str(ROOT / "runs" / "ptb-benchmark"))
    p.add_argument("--minutes", type=float, help="cap every run at this many minutes")
    p.add_argument("--only", help="comma-separated recipe files to run (default: all three)")
    p.add_argument("--threads", type=int, help="CPU threads of each new run (default: torch's)")
    args = p.parse_args()

    rows = []
    for label, recipe in RECIPES:
        if args.only and recipe not in args.only.split(","):
            continue
        out = Path(args.out) / recipe.removesuffix(".toml")
        cmd = [
            sys.executable,
            "-m",
            "rnnkit",
            "train",
            "lm",
            "--config",
            str(ROOT / "recipes" / recipe),
            "--data-dir",
            args.data_dir,
            "--out",
            str(out),
        ]
        if args.minutes:
            cmd += ["--minutes", str(args.minutes)]
        if args.threads:
            cmd += ["--threads", str(args.threads)]
        if out.exists():
            cmd = [sys.executable, "-m", "rnnkit", "train", "lm", "--resume", str(out)]
        print("$", " ".join(cmd), flush=True)
        subprocess.run(cmd, check=True)
        metrics = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
        evals = [m for m in metrics if m["kind"] == "eval"]
        best = min(evals, key=lambda m: m["val_loss"])
        from rnnkit.api import load

        n_params = sum(t.numel() for t in load(out).parameters())
        train_cfg = json.loads((out / "config.json").read_text())["train"]
        threads, precision = train_cfg["threads"], train_cfg.get("precision", "fp32")
        train_minutes = max(m["time"] for m in metrics) / 60  # training time, over any resumes
        steps = max(m["step"] for m in metrics)
        rows.append(
            (label, best["val_perplexity"], n_params, train_minutes, threads, precision, steps)
        )
        print(
            "  per evaluation:", ", ".join(f"{m['val_perplexity']:.1f}" for m in evals), flush=True
        )

    print(
        f"\n{'model':<52} {'valid ppl':>9} {'params':>11} {'train min':>9} {'threads':>7} "
        f"{'precision':>9} {'steps':>6}"
    )
    for label, ppl, n, minutes, threads, precision, steps in rows:
        print(
            f"{label:<52} {ppl:>9.1f} {n:>11,} {minutes:>9.1f} {threads or '-':>7} "
            f"{precision:>9} {steps:>6}"
        )


if __name__ == "__main__":
    main()

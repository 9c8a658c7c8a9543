"""Image captioning quality on the Flickr8k subset: BLEU-1…4 on the 500 validation images.

Trains, one after the other, the configurations below with ``rnnkit train caption`` (one CPU
thread each, so timings are comparable), then decodes every validation image of each run's best
checkpoint (lowest validation loss) greedily and with a beam, and prints one table: BLEU-1…4
against all five references, the trainer's time and the whole command's wall time (which also
includes decoding the JPEGs and, on a cold cache, the EfficientNet feature extraction).

* ``attention-pretrained``: frozen EfficientNet-Lite0 features + soft attention (Xu et al. 2015);
* ``pooled-pretrained``: the same features, pooled into the LSTM's initial state and nothing else
  (Show and Tell, Vinyals et al. 2015);
* ``attention-small-cnn``: a small CNN trained from scratch with the attention decoder.

A run directory that already exists under ``--out`` is evaluated again, not retrained.
The README table: attention-pretrained and pooled-pretrained as below (8 epochs),
attention-small-cnn with ``--minutes 26`` (4.9 epochs), on a 2-core machine shared with other jobs.

    python benchmarks/caption.py                               # ≈ 100 min on one CPU core
    python benchmarks/caption.py --only pooled-pretrained --epochs 2
    python benchmarks/caption.py --only attention-small-cnn --minutes 25   # a time budget
    python benchmarks/caption.py --dry-run                     # two steps each: a smoke test
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
DATA = ROOT.parent / "shared" / "data" / "captions_flickr8k"

#: (name, extra flags for `rnnkit train caption`)
CONFIGS = [
    ("attention-pretrained", ["--attention", "additive", "--encoder", "efficientnet-lite0"]),
    ("pooled-pretrained", ["--attention", "none", "--encoder", "efficientnet-lite0"]),
    ("attention-small-cnn", ["--attention", "additive", "--encoder", "small-cnn"]),
]


def train(name: str, extra: list[str], args: argparse.Namespace) -> tuple[Path, list[str], float]:
    """Train ``name`` into ``args.out / name`` unless it exists; (run, command, wall seconds)."""
    out = Path(args.out) / name
    data = Path(args.data)
    cmd = [sys.executable, "-m", "rnnkit", "-q", "train", "caption"]
    cmd += [
        "--images",
        str(data / "train_images.tar"),
        "--captions",
        str(data / "train_captions.txt"),
    ]
    cmd += ["--valid-images", str(data / "val_images.tar")]
    cmd += ["--valid-captions", str(data / "val_captions.txt")]
    cmd += ["--out", str(out), "--no-progress", "--threads", str(args.threads)]
    if args.feature_cache:
        cmd += ["--feature-cache", args.feature_cache]
    if args.epochs:
        cmd += ["--epochs", str(args.epochs)]
    if args.minutes:
        cmd += ["--minutes", str(args.minutes)]
    if args.dry_run:
        cmd += ["--dry-run"]
    cmd += extra
    wall = float("nan")
    if not (out / "model.safetensors").exists():
        print("$", " ".join(cmd), flush=True)
        start = time.monotonic()
        subprocess.run(cmd, check=True, cwd=ROOT)
        wall = time.monotonic() - start
        (out / "benchmark.json").write_text(json.dumps({"command": cmd, "wall_s": wall}))
    elif (out / "benchmark.json").exists():
        wall = json.loads((out / "benchmark.json").read_text())["wall_s"]
    return out, cmd, wall


def evaluate(run: Path, beams: list[int], threads: int) -> list[dict]:
    """BLEU of the best checkpoint on the run's validation images, for each beam size."""
    import torch

    from rnnkit.api import load

    torch.set_num_threads(threads)
    model = load(run, tag="best")
    rows = []
    for beam in beams:
        start = time.monotonic()
        result = model.evaluate_file(beam_size=beam)
        result["decode_s"] = time.monotonic() - start
        rows.append(result)
    return rows


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", default=str(DATA), help="folder with the Flickr8k tars and captions")
    p.add_argument("--out", default=str(ROOT / "runs" / "caption-bench"), help="run directories")
    p.add_argument("--only", help="comma-separated configuration names")
    p.add_argument("--epochs", type=float, default=None, help="override the task's 8 epochs")
    p.add_argument(
        "--minutes", type=float, default=None, help="also stop each run after this many minutes"
    )
    p.add_argument("--beam", type=int, default=3, help="beam size compared with greedy")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--feature-cache", default=None, help="feature cache directory")
    p.add_argument("--examples", type=int, default=5, help="validation examples to print")
    p.add_argument("--dry-run", action="store_true")
    args = p.parse_args(argv)
    chosen = set(args.only.split(",")) if args.only else None
    table = []
    examples = None
    for name, extra in CONFIGS:
        if chosen and name not in chosen:
            continue
        run, _, wall = train(name, extra, args)
        metrics = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
        seconds = metrics[-1].get("time", 0.0)
        for r in evaluate(run, [1, args.beam], args.threads):
            table.append((name, r, seconds, wall))
            if examples is None and r["beam"] > 1:
                examples = (name, r["examples"])

    print()
    print(
        "| model | decoding | BLEU-1 | BLEU-2 | BLEU-3 | BLEU-4 | val loss | train min | wall min |"
    )
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, r, seconds, wall in table:
        decoding = "greedy" if r["beam"] == 1 else f"beam {r['beam']}"
        print(
            f"| {name} | {decoding} | "
            + " | ".join(f"{r[f'bleu{n}']:.1f}" for n in range(1, 5))
            + f" | {r['loss']:.3f} | {seconds / 60:.1f} | {wall / 60:.1f} |"
        )
    if examples and args.examples:
        name, rows = examples
        print(f"\nvalidation examples ({name}, beam {args.beam}):")
        for ex in rows[: args.examples]:
            print(f"- {ex['image']}: {ex['caption']}")
            for ref in ex["references"]:
                print(f"    ref: {ref}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Translation quality: validation BLEU of trained ``translate`` runs, greedy and beam search,
overall and by source-length bucket, and one plot of BLEU against source length.

Train the runs first (recipes/multi30k.toml with and without attention), then::

    python benchmarks/translate.py runs/m30k-attn runs/m30k-none \\
        --plot runs/m30k_bleu_by_length.png

For each run it decodes the run's validation pairs greedily and with a beam (``--beam``, length
normalisation ``--length-penalty``), scores them with sacrebleu (detokenised output against the
lower-cased references, ``13a`` tokenisation) and prints one table: BLEU greedy and beam, the
n-gram precisions and brevity penalty of the beam output, training time and steps, decoding
time; then BLEU (beam) by source-length bucket, where the bottleneck of the model without
attention shows as a gap that widens with length. The plot draws those buckets for every run;
``--json`` also writes every number (and the hypotheses) to a file.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # run from a checkout without installing

import torch  # noqa: E402

from rnnkit.api import load  # noqa: E402
from rnnkit.checkpoint import RunDir  # noqa: E402
from rnnkit.tasks.seq2seq import LENGTH_BUCKETS, read_split  # noqa: E402


def training_summary(run: Path) -> dict:
    """Steps, epochs and seconds of training, from the run's metrics.jsonl."""
    rows = RunDir(run).read_metrics()
    train = [r for r in rows if r.get("kind") == "train"]
    evals = [r for r in rows if r.get("kind") == "eval"]
    last = train[-1] if train else {}
    return {
        "steps": last.get("step", 0),
        "epochs": last.get("epoch", -1) + 1,
        "train_seconds": max((r.get("time", 0.0) for r in rows), default=0.0),
        "val_bleu_during_training": [round(r["val_bleu"], 2) for r in evals if "val_bleu" in r],
    }


def evaluate_run(path: Path, beam: int, length_penalty: float, tag: str) -> dict:
    model = load(path, tag=tag)
    sources, references, where = read_split(model.data_config, "valid")
    start = time.perf_counter()
    result = model.evaluate_pairs(
        sources, references, beams=(1, beam), length_penalty=length_penalty
    )
    seconds = time.perf_counter() - start
    c = model.config
    return {
        "run": str(path),
        "tag": tag,
        "data": where,
        "attention": c.attention,
        "cell": c.cell,
        "parameters": sum(p.numel() for p in model.parameters()),
        "decode_seconds": seconds,
        **training_summary(path),
        **result,
    }


def _evaluate_job(job: tuple) -> dict:
    path, beam, length_penalty, tag, threads = job
    torch.set_num_threads(threads)
    return evaluate_run(path, beam, length_penalty, tag)


def plot(results: list[dict], beam: int, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for r in results:
        label = f"{Path(r['run']).name} ({r['attention']})"
        for key, style in ((str(beam), "o-"), ("1", "x--")):
            rows = r["by_beam"][key]["by_length"]
            xs = range(len(rows))
            kind = "greedy" if key == "1" else f"beam {beam}"
            line = ax.plot(xs, [b["bleu"] for b in rows], style, label=f"{label}, {kind}")
            if key == "1":
                line[0].set_alpha(0.5)
    rows = results[0]["by_beam"][str(beam)]["by_length"]
    ax.set_xticks(range(len(rows)), [f"{b['bucket']}\n(n={b['n']})" for b in rows])
    ax.set_xlabel("source length (words)")
    ax.set_ylabel("BLEU")
    ax.set_title("Validation BLEU by source length")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("runs", nargs="+", help="translate run directories")
    p.add_argument("--beam", type=int, default=5, help="beam size (default 5)")
    p.add_argument("--length-penalty", type=float, default=1.0, help="beam: log p / len^this")
    p.add_argument("--tag", default="best", choices=("best", "last"), help="which checkpoint")
    p.add_argument("--plot", default=str(ROOT / "runs" / "translate_bleu_by_length.png"))
    p.add_argument("--json", help="also write every number (and the hypotheses) here")
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (default 1)")
    p.add_argument("--jobs", type=int, default=1, help="evaluate this many runs in parallel")
    args = p.parse_args()
    torch.set_num_threads(args.threads)

    jobs = [(Path(r), args.beam, args.length_penalty, args.tag, args.threads) for r in args.runs]
    if args.jobs > 1:  # one process per run (each with --threads threads)
        import multiprocessing as mp
        from concurrent.futures import ProcessPoolExecutor

        with ProcessPoolExecutor(args.jobs, mp_context=mp.get_context("spawn")) as pool:
            results = list(pool.map(_evaluate_job, jobs))
    else:
        results = [_evaluate_job(j) for j in jobs]
    b = str(args.beam)
    print(f"validation BLEU ({results[0]['data']}; sacrebleu 13a, lower-cased, detokenised)")
    header = (
        f"{'run':<22} {'attention':>9} {'params':>10} {'epochs':>6} {'train min':>9} "
        f"{'greedy':>7} {f'beam {b}':>7} {'precisions (beam)':>24} {'BP':>6} {'decode s':>8}"
    )
    print(header)
    print("-" * len(header))
    for r in results:
        g, k = r["by_beam"]["1"], r["by_beam"][b]
        prec = "/".join(f"{x:.1f}" for x in k["precisions"])
        print(
            f"{Path(r['run']).name:<22} {r['attention']:>9} {r['parameters']:>10,} "
            f"{r['epochs']:>6} {r['train_seconds'] / 60:>9.1f} {g['bleu']:>7.2f} "
            f"{k['bleu']:>7.2f} {prec:>24} {k['bp']:>6.3f} {r['decode_seconds']:>8.1f}"
        )
    print()
    buckets = results[0]["by_beam"][b]["by_length"]
    print(f"BLEU by source length (beam {b} / greedy), sentences per bucket in brackets")
    print(f"{'run':<22} " + " ".join(f"{x['bucket']:>9} ({x['n']:>3})" for x in buckets))
    for r in results:
        cells = []
        for kb, kg in zip(r["by_beam"][b]["by_length"], r["by_beam"]["1"]["by_length"]):
            cells.append(
                f"{kb['bleu']:>6.1f}/{kg['bleu']:<5.1f}".rjust(15)
                if not math.isnan(kb["bleu"])
                else " " * 15
            )
        print(f"{Path(r['run']).name:<22} " + " ".join(cells))
    if len(results) >= 2:
        first, second = results[0]["by_beam"][b]["by_length"], results[1]["by_beam"][b]["by_length"]
        gaps = [f"{x['bleu'] - y['bleu']:+.1f}" if x["n"] else "" for x, y in zip(first, second)]
        print(f"{'gap (first − second)':<22} " + " ".join(f"{g:>15}" for g in gaps))
    plot(results, args.beam, Path(args.plot))
    print(f"\nplot: {args.plot}  (length buckets: ≤{LENGTH_BUCKETS[0]}, …, >{LENGTH_BUCKETS[-1]})")
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()

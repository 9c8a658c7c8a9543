"""Your own corpus at any size: prepare throughput, training memory, start-up and speed.

Builds corpora of the given sizes (default 10 MB, 100 MB, 1 GB) under ``--work`` (never in the
repository) by concatenating shuffled 32-line blocks of the text in ``../shared/data`` (PTB, Tiny
Shakespeare, Flickr8k captions, UD English EWT, Multi30k en/de, Irish ABC tunes), so a corpus is
not one file repeated. For each size it measures, every figure from child processes:

* ``rnnkit prepare lm`` throughput in MB/s at char and BPE level (8,000 ids);
* ``rnnkit train lm`` for ``--steps`` steps on the prepared char folder: peak RSS (``/usr/bin/time
  -v``), time from process start to the first step (the first metrics row), tokens/s (mean of the
  logged rates after the first logging window);
* the same for the raw-text path of today's code (the whole file read into memory) as the peer,
  where it fits: up to ``--raw-max-mb`` (the in-memory path takes ~17-30 bytes per character,
  so a 1 GB file would need 17-30 GB of this machine's 24).

Then the large-vocabulary rows: the word level of the largest corpus (≥ 100k words), full against
adaptive softmax tokens/s in the same run; and PTB (10k words), validation perplexity of both
after the same steps.

    python benchmarks/scale.py                         # 10 MB, 100 MB, 1 GB (about 20 minutes)
    python benchmarks/scale.py --sizes 10 --steps 20   # a quick look
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = (ROOT / ".." / "shared" / "data").resolve()
if not DATA.is_dir():
    DATA = Path("/work/shared/data")
SOURCES = [
    "ptb/ptb.train.txt",
    "tinyshakespeare/input.txt",
    "captions_flickr8k/train_captions.txt",
    "ud_ewt/en_ewt-ud-train.conllu",
    "multi30k/train.en.gz",
    "multi30k/train.de.gz",
    "irish_abc/train.abc",
]
MODEL = ["--hidden-size", "256", "--embed-size", "64", "--batch-size", "32", "--bptt", "64"]


def source_blocks(block_lines: int = 32) -> list[str]:
    blocks = []
    for rel in SOURCES:
        path = DATA / rel
        if not path.exists():
            continue
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rt", encoding="utf-8") as f:
            lines = f.readlines()
        blocks += ["".join(lines[i : i + block_lines]) for i in range(0, len(lines), block_lines)]
    if not blocks:
        sys.exit(f"no source text found under {DATA}")
    return blocks


def build_corpus(path: Path, megabytes: float, blocks: list[str], seed: int = 0) -> Path:
    """Shuffled blocks until ``megabytes`` MB (reused when a file of that size exists)."""
    target = int(megabytes * 1e6)
    if path.exists() and path.stat().st_size >= target:
        return path
    rng = random.Random(seed)
    written = 0
    tmp = path.with_suffix(".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        while written < target:
            order = list(range(len(blocks)))
            rng.shuffle(order)
            for i in order:
                data = blocks[i]
                f.write(data)
                written += len(data.encode("utf-8"))
                if written >= target:
                    break
    tmp.replace(path)
    return path


def rnnkit(*argv: str) -> list[str]:
    return [sys.executable, "-m", "rnnkit", "-q", *argv]


def env(threads: int, raw: bool = False) -> dict[str, str]:
    e = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONPATH=str(ROOT))
    if raw:
        e["RNNKIT_RAW_THRESHOLD_MB"] = "1000000"  # today's in-memory path, whatever the size
    return e


def prepare(corpus: Path, out: Path, level: str, valid: Path, threads: int, *extra) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = rnnkit(
        "prepare",
        "lm",
        str(corpus),
        "--out",
        str(out),
        "--level",
        level,
        "--valid",
        str(valid),
        "--json",
        "--no-progress",
        *extra,
    )
    r = subprocess.run(cmd, capture_output=True, text=True, env=env(threads), cwd=ROOT)
    if r.returncode:
        sys.exit(f"prepare failed: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def train(data: Path, run: Path, steps: int, threads: int, raw: bool, *extra) -> dict:
    """Peak RSS, seconds from start to the first step, mean tokens/s of a child training run."""
    shutil.rmtree(run, ignore_errors=True)
    cmd = [
        "/usr/bin/time",
        "-v",
        *rnnkit(
            "train",
            "lm",
            "--data",
            str(data),
            "--out",
            str(run),
            "--max-steps",
            str(steps),
            "--eval-every",
            "0",
            "--log-every",
            "5",
            "--threads",
            str(threads),
            "--minutes",
            "none",
            "--no-progress",
            *extra,
        ),
    ]
    start = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(threads, raw),
        cwd=ROOT,
    )
    first = None
    metrics = run / "metrics.jsonl"
    while proc.poll() is None:
        if first is None and metrics.exists() and '"train"' in metrics.read_text():
            first = time.monotonic() - start
        time.sleep(0.02)
    _, err = proc.communicate()
    if proc.returncode:
        sys.exit(f"training failed: {err[-3000:]}")
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    rows = [json.loads(x) for x in metrics.read_text().splitlines()]
    train_rows = [r for r in rows if r.get("kind") == "train"]
    rates = [r["tokens_per_s"] for r in train_rows[2:]] or [train_rows[-1]["tokens_per_s"]]
    val = [r for r in rows if r.get("kind") == "eval"][-1]
    return {
        "rss_mb": rss_kb / 1024,
        "first_step_s": first,
        "tokens_per_s": sorted(rates)[len(rates) // 2],  # median of the logging windows
        "val_loss": val["val_loss"],
        "wall_s": time.monotonic() - start,
    }


def best(a: dict | None, b: dict) -> dict:
    """The less disturbed of two runs (higher tokens/s); peak RSS and start-up kept per run."""
    if a is None:
        return b
    return a if a["tokens_per_s"] >= b["tokens_per_s"] else b


def main() -> None:
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--sizes", default="10,100,1000", help="corpus sizes in MB")
    p.add_argument("--steps", type=int, default=50, help="training steps per run")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=2, help="runs per training row (best kept)")
    p.add_argument("--raw-max-mb", type=float, default=100, help="largest raw-path peer to run")
    p.add_argument("--work", default="/tmp/rnnkit-scale", help="corpora and runs go here")
    p.add_argument("--word-steps", type=int, default=12, help="word-level softmax rows (0: skip)")
    p.add_argument("--ptb-steps", type=int, default=400, help="PTB perplexity rows (0: skip)")
    p.add_argument("--json-out", help="also write the measurements here")
    args = p.parse_args()
    work = Path(args.work)
    work.mkdir(parents=True, exist_ok=True)
    sizes = [float(s) for s in args.sizes.split(",")]
    blocks = source_blocks()
    valid = work / "valid.txt"  # one small validation text for every run: cheap evaluations
    valid.write_text((DATA / "ptb" / "ptb.valid.txt").read_text(encoding="utf-8")[:8_000])
    results: dict = {
        "sizes": {},
        "threads": args.threads,
        "steps": args.steps,
        "repeats": args.repeats,
    }

    for mb in sizes:
        corpus = build_corpus(work / f"corpus-{mb:g}MB.txt", mb, blocks)
        row: dict = {}
        # the fastest of --repeats prepares: on a shared machine a sample only gets slower
        row["prepare_char"] = max(
            (
                prepare(corpus, work / f"char-{mb:g}", "char", valid, args.threads)
                for _ in range(args.repeats)
            ),
            key=lambda r: r["mb_per_s"],
        )
        row["prepare_bpe"] = max(
            (
                prepare(
                    corpus, work / f"bpe-{mb:g}", "bpe", valid, args.threads, "--vocab-size", "8000"
                )
                for _ in range(args.repeats)
            ),
            key=lambda r: r["mb_per_s"],
        )
        # prepared and raw runs alternate, best of --repeats each: the machine is shared
        for _ in range(args.repeats):
            r = train(work / f"char-{mb:g}", work / "run", args.steps, args.threads, False, *MODEL)
            row["prepared"] = best(row.get("prepared"), r)
            if mb <= args.raw_max_mb:
                r = train(
                    corpus,
                    work / "run",
                    args.steps,
                    args.threads,
                    True,
                    "--valid",
                    str(valid),
                    *MODEL,
                )
                row["raw"] = best(row.get("raw"), r)
        results["sizes"][f"{mb:g}"] = row
        print(f"{mb:g} MB done: {json.dumps(row)}", file=sys.stderr, flush=True)

    if args.word_steps:
        mb = max(sizes)
        corpus = work / f"corpus-{mb:g}MB.txt"
        folder = work / f"word-{mb:g}"
        results["word_prepare"] = prepare(corpus, folder, "word", valid, args.threads)
        word_model = [
            "--hidden-size",
            "256",
            "--embed-size",
            "256",
            "--batch-size",
            "16",
            "--bptt",
            "32",
            "--log-every",
            "2",
        ]
        results["word"] = {
            name: train(
                folder,
                work / "run",
                args.word_steps,
                args.threads,
                False,
                *word_model,
                "--softmax",
                name,
            )
            for name in ("full", "adaptive")
        }
        print(f"word rows: {json.dumps(results['word'])}", file=sys.stderr, flush=True)

    if args.ptb_steps:
        ptb = work / "ptb"
        results["ptb_prepare"] = prepare(
            DATA / "ptb" / "ptb.train.txt",
            ptb,
            "word",
            DATA / "ptb" / "ptb.valid.txt",
            args.threads,
        )
        ptb_model = [
            "--hidden-size",
            "256",
            "--embed-size",
            "256",
            "--batch-size",
            "32",
            "--bptt",
            "35",
            "--lr",
            "3e-3",
            "--dropout",
            "0.2",
        ]
        results["ptb"] = {}
        for name in ("full", "adaptive"):
            r = train(
                ptb,
                work / "run",
                args.ptb_steps,
                args.threads,
                False,
                *ptb_model,
                "--softmax",
                name,
                "--cutoffs",
                "2000",
            )
            r["val_perplexity"] = float(__import__("math").exp(r["val_loss"]))
            results["ptb"][name] = r
    shutil.rmtree(work / "run", ignore_errors=True)
    print_table(results)
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(results, indent=2))


def print_table(results: dict) -> None:
    print(
        f"\n{results['threads']} threads, {results['steps']} training steps per run "
        f"(char LSTM 1×256, batch 32 × bptt 64; best of {results['repeats']})\n"
    )
    print(
        "| corpus | prepare char MB/s | prepare BPE MB/s | path | peak RSS MB | first step s "
        "| tokens/s | tokens/s vs raw |"
    )
    print("|---|---|---|---|---|---|---|---|")
    sizes = results["sizes"]
    base_rss = None
    for mb, row in sizes.items():
        # the prepare rates belong to the corpus: printed on its first row only
        pc = f"{row['prepare_char']['mb_per_s']:.1f}"
        pb = f"{row['prepare_bpe']['mb_per_s']:.1f}"
        for path in ("prepared", "raw"):
            r = row.get(path)
            if r is None:
                print(f"| {mb} MB | | | raw | does not fit (needs ~17-30 B/char) | | | |")
                continue
            ratio = ""
            if path == "prepared" and "raw" in row:
                ratio = f"{r['tokens_per_s'] / row['raw']['tokens_per_s']:.3f}"
            if path == "prepared" and base_rss is None:
                base_rss = r["rss_mb"]
            print(
                f"| {mb} MB | {pc} | {pb} | {path} | {r['rss_mb']:.0f} | "
                f"{r['first_step_s']:.1f} | {r['tokens_per_s']:,.0f} | {ratio} |"
            )
            pc = pb = ""
    if base_rss is not None:
        last = list(sizes.values())[-1]["prepared"]["rss_mb"]
        print(f"\nprepared peak RSS, largest − smallest corpus: {last - base_rss:+.0f} MB")
    if "word" in results:
        w = results["word"]
        v = results["word_prepare"]["vocab_size"]
        print(f"\nword level, {v:,}-word vocabulary (LSTM 1×256, batch 16 × bptt 32):")
        print("| softmax | tokens/s | peak RSS MB |\n|---|---|---|")
        for name, r in w.items():
            print(f"| {name} | {r['tokens_per_s']:,.0f} | {r['rss_mb']:.0f} |")
        print(
            f"adaptive / full tokens/s: {w['adaptive']['tokens_per_s'] / w['full']['tokens_per_s']:.2f}×"
        )
    if "ptb" in results:
        pt = results["ptb"]
        print("\nPTB (10k words, LSTM 1×256, batch 32 × bptt 35, same steps):")
        print("| softmax | validation perplexity | tokens/s |\n|---|---|---|")
        for name, r in pt.items():
            print(f"| {name} | {r['val_perplexity']:.2f} | {r['tokens_per_s']:,.0f} |")
        ratio = pt["adaptive"]["val_perplexity"] / pt["full"]["val_perplexity"]
        print(f"adaptive / full perplexity: {ratio:.4f}")


if __name__ == "__main__":
    main()

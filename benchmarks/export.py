"""CPU inference of exported models: onnxruntime (the torch-free runner) vs PyTorch eager.

Both sides run the same weights in the same process, on the same number of threads:

* (a) **generation, batch 1**: ms per sampled token of a character LM (``generate``: one step
  per token, the state carried; rnnkit's PyTorch path vs the runner's ``lm_step`` graph);
* (b) **batched scoring**: tokens/s of the ``lm_sequence`` graph vs the model's forward on a
  (batch, seq_len) block of ids (logits for every position);
* (c) **classification**: 1,000 sentences through ``Classifier.predict`` vs the runner's
  ``classify`` (a bidirectional LSTM, max pooling, batches of similar lengths).

The models are randomly initialised (speed does not depend on training). ×eager is
onnxruntime's rate over PyTorch's (> 1: onnxruntime is faster).

    python benchmarks/export.py                     # ≈ 1 min
    python benchmarks/export.py --cells lstm gru --hidden-size 256 --threads 2
    python benchmarks/export.py --quick             # tiny shapes: a smoke test
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from rnnkit.data.vocab import Vocab  # noqa: E402
from rnnkit.export import export_model  # noqa: E402
from rnnkit.tasks.classifier import Classifier, ClassifierConfig, ClassifierData  # noqa: E402
from rnnkit.tasks.language_model import LanguageModel, LanguageModelConfig  # noqa: E402

TEXT = (ROOT / "rnnkit" / "data" / "bundled" / "tinyshakespeare.txt").read_text("utf-8")


def load_runner(path: Path, threads: int):
    spec = importlib.util.spec_from_file_location("bench_runner", path / "runner.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.load(path, threads=threads)


def best_of(fn, repeats: int) -> float:
    """The fastest of ``repeats`` timed calls (after one warm-up call), in seconds."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_lm(name: str, args, tmp: Path) -> list[tuple[str, float, float, str]]:
    """``name``: a cell (lstm, gru, rnn), ``-ln`` for layer norm (a cell-by-cell Loop in ONNX)."""
    torch.manual_seed(0)
    cell = name.removesuffix("-ln")
    cfg = LanguageModelConfig(
        cell=cell,
        embed_size=64,
        hidden_size=args.hidden_size,
        num_layers=args.layers,
        dropout=0,
        layer_norm=name.endswith("-ln"),
    )
    model = LanguageModel(cfg, Vocab.build(TEXT[:200_000])).eval()
    runner = load_runner(export_model(model, "lm", tmp / f"lm-{name}"), args.threads)
    n = args.tokens
    t_torch = best_of(lambda: model.generate("ROMEO:", length=n, seed=0), args.repeats)
    t_ort = best_of(lambda: runner.generate("ROMEO:", length=n, seed=0), args.repeats)
    rows = [(f"{name}: generate, batch 1", t_torch / n * 1e3, t_ort / n * 1e3, "ms/token")]

    B, T = args.batch, args.seq_len
    ids = torch.randint(4, len(model.vocab), (B, T), generator=torch.Generator().manual_seed(1))
    state = runner.zero_state(B)
    feeds = {"ids": ids.numpy(), "lengths": np.full(B, T, np.int64), **state}

    def torch_score():
        with torch.no_grad():
            model(ids)

    t_torch = best_of(torch_score, args.repeats)
    t_ort = best_of(lambda: runner.run("lm_sequence", feeds), args.repeats)
    rows.append((f"{name}: score {B}×{T}", B * T / t_torch, B * T / t_ort, "tokens/s"))
    return rows


def bench_classifier(args, tmp: Path) -> tuple[str, float, float, str]:
    rng = random.Random(0)
    words = TEXT[:200_000].split()
    sentences = []
    for _ in range(args.sentences):
        start = rng.randrange(len(words) - 40)
        sentences.append(" ".join(words[start : start + rng.randint(5, 30)]))
    vocab = Vocab.build(words, level="word", max_size=5000)
    torch.manual_seed(0)
    cfg = ClassifierConfig(embed_size=64, hidden_size=args.hidden_size // 2, dropout=0.0)
    model = Classifier(cfg, ClassifierData(labels=["a", "b", "c"]), vocab).eval()
    runner = load_runner(export_model(model, "classify", tmp / "clf"), args.threads)
    t_torch = best_of(lambda: model.predict(sentences), args.repeats)
    t_ort = best_of(lambda: runner.classify(sentences), args.repeats)
    n = len(sentences)
    return (f"classify {n} sentences", n / t_torch, n / t_ort, "sentences/s")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--cells",
        nargs="+",
        default=["lstm", "gru", "lstm-ln"],
        help="lstm, gru, rnn; -ln: layer norm",
    )
    p.add_argument("--hidden-size", type=int, default=256)
    p.add_argument("--layers", type=int, default=1)
    p.add_argument("--tokens", type=int, default=200, help="tokens generated per timing")
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--seq-len", type=int, default=128)
    p.add_argument("--sentences", type=int, default=1000)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=1, help="torch and onnxruntime threads")
    p.add_argument("--quick", action="store_true", help="tiny shapes (a smoke test)")
    args = p.parse_args(argv)
    if args.quick:
        args.hidden_size, args.tokens, args.batch, args.seq_len = 16, 10, 2, 8
        args.sentences, args.repeats = 20, 1
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for cell in args.cells:
            rows += bench_lm(cell, args, Path(tmp))
        rows.append(bench_classifier(args, Path(tmp)))
    print(
        f"CPU inference, {args.threads} thread(s), hidden {args.hidden_size}, "
        f"{args.layers} layer(s); torch {torch.__version__}"
    )
    print(f"{'case':<28} {'PyTorch eager':>14} {'onnxruntime':>12}  {'unit':<12} {'×eager':>7}")
    for name, eager, ort_value, unit in rows:
        lower_is_better = unit.startswith("ms")
        ratio = eager / ort_value if lower_is_better else ort_value / eager
        print(f"{name:<28} {eager:>14.4g} {ort_value:>12.4g}  {unit:<12} {ratio:>7.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Sequence tagging quality: UD English EWT POS tags and WNUT-17 named entities.

Trains, one after the other, each configuration below from its recipe in `recipes/` (plus the
flags listed), evaluates it on the dev split, and prints one table: token accuracy, entity precision / recall / F1 (WNUT-17), parameters and wall time. Runs
are kept under `--out`; a run directory that already exists is evaluated again, not retrained.

* UD EWT UPOS: the BiLSTM tagger with and without the character-level word vector and with and
  without the CRF output layer (four runs), checkpoint with the best dev loss;
* WNUT-17: the BiLSTM tagger (+ char BiLSTM) with and without the (BIO-constrained) CRF, last
  checkpoint (the dev loss is lowest early on, when nearly every token is tagged O).

    python benchmarks/tagging.py                              # everything (≈ 1 h on 2 CPU cores)
    python benchmarks/tagging.py --only ud-char,ud-char-crf --minutes 8
    python benchmarks/tagging.py --dry-run                    # two steps each: a smoke test
"""

from __future__ import annotations

from classify import ROOT, run_configs  # the shared command line and train-then-evaluate step

#: (name, task, recipe, extra flags, which checkpoint to evaluate)
CONFIGS = [
    ("ud-char", "tag", "ud_pos.toml", [], "best"),
    ("ud-char-crf", "tag", "ud_pos.toml", ["--crf"], "best"),
    ("ud-word", "tag", "ud_pos.toml", ["--char-repr", "none"], "best"),
    ("ud-word-crf", "tag", "ud_pos.toml", ["--char-repr", "none", "--crf"], "best"),
    # the dev loss bottoms out early, while the model still tags almost everything O: keep the
    # last checkpoint of the fixed budget instead (nothing selected on dev)
    ("wnut-crf", "tag", "wnut17.toml", [], "last"),
    ("wnut-softmax", "tag", "wnut17.toml", ["--no-crf"], "last"),
]


def main() -> None:
    rows = run_configs(CONFIGS, __doc__, ROOT / "runs" / "tagging-benchmark")
    print(
        f"\n{'model':<14} {'ckpt':>4} {'accuracy':>9} {'ent. P':>7} {'ent. R':>7} {'ent. F1':>7} "
        f"{'params':>10} {'min':>6}"
    )
    for r in rows:
        ents = (
            f"{r['precision']:>7.4f} {r['recall']:>7.4f} {r['f1']:>7.4f}"
            if "f1" in r
            else f"{'–':>7} {'–':>7} {'–':>7}"
        )
        print(
            f"{r['name']:<14} {r['tag']:>4} {r['accuracy']:>9.2%} {ents} {r['params']:>10,} {r['minutes']:>6.1f}"
        )


if __name__ == "__main__":
    main()

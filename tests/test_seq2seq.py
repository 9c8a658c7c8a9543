"""Translation: the parallel reader and tokenizer, BLEU, a model that learns to reverse digit
strings, every model variant's shapes, save/load, and the CLI end to end on a tiny corpus."""

import gzip
import json
import random

import pytest
import torch

from rnnkit.api import load
from rnnkit.cli import main
from rnnkit.data.parallel import detokenize, read_parallel, tokenize
from rnnkit.errors import DataError
from rnnkit.metrics import bleu_scores, corpus_bleu
from rnnkit.tasks.seq2seq import (
    Pair,
    Seq2Seq,
    Seq2SeqConfig,
    Seq2SeqData,
    bleu_by_length,
    collate_pairs,
)

DIGITS = list("0123456789")

DE = [
    "Ein Mann fährt Fahrrad.",
    "Eine Frau liest ein Buch.",
    "Zwei Hunde spielen im Schnee.",
    "Ein Kind isst einen Apfel.",
    "Ein Mann liest ein Buch.",
    "Eine Frau fährt Fahrrad.",
]
EN = [
    "A man rides a bike.",
    "A woman reads a book.",
    "Two dogs play in the snow.",
    "A child eats an apple.",
    "A man reads a book.",
    "A woman rides a bike.",
]


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


# ------------------------------------------------------------------ reading and tokenising
def test_tokenize_and_detokenize_round_trip():
    text = 'Two young, White males are outside near a man\'s "big" t-shirt (really).'
    tokens = tokenize(text)
    assert tokens[:4] == ["two", "young", ",", "white"]
    assert "'s" in tokens and "t-shirt" in tokens and tokens[-2:] == [")", "."]
    assert detokenize(tokens) == text.lower()
    assert tokenize("Ein Mann", lowercase=False) == ["Ein", "Mann"]


def test_read_parallel_files_gzip_and_tsv(tmp_path):
    src, tgt = tmp_path / "a.de.gz", tmp_path / "a.en"
    with gzip.open(src, "wt", encoding="utf-8") as f:
        f.write("\n".join(DE) + "\n")
    tgt.write_text("\n".join(EN) + "\n", encoding="utf-8")
    assert read_parallel(src, tgt) == (DE, EN)
    tsv = tmp_path / "pairs.tsv"
    tsv.write_text("".join(f"{d}\t{e}\n" for d, e in zip(DE, EN)) + "\n", encoding="utf-8")
    assert read_parallel(tsv) == (DE, EN)


def test_reader_errors_name_the_files_and_lines(tmp_path):
    a, b = tmp_path / "a.de", tmp_path / "b.en"
    a.write_text("eins\nzwei\ndrei\n")
    b.write_text("one\ntwo\n")
    with pytest.raises(DataError, match=r"a\.de has 3 lines but .*b\.en has 2 lines"):
        read_parallel(a, b)
    b.write_text("one\n\nthree\n")
    with pytest.raises(DataError, match=r"b\.en:2: empty line"):
        read_parallel(a, b)
    tsv = tmp_path / "p.tsv"
    tsv.write_text("eins\tone\nzwei two\n")
    with pytest.raises(DataError, match=r"p\.tsv:2: expected 'source<TAB>target'"):
        read_parallel(tsv)
    with pytest.raises(FileNotFoundError):
        read_parallel(tmp_path / "missing.de", b)
    bad = tmp_path / "bad.gz"
    bad.write_bytes(b"\x1f\x8bnot really gzip")
    with pytest.raises(DataError, match="gzip"):
        read_parallel(bad, b)


# ------------------------------------------------------------------------------------ BLEU
def test_bleu_of_a_reference_against_itself_is_100():
    refs = ["a man rides a bike .", "two dogs play in the snow ."]
    assert corpus_bleu(refs, [[r] for r in refs]) == pytest.approx(100.0)
    s = bleu_scores(refs, [[r, "something else entirely"] for r in refs])
    assert s["bleu"] == pytest.approx(100.0) and s["bp"] == 1.0 and len(s["precisions"]) == 4
    # variable numbers of references; a wrong hypothesis scores below 100
    assert corpus_bleu(["a man rides a horse ."], [["a man rides a bike ."]]) < 100
    with pytest.raises(ValueError, match="hypotheses"):
        corpus_bleu(refs, [[refs[0]]])


def test_bleu_by_length_buckets():
    hyps = ["a b c d e", "a b c d e f", "x"]  # BLEU-4 needs four words to score at all
    rows = bleu_by_length([2, 7, 30], hyps, ["a b c d e", "a b c d e f", "y"], buckets=(5, 10))
    assert [r["bucket"] for r in rows] == ["1-5", "6-10", "11+"]
    assert [r["n"] for r in rows] == [1, 1, 1]
    assert rows[0]["bleu"] == pytest.approx(100.0) and rows[2]["bleu"] == 0.0


# ----------------------------------------------------------------------------------- model
def digit_model(**overrides) -> Seq2Seq:
    options = dict(
        embed_size=32,
        hidden_size=64,
        decoder_size=64,
        attention_size=32,
        output_size=32,
        dropout=0.0,
        label_smoothing=0.0,
    )
    options.update(overrides)
    return Seq2Seq(Seq2SeqConfig(**options), Seq2SeqData(source_vocab=DIGITS, target_vocab=DIGITS))


def digit_pairs(rng: random.Random, n: int, offset: int = 4) -> list[Pair]:
    out = []
    for _ in range(n):
        s = [rng.randrange(10) + offset for _ in range(rng.randint(3, 8))]  # ids 4..13
        out.append(Pair(s, s[::-1]))
    return out


def test_learns_to_reverse_digit_strings():
    torch.manual_seed(0)
    rng = random.Random(0)
    model = digit_model()
    steps, lr = 300, 1e-2
    opt = torch.optim.Adam(model.parameters(), lr)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, lr, total_steps=steps, pct_start=0.1)
    model.train()
    for _ in range(steps):
        loss = model.forward_batch(collate_pairs(digit_pairs(rng, 64), model.bos, model.eos)).loss
        opt.zero_grad()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        schedule.step()
    test = digit_pairs(random.Random(123), 500)
    hyps = model.decode([p.source for p in test], beam_size=1)
    exact = sum(h.tokens == p.target for h, p in zip(hyps, test)) / len(test)
    assert exact >= 0.99
    beam = model.decode([p.source for p in test[:50]], beam_size=3)
    assert sum(h.tokens == p.target for h, p in zip(beam, test)) >= 49
    # the attention of a reversal runs along the anti-diagonal
    h = hyps[0]
    S = len(test[0].source)
    assert h.attention.shape == (S, S)
    assert h.attention.argmax(1).tolist() == list(range(S - 1, -1, -1))


@pytest.mark.parametrize(
    "options",
    [
        {"cell": "gru", "attention": "additive"},
        {"cell": "lstm", "attention": "dot", "decoder_size": 128},
        {"cell": "gru", "attention": "general", "bidirectional": False, "num_layers": 2},
        {"cell": "lstm", "attention": "none", "tie_embeddings": False, "output_size": 20},
        {"cell": "gru", "attention": "additive", "teacher_forcing": 0.5},
    ],
)
def test_every_variant_trains_and_decodes(options):
    torch.manual_seed(0)
    model = digit_model(dropout=0.1, label_smoothing=0.1, **options)
    batch = collate_pairs(digit_pairs(random.Random(1), 5), model.bos, model.eos)
    model.train()
    out = model.forward_batch(batch)
    assert out.logits.shape == (*batch["target_out"].shape, 14)
    out.loss.backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)
    sources = [p.source for p in digit_pairs(random.Random(2), 4)]
    greedy = model.decode(sources, 1, max_len=12)
    beam1 = model.decode(sources, 1, max_len=12)
    assert [h.tokens for h in greedy] == [h.tokens for h in beam1]
    for h, s in zip(model.decode(sources, 3, max_len=12), sources):
        assert len(h.tokens) <= 12
        if options["attention"] == "none":
            assert h.attention is None
        else:
            assert h.attention.shape == (len(h.tokens), len(s))


def test_padding_does_not_change_the_loss_of_a_sentence():
    torch.manual_seed(0)
    model = digit_model().eval()
    pairs = digit_pairs(random.Random(3), 4)
    alone = model.forward_batch(collate_pairs(pairs[:1], model.bos, model.eos))
    batch = collate_pairs(pairs, model.bos, model.eos)
    together = model.forward_batch(batch)
    T = len(pairs[0].target) + 1
    torch.testing.assert_close(together.logits[0, :T], alone.logits[0, :T], atol=1e-5, rtol=1e-5)


# ------------------------------------------------------------------------------------- CLI
TINY = [
    "--embed-size", 16, "--hidden-size", 16, "--decoder-size", 24, "--attention-size", 8,
    "--output-size", 16, "--min-freq", 1, "--batch-size", 3, "--no-progress",
]  # fmt: skip


@pytest.fixture()
def corpus(tmp_path):
    src, tgt = tmp_path / "train.de.gz", tmp_path / "train.en.gz"
    for path, lines in ((src, DE), (tgt, EN)):
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write("\n".join(lines) + "\n")
    valid = tmp_path / "valid.tsv"
    valid.write_text("".join(f"{d}\t{e}\n" for d, e in zip(DE[:3], EN[:3])), encoding="utf-8")
    return src, tgt, valid


def test_cli_dry_run_translate_evaluate_and_load(tmp_path, corpus, capsys):
    src, tgt, valid = corpus
    out = tmp_path / "run"
    code, _, err = run_cli(
        capsys, "-q", "train", "translate", "--src", src, "--tgt", tgt, "--valid-src", valid,
        "--out", out, "--dry-run", *TINY,
    )  # fmt: skip
    assert code == 0, err
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert any("val_bleu" in r for r in rows)
    png = tmp_path / "a.png"
    code, stdout, err = run_cli(
        capsys, "translate", out, "Ein Mann fährt Fahrrad.", "--beam", 3, "--json",
        "--attention-png", png,
    )  # fmt: skip
    assert code == 0, err
    result = json.loads(stdout)
    assert result["source"] == "Ein Mann fährt Fahrrad." and result["beam"] == 3
    assert isinstance(result["translation"], str)
    if result["tokens"]:
        assert png.read_bytes()[:4] == b"\x89PNG"
    code, stdout, err = run_cli(capsys, "translate", out, "ein kind", "zwei hunde", "--beam", 1)
    assert code == 0 and len(stdout.strip().splitlines()) == 2
    code, stdout, err = run_cli(capsys, "evaluate", out, "--json")
    assert code == 0, err
    result = json.loads(stdout)
    assert result["sentences"] == 3 and set(result["by_beam"]) == {"1", "5"}

    # save / load round trip: the loaded weights are the saved ones, decoding is repeatable
    model = load(out, tag="last")
    again = load(out, tag="last")
    for (k, v), w in zip(model.state_dict().items(), again.state_dict().values()):
        torch.testing.assert_close(v, w, msg=k)
    from rnnkit.checkpoint import RunDir

    saved = RunDir(out).load_trainer_state()["model"]
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, saved[k], msg=k)
    a = model.translate(DE[:2], beam_size=2)
    b = again.translate(DE[:2], beam_size=2)
    assert [r["tokens"] for r in a] == [r["tokens"] for r in b]


def test_cli_bad_input_is_one_line_exit_2(tmp_path, corpus, capsys):
    src, tgt, valid = corpus
    short = tmp_path / "short.en"
    short.write_text("one line\n")
    code, _, err = run_cli(
        capsys, "-q", "train", "translate", "--src", src, "--tgt", short, "--dry-run", *TINY
    )
    assert code == 2 and len(err.strip().splitlines()) == 1
    assert "6 lines" in err and "1 lines" in err and "short.en" in err
    code, _, err = run_cli(capsys, "-q", "train", "translate", "--dry-run", *TINY)
    assert code == 2 and "--src" in err
    out = tmp_path / "run"
    assert run_cli(
        capsys, "-q", "train", "translate", "--src", src, "--tgt", tgt, "--out", out,
        "--valid-fraction", 0.34, "--dry-run", *TINY,
    )[0] == 0  # fmt: skip
    code, _, err = run_cli(capsys, "translate", out, "  ...  ")
    assert code == 0  # punctuation is a word too
    code, _, err = run_cli(capsys, "translate", out, " ")
    assert code == 2 and "no words" in err and len(err.strip().splitlines()) == 1
    code, _, err = run_cli(capsys, "translate", out, "ein mann", "--beam", 0)
    assert code == 2 and "beam" in err


def test_resume_and_the_benchmark_script(tmp_path, corpus, capsys):
    import subprocess
    import sys
    from pathlib import Path

    src, tgt, valid = corpus
    out = tmp_path / "run"
    common = ["-q", "train", "translate", "--eval-every", 2]
    data = ["--src", src, "--tgt", tgt, "--valid-src", valid, "--no-bleu"]
    assert run_cli(capsys, *common, *data, "--out", out, "--max-steps", 2, *TINY)[0] == 0
    code, _, err = run_cli(capsys, *common, "--resume", out, "--max-steps", 4)
    assert code == 0, err
    steps = [json.loads(x)["step"] for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert max(steps) == 4

    root = Path(__file__).resolve().parents[1]
    cmd = [sys.executable, str(root / "benchmarks" / "translate.py"), str(out), str(out)]
    cmd += ["--beam", "2", "--plot", str(tmp_path / "len.png")]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=root)
    assert done.returncode == 0, done.stderr
    assert "beam 2" in done.stdout and "BLEU by source length" in done.stdout
    assert (tmp_path / "len.png").read_bytes()[:4] == b"\x89PNG"


def test_infer_answers_translate_requests():
    from rnnkit.inference import TranslateRequest, TranslateResult

    torch.manual_seed(0)
    model = digit_model().eval()
    request = TranslateRequest.from_json({"texts": ["1 2 3", "4 5"], "beam_size": 2, "max_len": 6,
                                          "attention": True})  # fmt: skip
    result = model.infer(request)
    expected = model.translate(["1 2 3", "4 5"], beam_size=2, max_len=6, attention=True)
    assert result.lines() == expected
    assert len(result.lines()[0]["attention"]) == len(result.lines()[0]["tokens"])
    assert TranslateResult.from_json(json.loads(json.dumps(result.to_json()))) == result

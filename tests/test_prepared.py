"""Prepared corpora: prepare → decode round trips, dtype choice, atomicity, integrity checks, and
memory-mapped windows equal to the in-memory batches."""

import gzip
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from rnnkit.data.batching import StreamBatches
from rnnkit.data.prepared import (
    MemmapStreams,
    PreparedCorpus,
    expand_inputs,
    iter_text,
    load_tokenizer,
    prepare_lm,
    verify,
    vocab_from_counts,
)
from rnnkit.data.readers import split_text
from rnnkit.data.vocab import Vocab
from rnnkit.errors import DataError
from rnnkit.tasks.language_model import tokenize_text

# Unicode (2-, 3- and 4-byte UTF-8), CRLF and LF endings, empty lines, tabs, runs of spaces
TEXT = (
    "Grüße aus Köln —\r\nnaïve café, 東京 and 🎉 emoji.\n\n\n"
    "  indented\tline with  two  spaces\r\n"
    "last words of the corpus\n"
) * 6


def _prep(tmp_path, text=TEXT, name="corpus.txt", **kw):
    path = tmp_path / name
    path.write_bytes(text.encode("utf-8"))
    kw.setdefault("progress", False)
    kw.setdefault("chunk_bytes", 7)  # tiny chunks: multi-byte characters and CRLF cut at edges
    out = tmp_path / f"out-{kw.get('level', 'char')}"
    return path, out, prepare_lm([path], out, **kw)


def _in_memory_ids(train_text, valid_text, level):
    """What LanguageModelTraining is given today for the same text."""
    if level == "word":
        vocab = Vocab.build(tokenize_text(train_text, "word"), level="word")
    else:
        vocab = Vocab.build(train_text, level="char")
    enc = lambda t: vocab.encode(tokenize_text(t, level), unknown="unk")  # noqa: E731
    return vocab, enc(train_text), enc(valid_text)


@pytest.mark.parametrize("level", ["char", "word"])
def test_char_and_word_ids_equal_the_in_memory_path(tmp_path, level):
    _, out, meta = _prep(tmp_path, level=level, valid_fraction=0.25)
    train_text, valid_text = split_text(TEXT, 0.25)
    vocab, train_ids, valid_ids = _in_memory_ids(train_text, valid_text, level)
    corpus = PreparedCorpus(out)
    assert corpus.tokenizer.vocab == vocab
    assert corpus.train.tolist() == train_ids
    assert corpus.valid.tolist() == valid_ids
    assert meta["splits"]["train"]["characters"] == len(train_text)


def test_char_round_trip_is_the_identity(tmp_path):
    valid = tmp_path / "valid.txt"
    valid.write_bytes("Köln 🎉\r\n\n".encode())
    _, out, _ = _prep(tmp_path, level="char", valid=valid)
    corpus = PreparedCorpus(out)
    assert corpus.tokenizer.decode(corpus.train) == TEXT
    assert corpus.tokenizer.decode(corpus.valid) == "Köln 🎉\r\n\n"


def test_word_round_trip_is_the_identity_up_to_unk_and_spacing(tmp_path):
    valid = tmp_path / "valid.txt"
    valid.write_text("Grüße unseen-word\n\n東京 too\n", encoding="utf-8")
    _, out, _ = _prep(tmp_path, level="word", valid=valid)
    corpus = PreparedCorpus(out)
    tok = corpus.tokenizer
    normal = "\n".join(" ".join(line.split()) for line in TEXT.split("\n"))
    assert tok.decode(corpus.train) == normal
    assert tok.decode(corpus.valid) == "Grüße <unk>\n\n東京 <unk>\n"


def test_bpe_round_trip_is_exact_and_equals_encoding_the_whole_text(tmp_path):
    odd = "x\x1cy \xa0z\u3000w\u2028v <eos> tail   \n\n  \t\n"  # whitespace the two regexes see
    text = TEXT + odd
    valid = tmp_path / "valid.txt"
    valid.write_bytes(odd.encode())
    _, out, meta = _prep(tmp_path, text=text, level="bpe", vocab_size=300, valid=valid)
    corpus = PreparedCorpus(out)
    tok = corpus.tokenizer
    assert meta["tokenizer"] == "tokenizer.json" and len(tok) == 300
    assert tok.decode(corpus.train) == text
    assert tok.decode(corpus.valid) == odd
    # chunked, cached encoding == the tokenizer on the whole text at once
    assert corpus.train.tolist() == tok.encode(text)
    assert corpus.valid.tolist() == tok.encode(odd)
    again = load_tokenizer(out / "tokenizer.json")
    assert again.encode("naïve 🎉\r\n") == tok.encode("naïve 🎉\r\n")


def test_gz_folder_and_glob_inputs(tmp_path):
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "a.txt").write_text("first file without newline", encoding="utf-8")
    with gzip.open(src / "b.txt.gz", "wt", encoding="utf-8") as f:
        f.write("gzipped ünïcode\r\n")
    (src / "sub" / "c.txt").write_text("third\n", encoding="utf-8")
    (src / ".hidden").write_text("never read", encoding="utf-8")
    want = "first file without newline\ngzipped ünïcode\r\nthird\n"
    valid = tmp_path / "v.txt"
    valid.write_text("file valid\n", encoding="utf-8")
    for inputs in ([src], [str(src / "*.txt*"), str(src / "sub" / "*.txt")]):
        out = tmp_path / "out"
        prepare_lm(inputs, out, level="char", valid=valid, progress=False, chunk_bytes=5)
        corpus = PreparedCorpus(out)
        assert corpus.tokenizer.decode(corpus.train) == want
        names = [Path(s["path"]).name for s in corpus.meta["sources"]]
        assert names == ["a.txt", "b.txt.gz", "c.txt"]
    with pytest.raises(DataError, match="matches no file"):
        expand_inputs([str(tmp_path / "nothing*.txt")])


def test_uint16_or_uint32_by_vocabulary_size(tmp_path):
    words = " ".join(f"w{i}" for i in range(70_000)) + "\n"
    valid = tmp_path / "v.txt"
    valid.write_text("w1 w2 w3\n", encoding="utf-8")
    path = tmp_path / "many.txt"
    path.write_text(words, encoding="utf-8")
    meta = prepare_lm([path], tmp_path / "big", level="word", valid=valid, progress=False)
    assert meta["vocab_size"] == 70_004 and meta["dtype"] == "uint32"
    corpus = PreparedCorpus(tmp_path / "big")
    assert corpus.train.dtype == np.dtype("<u4") and int(corpus.train.max()) == 70_003
    assert (tmp_path / "big" / "train.bin").stat().st_size == 4 * 70_001
    small = prepare_lm(
        [path], tmp_path / "small", level="word", vocab_size=1000, valid=valid, progress=False
    )
    assert small["dtype"] == "uint16"
    assert (tmp_path / "small" / "train.bin").stat().st_size == 2 * 70_001
    with pytest.raises(DataError, match="does not fit uint16"):
        prepare_lm(
            [path], tmp_path / "forced", level="word", valid=valid, dtype="uint16", progress=False
        )
    assert not (tmp_path / "forced").exists()
    raw = np.fromfile(tmp_path / "small" / "train.bin", dtype="<u2")  # little-endian on disk
    assert raw.tolist() == PreparedCorpus(tmp_path / "small").train.tolist()


def test_empty_corpus_and_undecodable_bytes_are_one_line_errors(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    with pytest.raises(DataError, match="empty"):
        prepare_lm([empty], tmp_path / "out", progress=False)
    bad = tmp_path / "bad.txt"
    data = "ok line\nsecond ü line\n".encode() + b"third \xff\n"
    bad.write_bytes(data)
    with pytest.raises(DataError) as err:
        prepare_lm([bad], tmp_path / "out", progress=False, chunk_bytes=4)
    msg = str(err.value)
    offset = data.index(b"\xff")
    assert msg.startswith(f"{bad}: byte 0xff at offset {offset} (line 3) is not valid utf-8")
    assert "--encoding latin-1" in msg and "\n" not in msg
    # a multi-byte character cut by every chunk edge is no error; latin-1 reads the bad file
    good = tmp_path / "good.txt"
    good.write_bytes(TEXT.encode())
    assert "".join(iter_text(expand_inputs([good]), "utf-8", chunk_bytes=1)) == TEXT
    assert "".join(iter_text(expand_inputs([bad]), "latin-1")) == data.decode("latin-1")
    with pytest.raises(DataError, match="vocab_size >= 260"):
        _prep(tmp_path, level="bpe", vocab_size=100)
    assert not list(tmp_path.glob(".out*"))  # failed prepares leave no temporary folder


def test_truncated_or_edited_bin_is_refused(tmp_path):
    _, out, meta = _prep(tmp_path, level="char")
    verify(out)
    train = out / "train.bin"
    data = train.read_bytes()
    train.write_bytes(data[:-2])
    with pytest.raises(DataError, match="truncated or replaced"):
        PreparedCorpus(out)
    edited = bytearray(data)
    edited[10] ^= 1
    train.write_bytes(bytes(edited))
    PreparedCorpus(out)  # same size: opening does not read the data
    with pytest.raises(DataError, match="sha256 .* does not match meta.json"):
        verify(out)


def test_rerun_on_unchanged_inputs_does_nothing(tmp_path):
    path, out, meta = _prep(tmp_path, level="word")
    before = {p.name: p.stat().st_ino for p in out.iterdir()}
    again = prepare_lm([path], out, level="word", progress=False, chunk_bytes=7)
    assert again == meta
    assert {p.name: p.stat().st_ino for p in out.iterdir()} == before
    # another option, or a changed source, prepares again
    prepare_lm([path], out, level="char", progress=False)
    assert PreparedCorpus(out).level == "char"
    path.write_text(TEXT + "more\n", encoding="utf-8")
    fresh = prepare_lm([path], out, level="char", progress=False)
    assert fresh["sources"][0]["bytes"] == len((TEXT + "more\n").encode())


_KILLED = """
import sys, time
from pathlib import Path
import rnnkit.data.prepared.prepare as prep
real = prep._Writer.write
def slow(self, ids):
    real(self, ids)
    Path(sys.argv[3]).touch()  # half the ids are on disk now
    time.sleep(60)
prep._Writer.write = slow
prep.prepare_lm([sys.argv[1]], sys.argv[2], level="word", progress=False, chunk_bytes=64)
"""


def test_a_killed_prepare_leaves_the_earlier_folder_intact(tmp_path):
    path, out, meta = _prep(tmp_path, level="char")
    files = {p.name: p.read_bytes() for p in out.iterdir()}
    marker = tmp_path / "writing"
    script = tmp_path / "killed.py"
    script.write_text(textwrap.dedent(_KILLED))
    root = Path(__file__).resolve().parents[1]
    proc = subprocess.Popen(
        [sys.executable, str(script), str(path), str(out), str(marker)],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
    )
    deadline = time.monotonic() + 60
    while not marker.exists() and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert marker.exists(), "the child never started writing"
    temporaries = list(tmp_path.glob(f".{out.name}.tmp-*"))
    assert temporaries and (temporaries[0] / "vocab.json").exists()  # it was mid-way
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert {p.name: p.read_bytes() for p in out.iterdir()} == files  # untouched
    assert verify(out) == meta
    # the next prepare clears the dead one's temporary folder and swaps the new data in
    prepare_lm([path], out, level="word", progress=False)
    assert PreparedCorpus(out).level == "word"
    assert not list(tmp_path.glob(f".{out.name}.*"))


@pytest.mark.parametrize("batch_size,bptt,offset", [(4, 5, 0), (3, 7, 2), (1, 16, 5)])
@pytest.mark.parametrize("drop_last", [False, True])
def test_memmap_windows_equal_stream_batches(tmp_path, batch_size, bptt, offset, drop_last):
    _, out, _ = _prep(tmp_path, level="char")
    ids = PreparedCorpus(out).train
    mm = MemmapStreams(ids[offset:], batch_size, bptt, drop_last=drop_last)
    ref = StreamBatches(
        torch.from_numpy(ids.astype(np.int64))[offset:], batch_size, bptt, drop_last=drop_last
    )
    assert mm.num_windows == ref.num_windows
    for (x, y), (rx, ry) in zip(mm, ref, strict=True):
        assert x.dtype == torch.int64
        assert torch.equal(x, rx) and torch.equal(y, ry)
    assert isinstance(mm.data, np.memmap) and not mm.data.flags.owndata  # a view of the map


def test_two_ranks_read_disjoint_streams_that_make_up_the_batch(tmp_path):
    _, out, _ = _prep(tmp_path, level="char")
    ids = PreparedCorpus(out).train
    full = MemmapStreams(ids, 4, 8)
    ranks = [MemmapStreams(ids, 4, 8, rows=slice(r * 2, r * 2 + 2)) for r in range(2)]
    for i in range(full.num_windows):
        parts = [r.window(i)[0] for r in ranks]
        assert torch.equal(torch.cat(parts), full.window(i)[0])
    # each rank's streams are its own stretch of the corpus: no token index is shared
    L = full.stream_length
    spans = [set(range(r * 2 * L, (r * 2 + 2) * L)) for r in range(2)]
    assert not spans[0] & spans[1]


@pytest.mark.parametrize("level", ["char", "word"])
def test_vocab_from_counts_matches_vocab_build(level):
    from collections import Counter

    tokens = tokenize_text(TEXT, level)
    counts = Counter(tokens)
    for max_size, min_freq in ((None, 1), (12, 1), (None, 7)):
        if level == "char" and (max_size, min_freq) != (None, 1):
            want = Vocab.build(TEXT, level="char", max_size=max_size, min_freq=min_freq)
        else:
            want = Vocab.build(
                tokens if level == "word" else TEXT,
                level=level,
                max_size=max_size,
                min_freq=min_freq,
            )
        assert vocab_from_counts(counts, level, max_size, min_freq) == want


def test_meta_records_what_a_user_needs(tmp_path):
    path, out, meta = _prep(tmp_path, level="char")
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    assert meta["level"] == "char" and meta["dtype"] == "uint16" and meta["byteorder"] == "little"
    assert meta["sources"][0]["path"] == str(path.resolve())
    assert meta["sources"][0]["bytes"] == path.stat().st_size
    for split in meta["splits"].values():
        assert len(split["sha256"]) == 64 and split["bytes"] == 2 * split["tokens"]


def test_bpe_sample_size_is_a_prepare_flag_recorded_in_meta(tmp_path):
    """``--bpe-sample-mb`` reaches the trainer: a sample that stops before the later text still
    encodes all of it exactly, and meta.json records the size (so a change re-prepares)."""
    from rnnkit.cli import main
    from rnnkit.data.prepared.prepare import DEFAULT_BPE_SAMPLE_MB

    corpus = tmp_path / "corpus.txt"
    corpus.write_bytes(TEXT.encode("utf-8"))
    out = tmp_path / "bpe"
    argv = ["prepare", "lm", str(corpus), "--out", str(out), "--level", "bpe"]
    assert main([*argv, "--vocab-size", "280", "--bpe-sample-mb", "0.0001", "--no-progress"]) == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["options"]["bpe_sample_mb"] == 0.0001
    corpus_ids = PreparedCorpus(out)
    assert (
        corpus_ids.tokenizer.decode(corpus_ids.train)
        + corpus_ids.tokenizer.decode(corpus_ids.valid)
        == TEXT
    )
    default = prepare_lm([corpus], tmp_path / "bpe-default", level="bpe", vocab_size=280,
                         progress=False)  # fmt: skip
    assert default["options"]["bpe_sample_mb"] == DEFAULT_BPE_SAMPLE_MB

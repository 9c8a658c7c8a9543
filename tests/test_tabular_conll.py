"""Readers for labelled text, numbers, word vectors, CoNLL-U and two-column CoNLL: the layouts
they accept, the quirks of the shared data, and file:line errors for everything else (fuzzed)."""

import gzip
import logging
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rnnkit.data.conll import read_conll, read_conllu, read_tagged
from rnnkit.data.tabular import (
    detect_format,
    read_classification,
    read_jsonl,
    read_labeled_lines,
    read_numeric_rows,
    read_table,
    read_word_vectors,
)
from rnnkit.errors import DataError

SHARED = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def write(tmp_path, name, content, mode="w"):
    path = tmp_path / name
    if mode == "wb":
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8", newline="")
    return path


def expect_error(fn, path, line=None, match=None):
    with pytest.raises(DataError) as info:
        fn(path)
    e = info.value
    assert e.path == str(path)
    if line is not None:
        assert e.line == line, str(e)
        assert str(e).startswith(f"{path}:{line}: ")
    if match:
        assert match in e.message, e.message
    return e


# ---------------------------------------------------------------------------------------------
# text + label
# ---------------------------------------------------------------------------------------------
def test_labeled_lines(tmp_path):
    p = write(tmp_path, "a.txt", "1 a good film\r\n\n0  bad ,  really\n")
    got = read_labeled_lines(p)
    assert [(e.label, e.text, e.line) for e in got] == [
        ("1", "a good film", 1),
        ("0", "bad ,  really", 3),
    ]


def test_labeled_lines_error_and_skip(tmp_path, caplog):
    p = write(tmp_path, "a.txt", "1 fine\nlonely\n0 ok\n")
    expect_error(read_labeled_lines, p, 2, "expected '<label> <text>'")
    with caplog.at_level(logging.WARNING):
        got = read_labeled_lines(p, skip_bad_lines=True)
    assert [e.line for e in got] == [1, 3]
    assert f"{p}:2:" in caplog.text
    only_bad = write(tmp_path, "b.txt", "x\ny\n")
    expect_error(lambda q: read_labeled_lines(q, skip_bad_lines=True), only_bad, 2, "no ")


def test_tsv_csv_jsonl(tmp_path):
    tsv = write(tmp_path, "d.tsv", 'sentence\tlabel\nhe said "hi\tpos\n\nno\tneg\n')
    got = read_table(tsv, text_column="sentence")
    assert [(e.text, e.label, e.line) for e in got] == [('he said "hi', "pos", 2), ("no", "neg", 4)]
    csv = write(tmp_path, "d.csv", 'label,text\npos,"a, quoted\nline"\nneg,plain\n')
    got = read_classification(csv)
    assert [(e.text, e.label, e.line) for e in got] == [
        ("a, quoted\nline", "pos", 2),
        ("plain", "neg", 4),
    ]
    noheader = write(tmp_path, "n.tsv", "pos\tgood\nneg\tbad\n")
    got = read_table(noheader, text_column="1", label_column="0")
    assert [(e.text, e.label) for e in got] == [("good", "pos"), ("bad", "neg")]
    jl = write(
        tmp_path, "d.jsonl", '{"text": "yes", "label": 1}\n\n{"text": "no", "label": true}\n'
    )
    got = read_jsonl(jl)
    assert [(e.text, e.label, e.line) for e in got] == [("yes", "1", 1), ("no", "true", 3)]
    assert [detect_format(x) for x in ("a.tsv", "a.CSV.gz", "a.jsonl", "stsa.binary.train")] == [
        "tsv",
        "csv",
        "jsonl",
        "lines",
    ]


def test_table_errors(tmp_path):
    p = write(tmp_path, "d.tsv", "text\tlabel\nok\tpos\nmissing\n")
    expect_error(read_table, p, 3, "expected 2 fields, found 1")
    p = write(tmp_path, "h.tsv", "sentence\tlabel\nok\tpos\n")
    expect_error(read_table, p, 1, "text column 'text'")
    p = write(tmp_path, "e.csv", "text,label\n,pos\n")
    expect_error(read_table, p, 2, "text field is empty")
    p = write(tmp_path, "q.csv", 'text,label\n"open quote,pos\n')
    expect_error(read_table, p, None, "CSV")
    p = write(tmp_path, "j.jsonl", '{"text": "a", "label": 1}\n[1, 2]\n')
    expect_error(read_jsonl, p, 2, "found a list")
    p = write(tmp_path, "k.jsonl", '{"text": "a", "label": 1}\n{"text": 3, "label": 1}\n')
    expect_error(read_jsonl, p, 2, "non-empty string under 'text'")
    p = write(tmp_path, "l.jsonl", '{"text": "a", "label": [1]}\n')
    expect_error(read_jsonl, p, 1, "under 'label'")
    p = write(tmp_path, "m.jsonl", "{not json\n")
    expect_error(read_jsonl, p, 1, "invalid JSON")


def test_missing_and_empty_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        read_labeled_lines(tmp_path / "nope.txt")
    p = write(tmp_path, "empty.txt", "")
    expect_error(read_labeled_lines, p, match="empty")
    p = write(tmp_path, "latin.txt", b"1 caf\xe9\n", mode="wb")
    expect_error(read_labeled_lines, p, match="not valid utf-8")


# ---------------------------------------------------------------------------------------------
# numbers
# ---------------------------------------------------------------------------------------------
def test_numeric_rows_plain_gzip_header(tmp_path):
    p = write(tmp_path, "n.csv", "1,2,3\n4,5,6\n")
    rows = read_numeric_rows(p)
    assert rows.features.tolist() == [[1, 2], [4, 5]] and rows.labels == ["3", "6"]
    g = tmp_path / "n.csv.gz"
    g.write_bytes(gzip.compress(b"a,b,y\n1,2,x\n3,4,z\n"))
    rows = read_numeric_rows(g, label_column="y")
    assert rows.features.dtype == np.float32
    assert rows.features.tolist() == [[1, 2], [3, 4]] and rows.labels == ["x", "z"]
    assert rows.lines == [2, 3]
    rows = read_numeric_rows(g, label_column="2")  # by index, header detected
    assert rows.labels == ["x", "z"]


def test_numeric_rows_errors(tmp_path):
    p = write(tmp_path, "n.csv", "1,2,3\n4,x,6\n")
    expect_error(read_numeric_rows, p, 2, "field 2: expected a finite number")
    p = write(tmp_path, "w.csv", "1,2,3\n4,5\n")
    expect_error(read_numeric_rows, p, 2, "expected 3 fields")
    p = write(tmp_path, "i.csv", "1,2,3\n4,inf,6\n")
    expect_error(read_numeric_rows, p, 2, "finite")
    p = write(tmp_path, "h.csv", "1,2,3\n")
    expect_error(lambda q: read_numeric_rows(q, label_column="label"), p, 1, "index")
    bad_gz = write(tmp_path, "b.csv.gz", b"\x1f\x8bnot gzip at all", mode="wb")
    expect_error(read_numeric_rows, bad_gz, match="gzip")


@pytest.mark.skipif(not (SHARED / "digits").is_dir(), reason="shared data not present")
def test_shared_digits():
    rows = read_numeric_rows(SHARED / "digits" / "digits.csv.gz")
    assert rows.features.shape == (1797, 64) and rows.features.max() == 16
    assert sorted(set(rows.labels)) == [str(k) for k in range(10)]


def test_word_vectors(tmp_path):
    p = write(tmp_path, "v.txt", "3 2\nthe 0.1 0.2\ncat 1 2\nnew york 3 4\n")
    vecs, dim = read_word_vectors(p)
    assert dim == 2 and vecs["cat"].tolist() == [1, 2] and "new york" in vecs
    vecs, _ = read_word_vectors(p, keep={"the"})
    assert list(vecs) == ["the"]
    glove = write(tmp_path, "g.txt", "a 1 2 3\nb 1 x 3\n")
    expect_error(read_word_vectors, glove, 2, "expected 3 numbers")
    short = write(tmp_path, "s.txt", "a 1 2 3\nb 1\n")
    expect_error(read_word_vectors, short, 2, "expected a word and 3 values")


# ---------------------------------------------------------------------------------------------
# CoNLL-U and CoNLL
# ---------------------------------------------------------------------------------------------
def conllu_line(wid, form, upos="X"):
    return "\t".join([wid, form, form.lower(), upos, "_", "_", "0", "root", "_", "_"])


def test_conllu_multiword_tokens_and_empty_nodes(tmp_path):
    lines = [
        "# sent_id = 1",
        "# text = I don't know.",
        conllu_line("1", "I", "PRON"),
        "\t".join(["2-3", "don't", "_", "_", "_", "_", "_", "_", "_", "_"]),
        conllu_line("2", "do", "AUX"),
        conllu_line("3", "n't", "PART"),
        conllu_line("4", "know", "VERB"),
        conllu_line("4.1", "knows", "VERB"),
        conllu_line("5", ".", "PUNCT"),
        "",
        conllu_line("0.1", "elided", "VERB"),
        conllu_line("1", "Yes", "INTJ"),
    ]  # no blank line at the end: the last sentence still counts
    p = write(tmp_path, "t.conllu", "\n".join(lines))
    got = read_conllu(p)
    assert got[0].tokens == ("I", "do", "n't", "know", ".")
    assert got[0].tags == ("PRON", "AUX", "PART", "VERB", "PUNCT")
    assert got[0].line == 3
    assert got[1].tokens == ("Yes",) and got[1].line == 12
    assert read_tagged(p)[0].tags == got[0].tags  # auto-detected by the extension
    assert read_conllu(p, column="lemma")[0].tags[1] == "do"


@pytest.mark.parametrize(
    "bad, line, message",
    [
        (conllu_line("3", "x"), 2, "expected word ID 2"),
        ("2\tx\tx\tX", 2, "expected 10 tab-separated"),
        (conllu_line("two", "x"), 2, "expected a word ID"),
        (conllu_line("3-4", "x"), 2, "multi-word token 3-4"),
        (conllu_line("2.1", "x"), 2, "empty node 2.1"),
        (conllu_line("2", "x", "_"), 2, "UPOS field is empty"),
        ("\t".join(["2-3", "x"] + ["_"] * 8), 3, "multi-word token ends at word 3"),
    ],
)
def test_conllu_errors(tmp_path, bad, line, message):
    p = write(
        tmp_path, "t.conllu", "\n".join([conllu_line("1", "a"), bad, "", conllu_line("1", "b")])
    )
    if "multi-word token ends" in message:
        p = write(
            tmp_path, "t.conllu", "\n".join([conllu_line("1", "a"), bad, conllu_line("2", "b"), ""])
        )
    expect_error(read_conllu, p, line, message)
    kept = read_conllu(p, skip_bad_lines=True) if "ends at" not in message else None
    if kept is not None:
        assert [s.tokens for s in kept] == [("b",)]  # the broken sentence is left out whole


def test_conll_wnut_quirks(tmp_path):
    content = "@paul\tO\nEmpire\tB-location\nState\tI-location\n\t\nwatched\u200bwas\tO\nDubbz\ufeff\tB-person\n\n\n-DOCSTART- O\n\nx y\n"
    p = write(tmp_path, "w.conll", content)
    got = read_conll(p)
    assert [s.tokens for s in got] == [
        ("@paul", "Empire", "State"),
        ("watchedwas", "Dubbz"),
        ("x",),
    ]
    assert got[0].tags == ("O", "B-location", "I-location") and got[2].tags == ("y",)
    assert [s.line for s in got] == [1, 5, 11]
    raw = read_conll(p, clean=False)
    assert raw[1].tokens == ("watched\u200bwas", "Dubbz\ufeff")


def test_conll_errors(tmp_path):
    p = write(tmp_path, "w.conll", "a\tO\nlonely\n\nb\tO\n")
    expect_error(read_conll, p, 2, "expected 'token<TAB>tag'")
    assert [s.tokens for s in read_conll(p, skip_bad_lines=True)] == [("b",)]
    p = write(tmp_path, "e.conll", "a\tO\n \tO\n")
    expect_error(read_conll, p, 2, "token field is empty")


@pytest.mark.skipif(not (SHARED / "ner_wnut17").is_dir(), reason="shared data not present")
def test_shared_wnut_counts():
    train = read_conll(SHARED / "ner_wnut17" / "wnut17train.conll")
    dev = read_conll(SHARED / "ner_wnut17" / "emerging.dev.conll")
    assert (len(train), sum(len(s.tokens) for s in train)) == (3394, 62730)
    assert (len(dev), sum(len(s.tokens) for s in dev)) == (1009, 15733)
    assert not any("\u200b" in t or "\ufeff" in t for s in dev for t in s.tokens)


# ---------------------------------------------------------------------------------------------
# fuzzing: whatever the bytes, a DataError naming the file (and the line), never a traceback
# ---------------------------------------------------------------------------------------------
READERS = {
    "lines": (lambda p: read_labeled_lines(p), "x.txt"),
    "tsv": (lambda p: read_table(p), "x.tsv"),
    "csv": (lambda p: read_table(p), "x.csv"),
    "jsonl": (lambda p: read_jsonl(p), "x.jsonl"),
    "numeric": (lambda p: read_numeric_rows(p), "x.csv"),
    "vectors": (lambda p: read_word_vectors(p), "x.vec"),
    "conllu": (lambda p: read_conllu(p), "x.conllu"),
    "conll": (lambda p: read_conll(p), "x.conll"),
}

# pieces that make near-valid input likelier than pure noise would
ALPHABET = st.sampled_from(
    [
        "\t",
        "\n",
        " ",
        ",",
        '"',
        "{",
        "}",
        ":",
        "1",
        "2",
        "-",
        ".",
        "_",
        "#",
        "a",
        "é",
        "\r",
        "\u200b",
        "\x00",
        "text",
        "label",
        '"text"',
        '"label"',
        "B-x",
        "I-x",
        "O",
        "nan",
    ]
)
CONTENT = st.lists(ALPHABET, max_size=60).map("".join)


@pytest.mark.parametrize("kind", sorted(READERS))
@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(content=CONTENT)
def test_fuzzed_input_gives_file_line_errors(tmp_path, kind, content):
    reader, name = READERS[kind]
    path = tmp_path / name
    path.write_text(content, encoding="utf-8", newline="")
    try:
        reader(path)
    except DataError as e:
        assert e.path == str(path)
        if content.strip(" \t\r\n"):  # a non-empty file: the error points at a line
            assert e.line is not None and e.line >= 1, str(e)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.binary(max_size=80))
def test_fuzzed_bytes_never_traceback(tmp_path, data):
    for reader, name in READERS.values():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            reader(path)
        except DataError as e:
            assert e.path == str(path)
